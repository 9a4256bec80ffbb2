"""Vision features computed once per image and reused every epoch.

Valid only while the vision tower is frozen and images are not augmented (both
stages of LLaVA keep the tower frozen; we never augment), so the features of an
image never change during a run. Images are encoded in a fixed order and fixed
chunks, so the features are bit-identical between a run and its resumption.
Images that cannot be decoded are found here, before training, and handled by
the dataset's bad-sample policy.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from vinstruct.data.dataset import LlavaDataset
from vinstruct.data.images import open_image
from vinstruct.errors import BadSampleError, VinstructError


class VisionFeatureCache:
    def __init__(self):
        self.features: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.features)

    def lookup(self, paths) -> torch.Tensor:
        return torch.stack([self.features[str(p)] for p in paths])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.features.values())

    @torch.no_grad()
    def build(self, model, dataset: LlavaDataset, chunk_size: int = 32, progress: bool = True) -> "VisionFeatureCache":
        """Encode every image the dataset uses; drop (or fail on) samples whose image cannot be read."""
        paths = sorted({str(p) for item in dataset.items for p in item["images"]})
        unreadable: dict[str, str] = {}
        bar = tqdm(total=len(paths), desc="caching vision features", unit="img", disable=not progress)
        for start in range(0, len(paths), chunk_size):
            chunk, images = [], []
            for path in paths[start:start + chunk_size]:
                try:
                    images.append(open_image(path))
                    chunk.append(path)
                except VinstructError as err:
                    unreadable[path] = str(err)
            if images:
                pixels = dataset.image_processor(images)
                features = model.vision_features(pixels.to(model.device)).float().cpu()
                self.features.update(zip(chunk, features))
            bar.update(len(paths[start:start + chunk_size]))
        bar.close()
        if unreadable:
            self._drop_samples(dataset, unreadable)
        return self

    @staticmethod
    def _drop_samples(dataset: LlavaDataset, unreadable: dict[str, str]) -> None:
        kept = []
        for item in dataset.items:
            bad = next((str(p) for p in item["images"] if str(p) in unreadable), None)
            if bad is None:
                kept.append(item)
                continue
            error = BadSampleError(item["id"], f"undecodable image: {unreadable[bad]}")
            if dataset.on_bad_sample == "fail":
                raise error
            dataset.skipped.add(error.sample_id, error.reason)
        dataset.items = kept
        if not kept:
            raise VinstructError(f"{dataset.source}: no usable training samples ({dataset.skipped.summary()})")
