"""A world split as the bootstrap trainers need it: pixels, captions, objects, families."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from vinstruct.data.coco import CocoSet
from vinstruct.data.formats import read_json
from vinstruct.data.images import open_image
from vinstruct.errors import VinstructError
from vinstruct.world.describe import ObjectView


@dataclass
class WorldSplit:
    split: str
    image_size: int
    paths: list[Path]
    captions: list[list[str]]
    objects: list[list[ObjectView]]
    families: list[int]  # -1 where the image belongs to no family (val, test)

    def __len__(self) -> int:
        return len(self.paths)


def load_split(world_dir: str | os.PathLike, split: str, image_size: int) -> WorldSplit:
    """Read one split of a world directory (annotations only; pixels come from `pixel_values`)."""
    root = Path(world_dir)
    coco = CocoSet.load(root, split)
    raw_images = read_json(root / "annotations" / f"instances_{split}.json")["images"]
    family_of = {img["id"]: int(img.get("family", -1)) for img in raw_images}
    objects = []
    for image in coco.images:
        views = []
        for obj in image.objects:
            missing = [k for k in ("shape", "color", "size") if k not in obj.attributes]
            if missing:
                raise VinstructError(
                    f"{root / 'annotations' / f'instances_{split}.json'}: annotation of image {image.id} lacks "
                    f"{missing[0]!r} (expected a world made by `vinstruct world`)"
                )
            x, y, w, h = obj.bbox
            a = obj.attributes
            views.append(ObjectView(a["shape"], a["color"], a["size"], x + w / 2, y + h / 2, max(w, h)))
        objects.append(views)
    return WorldSplit(
        split=split,
        image_size=image_size,
        paths=[img.path for img in coco.images],
        captions=[img.captions for img in coco.images],
        objects=objects,
        families=[family_of[img.id] for img in coco.images],
    )


def pixel_values(split: WorldSplit, image_processor, progress: bool = True, batch: int = 256) -> torch.Tensor:
    """All images of the split through the vision encoder's own processor: [N, 3, H, W]."""
    chunks = []
    starts = range(0, len(split.paths), batch)
    for start in tqdm(starts, desc=f"load {split.split} images", disable=not progress, leave=False):
        images = [open_image(p) for p in split.paths[start:start + batch]]
        chunks.append(image_processor(images))
    return torch.cat(chunks) if chunks else torch.zeros(0, 3, split.image_size, split.image_size)
