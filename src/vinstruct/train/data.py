"""Training data for a stage: the dataset, its bad-sample policy, and micro-batches for the loop.

Over-long samples are measured before any cut: `long_samples: truncate` cuts them to
max_length (never through an image's slots, and only while some supervised token
survives), `skip` leaves them out. Samples left with no supervised token are bad
samples too: a run never trains on batches whose labels are all -100 without saying so.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from vinstruct.data.dataset import Collator, LlavaDataset
from vinstruct.data.encoding import IGNORE_INDEX, Encoded, EncodingSpec, truncate
from vinstruct.errors import BadSampleError, VinstructError

log = logging.getLogger(__name__)
UNMEASURED = 1 << 30  # a max_length no sample reaches: lengths are measured before any cut


def _reject(dataset: LlavaDataset, sample_id, reason: str) -> None:
    error = BadSampleError(sample_id, reason)
    if dataset.on_bad_sample == "fail":
        raise error
    dataset.skipped.add(sample_id, reason)


def apply_length_policy(dataset: LlavaDataset, spec: EncodingSpec, policy: str) -> None:
    """Cut or drop samples longer than spec.max_length; drop samples without supervised tokens."""
    kept = []
    for item in dataset.items:
        n = len(item["input_ids"])
        if n > spec.max_length:
            if policy == "skip":
                _reject(dataset, item["id"], f"too long: {n} tokens, max_length is {spec.max_length}")
                continue
            try:
                cut = truncate(Encoded(item["input_ids"], item["labels"], len(item["images"])), spec, item["id"])
            except BadSampleError as err:
                _reject(dataset, err.sample_id, err.reason)
                continue
            item = dict(item, input_ids=cut.input_ids, labels=cut.labels)
        if all(label == IGNORE_INDEX for label in item["labels"]):
            what = f"after truncation to {spec.max_length} tokens" if n > spec.max_length else "in the sample"
            _reject(dataset, item["id"], f"no supervised tokens: no assistant token {what}")
            continue
        kept.append(item)
    dataset.items = kept


def build_dataset(path: str, model, template: str, max_length: int | None, image_dir: str | None,
                  on_bad_sample: str, long_samples: str) -> LlavaDataset:
    """Tokenize a LLaVA JSON file for `model` with `template`; bad samples skipped or raised."""
    if not Path(path).is_file():
        raise VinstructError(f"{path}: data file not found")
    limit = max_length or model.config.model_max_length
    dataset = LlavaDataset(path, EncodingSpec.for_model(model, template=template, max_length=UNMEASURED),
                           model.image_processor, image_dir, on_bad_sample)
    before = dataset.skipped.total
    apply_length_policy(dataset, EncodingSpec.for_model(model, template=template, max_length=limit), long_samples)
    if dataset.skipped.total > before:
        log.warning("%s: %s", path, dataset.skipped.summary())
    if len(dataset) == 0:
        detail = f" ({dataset.skipped.summary()})" if dataset.skipped.total else ""
        raise VinstructError(f"{path}: no usable training samples{detail}")
    return dataset


class _CachedFeatureView(Dataset):
    """The dataset's samples with cached vision features in place of decoded images."""

    def __init__(self, dataset: LlavaDataset, cache):
        self.dataset, self.cache = dataset, cache

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        from vinstruct.data.dataset import tensors_of

        item = self.dataset.items[index]
        return tensors_of(item, self.cache.lookup(item["images"]) if item["images"] else None)


class BatchSource:
    """Loads the micro-batches a process needs, in order, from a list of index lists."""

    def __init__(self, dataset: LlavaDataset, pad_token_id: int, cache=None, num_workers: int = 0):
        self.dataset = dataset
        self.view = _CachedFeatureView(dataset, cache) if cache is not None else dataset
        self.cached = cache is not None
        self.collator = Collator(pad_token_id)
        self.num_workers = num_workers

    def _finish(self, batch: dict) -> dict:
        if self.cached:
            batch["vision_features"] = batch.pop("pixel_values", None)
        return batch

    def iterate(self, index_lists: list[list[int]]):
        loader = DataLoader(self.view, batch_sampler=index_lists, collate_fn=self.collator,
                            num_workers=self.num_workers)
        for batch in loader:
            yield self._finish(batch)


def count_targets(batch: dict) -> int:
    if batch.get("input_ids") is None:
        return 0
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
