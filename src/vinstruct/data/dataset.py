"""Training data: LLaVA JSON -> tokenized samples with images -> padded batches.

Samples are validated and tokenized once, up front, so that bad samples are
found before training starts and lengths are known for length-grouped batching.
Images are decoded lazily in __getitem__.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vinstruct.data.encoding import IGNORE_INDEX, EncodingSpec, encode_conversation, encode_independent_turns
from vinstruct.data.formats import load_llava_json, sample_images
from vinstruct.errors import BadSampleError, VinstructError

log = logging.getLogger(__name__)
ON_BAD_SAMPLE = ("skip", "fail")


@dataclass
class SkipReport:
    """Samples left out, by reason, with a few example ids."""

    counts: Counter = field(default_factory=Counter)
    examples: list[tuple[str, str]] = field(default_factory=list)

    def add(self, sample_id, reason: str) -> None:
        kind = reason.split(":")[0]
        self.counts[kind] += 1
        if len(self.examples) < 10:
            self.examples.append((str(sample_id), reason))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        parts = ", ".join(f"{n} x {kind}" for kind, n in self.counts.most_common())
        example = f" (e.g. sample {self.examples[0][0]!r}: {self.examples[0][1]})" if self.examples else ""
        return f"skipped {self.total} sample(s): {parts}{example}"


class LlavaDataset(Dataset):
    """LLaVA instruction data, tokenized with a model's EncodingSpec."""

    def __init__(
        self,
        data: str | os.PathLike | list[dict],
        spec: EncodingSpec,
        image_processor,
        image_dir: str | os.PathLike | None = None,
        on_bad_sample: str = "skip",
    ):
        if on_bad_sample not in ON_BAD_SAMPLE:
            raise VinstructError(f"on_bad_sample must be one of {ON_BAD_SAMPLE}, got {on_bad_sample!r}")
        self.spec = spec
        self.image_processor = image_processor
        self.on_bad_sample = on_bad_sample
        self.source = str(data) if not isinstance(data, list) else "<memory>"
        samples = load_llava_json(data) if not isinstance(data, list) else data
        if image_dir is None and not isinstance(data, list):
            image_dir = Path(data).parent
        self.image_dir = Path(image_dir) if image_dir is not None else Path(".")
        self.skipped = SkipReport()
        self.items: list[dict] = []
        for sample in samples:
            item = self._prepare(sample)
            if item is not None:
                self.items.append(item)
        if self.skipped.total:
            log.warning("%s: %s", self.source, self.skipped.summary())

    def _fail_or_skip(self, err: BadSampleError) -> None:
        if self.on_bad_sample == "fail":
            raise err
        self.skipped.add(err.sample_id, err.reason)

    def _prepare(self, sample: dict) -> dict | None:
        sample_id = sample.get("id")
        try:
            try:
                images = [self.image_dir / p for p in sample_images(sample)]
            except VinstructError as err:
                raise BadSampleError(sample_id, str(err).split(": ", 1)[-1]) from None
            for path in images:
                if not path.is_file():
                    raise BadSampleError(sample_id, f"missing image: image file not found: {path}")
            if sample.get("independent_turns"):
                encoded = encode_independent_turns(self.spec, sample.get("conversations"), len(images), sample_id)
            else:
                encoded = encode_conversation(self.spec, sample.get("conversations"), len(images), sample_id)
        except BadSampleError as err:
            self._fail_or_skip(err)
            return None
        item = {"id": sample_id, "input_ids": encoded.input_ids, "labels": encoded.labels, "images": images}
        if encoded.segments is not None:
            item["segments"], item["positions"] = encoded.segments, encoded.positions
        return item

    def __len__(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> list[int]:
        return [len(item["input_ids"]) for item in self.items]

    @property
    def has_image(self) -> list[bool]:
        return [bool(item["images"]) for item in self.items]

    def __getitem__(self, index: int) -> dict | None:
        item = self.items[index]
        pixel_values = None
        if item["images"]:
            try:
                pixel_values = self.image_processor.load(item["images"], sample_id=item["id"])
            except VinstructError as err:
                bad = BadSampleError(item["id"], f"undecodable image: {err}")
                if self.on_bad_sample == "fail":
                    raise bad from None
                self.skipped.add(bad.sample_id, bad.reason)
                log.warning("%s", bad)
                return None
        return tensors_of(item, pixel_values)


def tensors_of(item: dict, pixel_values) -> dict:
    """A prepared item as the collator takes it."""
    out = {
        "id": item["id"],
        "input_ids": torch.tensor(item["input_ids"], dtype=torch.long),
        "labels": torch.tensor(item["labels"], dtype=torch.long),
        "pixel_values": pixel_values,
    }
    if "segments" in item:
        out["segments"] = torch.tensor(item["segments"], dtype=torch.long)
        out["positions"] = torch.tensor(item["positions"], dtype=torch.long)
    return out


class Collator:
    """Pads a list of samples into a batch; drops samples that failed to load (None)."""

    def __init__(self, pad_token_id: int, padding_side: str = "right"):
        if padding_side not in ("left", "right"):
            raise VinstructError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side

    def __call__(self, batch: list[dict | None]) -> dict:
        batch = [b for b in batch if b is not None]
        if not batch:
            return {"input_ids": None, "ids": []}
        width = max(len(b["input_ids"]) for b in batch)
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, b in enumerate(batch):
            n = len(b["input_ids"])
            span = slice(width - n, width) if self.padding_side == "left" else slice(0, n)
            input_ids[row, span] = b["input_ids"]
            labels[row, span] = b["labels"]
            attention_mask[row, span] = 1
        images = [b["pixel_values"] for b in batch if b["pixel_values"] is not None]
        out = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "pixel_values": torch.cat(images) if images else None,
            "ids": [b["id"] for b in batch],
        }
        if any("segments" in b for b in batch):
            # Samples with independent turns: per-token exchange ids and positions (see
            # encode_independent_turns); ordinary samples are one segment (0) at positions 0, 1, ...
            segments = torch.full((len(batch), width), -1, dtype=torch.long)
            positions = torch.zeros((len(batch), width), dtype=torch.long)
            for row, b in enumerate(batch):
                n = len(b["input_ids"])
                span = slice(width - n, width) if self.padding_side == "left" else slice(0, n)
                segments[row, span] = b["segments"] if "segments" in b else 0
                positions[row, span] = b["positions"] if "positions" in b else torch.arange(n)
            out["turn_segments"], out["position_ids"] = segments, positions
        return out
