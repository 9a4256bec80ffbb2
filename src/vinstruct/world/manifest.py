"""world.json: what a world directory holds, and checking that a directory is a complete world."""

from __future__ import annotations

import os
from pathlib import Path

from vinstruct.data.formats import read_json
from vinstruct.errors import VinstructError
from vinstruct.world.captions import CAPTIONS_PER_IMAGE
from vinstruct.world.spec import (COLORS, GENERATOR, MAX_OBJECTS, MIN_OBJECTS, POSITION_STEP, SHAPES, SIZES, SPLITS,
                                  TEST_HELD_OUT_FRACTION, TRAIN_FAMILY_SIZE, VERSION, WorldSpec)

MANIFEST_NAME = "world.json"
REQUIRED_KEYS = ("generator", "version", "seed", "image_size", "shapes", "colors", "sizes", "held_out", "splits")


def build_manifest(spec: WorldSpec, split_sizes: dict[str, int]) -> dict:
    return {
        "generator": GENERATOR,
        "version": VERSION,
        "seed": spec.seed,
        "image_size": spec.image_size,
        "shapes": list(SHAPES),
        "colors": list(COLORS),
        "color_rgb": {name: list(rgb) for name, rgb in COLORS.items()},
        "sizes": list(SIZES),
        "held_out": [list(pair) for pair in spec.held_out()],
        "splits": dict(split_sizes),
        "objects_per_image": [MIN_OBJECTS, MAX_OBJECTS],
        "position_step_px": POSITION_STEP * spec.image_size,
        "captions_per_image": CAPTIONS_PER_IMAGE,
        "complete_captions": [0, 1],
        "category_name": "<color> <shape>",
        "annotation_fields": ["shape", "color", "size"],
        "train_family_size": TRAIN_FAMILY_SIZE,
        "test_held_out_fraction": TEST_HELD_OUT_FRACTION,
    }


def split_files(root: Path, split: str) -> list[Path]:
    return [root / "annotations" / f"instances_{split}.json", root / "annotations" / f"captions_{split}.json"]


def load_manifest(directory: str | os.PathLike, check_files: bool = True) -> dict:
    """Read DIR/world.json and (by default) check that every split's files are there.

    Raises VinstructError naming the first missing or malformed file.
    """
    root = Path(directory)
    if not root.is_dir():
        raise VinstructError(f"{root}: not a directory (expected a world made by `vinstruct world`)")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise VinstructError(f"{path}: not found (expected a world directory made by `vinstruct world`)")
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        raise VinstructError(f"{path}: expected a JSON object")
    for key in REQUIRED_KEYS:
        if key not in manifest:
            raise VinstructError(f"{path}: missing field {key!r}")
    if manifest["generator"] != GENERATOR:
        raise VinstructError(f"{path}: generator is {manifest['generator']!r}, expected {GENERATOR!r}")
    if not isinstance(manifest["splits"], dict) or set(manifest["splits"]) != set(SPLITS):
        raise VinstructError(f"{path}: field 'splits' must map {', '.join(SPLITS)} to image counts")
    if check_files:
        for split in SPLITS:
            for needed in split_files(root, split):
                if not needed.is_file():
                    raise VinstructError(f"{needed}: not found (world directory {root} is incomplete)")
            image_dir = root / "images" / split
            if manifest["splits"][split] and not image_dir.is_dir():
                raise VinstructError(f"{image_dir}: not found (world directory {root} is incomplete)")
    return manifest
