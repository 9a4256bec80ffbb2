"""Reading a COCO-format image set (instances + captions), ours or the real COCO 2014/2017.

Layout:
  DIR/annotations/instances_<split>.json   images, categories, annotations (bbox [x, y, w, h] in pixels)
  DIR/annotations/captions_<split>.json    images, annotations with "caption"
  images in DIR/images/<split>/, DIR/<split>/ or DIR/<split>2017/ (first that exists), or --image-dir

Every image entry and object annotation is checked (coco_checks.py) before it is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vinstruct.data.coco_checks import (BBOX_MISSING, IMAGE_SIZE, UNKNOWN_CATEGORY, UNKNOWN_IMAGE, InputProblem, as_id,
                                        check_bbox, image_size_problem)
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
    problems: list[InputProblem] = field(default_factory=list)  # entries left out, in file order

    def by_id(self) -> dict[int, CocoImage]:
        return {img.id: img for img in self.images}

    @classmethod
    def load(cls, root: str | os.PathLike, split: str, image_dir: str | os.PathLike | None = None,
             require_captions: bool = True, on_bad_annotation: str = "skip") -> "CocoSet":
        """Read and check a split. An image entry or object annotation that cannot be used (see
        coco_checks) is left out and listed in `problems` (on_bad_annotation "skip"), or stops the
        load with a one-line error naming the file and the entry ("fail")."""
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
        problems = _ProblemLog(inst_path, on_bad_annotation)
        cat_names = _categories(instances["categories"], inst_path)
        images_dir = Path(image_dir) if image_dir else _find_image_dir(root, split)
        listed, meta = _image_entries(instances["images"], inst_path, problems)
        caption_ids = {as_id(img.get("id")) for img in captions["images"] if isinstance(img, dict) and "id" in img}
        unknown = caption_ids - listed
        if unknown:
            raise VinstructError(
                f"{cap_path}: {len(unknown)} image id(s) not in {inst_path.name} (e.g. {sorted(unknown, key=str)[0]}); "
                "the two files must describe the same images"
            )
        caps: dict = {i: [] for i in meta}
        for ann in captions["annotations"]:
            image_id = as_id(ann.get("image_id")) if isinstance(ann, dict) else None
            if image_id not in listed or not isinstance(ann.get("caption"), str):
                raise VinstructError(f"{cap_path}: caption annotation with unknown image_id or no caption: {str(ann)[:80]}")
            if image_id in caps:  # not an image left out above
                caps[image_id].append(ann["caption"].strip())
        objs: dict = {i: [] for i in meta}
        for index, ann in enumerate(instances["annotations"]):
            if not isinstance(ann, dict):
                raise VinstructError(f"{inst_path}: annotations[{index}] is not an object: {str(ann)[:80]}")
            image_id = as_id(ann.get("image_id"))
            if image_id in listed and image_id not in meta:
                continue  # its image was left out (and counted) already
            obj = _object(ann, index, meta, cat_names, problems)
            if obj is not None:
                objs[image_id].append(obj)
        if require_captions:
            missing = [i for i, c in caps.items() if not c]
            if missing:
                raise VinstructError(
                    f"{cap_path}: {len(missing)} image(s) have no caption (e.g. image id {missing[0]}); "
                    "every image needs at least one caption"
                )
        images = [
            CocoImage(i, m["file_name"], int(m["width"]), int(m["height"]), caps[i], objs[i], images_dir / m["file_name"])
            for i, m in sorted(meta.items(), key=lambda item: _id_order(item[0]))
        ]
        return cls(root, split, images, [cat_names[k] for k in sorted(cat_names, key=_id_order)], problems.found)


class _ProblemLog:
    """Collects entries that cannot be used, or stops at the first one."""

    def __init__(self, path: Path, on_bad: str):
        if on_bad not in ("skip", "fail"):
            raise VinstructError(f"on_bad_annotation must be 'skip' or 'fail', got {on_bad!r}")
        self.path, self.on_bad, self.found = path, on_bad, []

    def add(self, problem: InputProblem) -> None:
        if self.on_bad == "fail":
            raise VinstructError(f"{self.path}: {problem.describe()}")
        self.found.append(problem)


def _id_order(value) -> tuple:
    """Ids sort numerically, and a set mixing int and str ids still sorts."""
    return (0, value, "") if isinstance(value, int) else (1, 0, str(value))


def _categories(entries: list, path: Path) -> dict:
    names = {}
    for c in entries:
        if not isinstance(c, dict) or as_id(c.get("id")) is None or not isinstance(c.get("name"), str):
            raise VinstructError(f"{path}: a category lacks an 'id' or a 'name': {str(c)[:80]}")
        names[c["id"]] = c["name"]
    return names


def _image_entries(entries: list, path: Path, problems: _ProblemLog) -> tuple[set, dict]:
    """(every listed image id, {id: entry} of the usable ones)."""
    listed, usable = set(), {}
    for img in entries:
        if not isinstance(img, dict):
            raise VinstructError(f"{path}: an image entry is not an object: {str(img)[:80]}")
        for key in ("id", "file_name", "width", "height"):
            if key not in img:
                raise VinstructError(f"{path}: image entry lacks {key!r}: {str(img)[:80]}")
        image_id = as_id(img["id"])
        if image_id is None or not isinstance(img["file_name"], str) or not img["file_name"]:
            raise VinstructError(f"{path}: image entry needs an int or str 'id' and a 'file_name': {str(img)[:80]}")
        listed.add(image_id)
        reason = image_size_problem(img)
        if reason:
            problems.add(InputProblem("image", image_id, image_id, IMAGE_SIZE, reason))
            continue
        usable[image_id] = img
    return listed, usable


def _object(ann: dict, index: int, meta: dict, cat_names: dict, problems: _ProblemLog) -> CocoObject | None:
    """The annotation as a CocoObject, or None (recorded in problems) when it cannot be used."""
    ann_id = as_id(ann.get("id"))
    ann_id = f"#{index}" if ann_id is None else ann_id
    image_id = as_id(ann.get("image_id"))

    def refuse(reason: str, detail: str) -> None:
        problems.add(InputProblem("annotation", ann_id, image_id, reason, detail))

    if image_id not in meta:
        return refuse(UNKNOWN_IMAGE, f"image_id {ann.get('image_id')!r} is not in the images list")
    category = as_id(ann.get("category_id"))
    if category not in cat_names:
        return refuse(UNKNOWN_CATEGORY, f"category_id {ann.get('category_id')!r} is not in the categories list")
    if "bbox" not in ann:
        return refuse(BBOX_MISSING, "no bbox")
    image = meta[image_id]
    box, problem = check_bbox(ann["bbox"], image["width"], image["height"])
    if problem:
        return refuse(*problem)
    extra = {k: v for k, v in ann.items() if k not in ("id", "image_id", "category_id", "bbox", "area",
                                                       "iscrowd", "segmentation")}
    return CocoObject(cat_names[category], box, extra)


def _find_image_dir(root: Path, split: str) -> Path:
    for candidate in (root / "images" / split, root / split, root / f"{split}2017", root / f"{split}2014"):
        if candidate.is_dir():
            return candidate
    return root / "images" / split
