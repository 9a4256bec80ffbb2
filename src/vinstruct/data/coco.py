"""Reading a COCO-format image set (instances + captions), ours or the real COCO 2014/2017.

Layout:
  DIR/annotations/instances_<split>.json   images, categories, annotations (bbox [x, y, w, h] in pixels)
  DIR/annotations/captions_<split>.json    images, annotations with "caption"
  images in DIR/images/<split>/, DIR/<split>/ or DIR/<split>2017/ (first that exists), or --image-dir
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vinstruct.data.formats import read_json
from vinstruct.errors import VinstructError


@dataclass
class CocoObject:
    category: str
    bbox: list[float]  # [x, y, w, h] in pixels, as COCO stores it
    attributes: dict = field(default_factory=dict)  # any extra annotation fields (e.g. our colour/shape/size)


@dataclass
class CocoImage:
    id: int
    file_name: str
    width: int
    height: int
    captions: list[str]
    objects: list[CocoObject]
    path: Path


@dataclass
class CocoSet:
    root: Path
    split: str
    images: list[CocoImage]
    categories: list[str]

    def by_id(self) -> dict[int, CocoImage]:
        return {img.id: img for img in self.images}

    @classmethod
    def load(cls, root: str | os.PathLike, split: str, image_dir: str | os.PathLike | None = None,
             require_captions: bool = True) -> "CocoSet":
        root = Path(root)
        inst_path = root / "annotations" / f"instances_{split}.json"
        cap_path = root / "annotations" / f"captions_{split}.json"
        for path in (inst_path, cap_path):
            if not path.is_file():
                raise VinstructError(f"{path}: not found (expected a COCO-format set with annotations/ for split {split!r})")
        instances, captions = read_json(inst_path), read_json(cap_path)
        for path, data, keys in ((inst_path, instances, ("images", "annotations", "categories")),
                                 (cap_path, captions, ("images", "annotations"))):
            if not isinstance(data, dict):
                raise VinstructError(f"{path}: expected a COCO JSON object")
            for key in keys:
                if not isinstance(data.get(key), list):
                    raise VinstructError(f"{path}: missing list {key!r}")
        cat_names = {}
        for c in instances["categories"]:
            if "id" not in c or "name" not in c:
                raise VinstructError(f"{inst_path}: a category lacks 'id' or 'name'")
            cat_names[c["id"]] = c["name"]
        images_dir = Path(image_dir) if image_dir else _find_image_dir(root, split)
        meta = {}
        for img in instances["images"]:
            for key in ("id", "file_name", "width", "height"):
                if key not in img:
                    raise VinstructError(f"{inst_path}: image entry lacks {key!r}: {str(img)[:80]}")
            meta[img["id"]] = img
        caption_ids = {img["id"] for img in captions["images"] if "id" in img}
        unknown = caption_ids - set(meta)
        if unknown:
            raise VinstructError(
                f"{cap_path}: {len(unknown)} image id(s) not in {inst_path.name} (e.g. {sorted(unknown)[0]}); "
                "the two files must describe the same images"
            )
        caps: dict[int, list[str]] = {i: [] for i in meta}
        for ann in captions["annotations"]:
            if ann.get("image_id") not in caps or not isinstance(ann.get("caption"), str):
                raise VinstructError(f"{cap_path}: caption annotation with unknown image_id or no caption: {str(ann)[:80]}")
            caps[ann["image_id"]].append(ann["caption"].strip())
        objs: dict[int, list[CocoObject]] = {i: [] for i in meta}
        for ann in instances["annotations"]:
            if ann.get("image_id") not in objs or ann.get("category_id") not in cat_names or "bbox" not in ann:
                raise VinstructError(f"{inst_path}: annotation with unknown image_id/category_id or no bbox: {str(ann)[:80]}")
            extra = {k: v for k, v in ann.items() if k not in ("id", "image_id", "category_id", "bbox", "area",
                                                               "iscrowd", "segmentation")}
            objs[ann["image_id"]].append(CocoObject(cat_names[ann["category_id"]], list(ann["bbox"]), extra))
        if require_captions:
            missing = [i for i, c in caps.items() if not c]
            if missing:
                raise VinstructError(
                    f"{cap_path}: {len(missing)} image(s) have no caption (e.g. image id {missing[0]}); "
                    "every image needs at least one caption"
                )
        images = [
            CocoImage(i, m["file_name"], int(m["width"]), int(m["height"]), caps[i], objs[i], images_dir / m["file_name"])
            for i, m in sorted(meta.items())
        ]
        return cls(root, split, images, [cat_names[k] for k in sorted(cat_names)])


def _find_image_dir(root: Path, split: str) -> Path:
    for candidate in (root / "images" / split, root / split, root / f"{split}2017", root / f"{split}2014"):
        if candidate.is_dir():
            return candidate
    return root / "images" / split
