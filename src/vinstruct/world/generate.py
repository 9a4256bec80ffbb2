"""Generate a whole world directory: PNG images, COCO annotations, captions, world.json.

  DIR/images/<split>/<split>_<id>.png
  DIR/annotations/instances_<split>.json
  DIR/annotations/captions_<split>.json
  DIR/world.json

Every image's randomness comes from (seed, split, index), and files are written
in a fixed order with fixed key order, so the same arguments give byte-identical
files. The directory is built beside its destination and renamed into place, so
an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vinstruct.data.formats import write_json
from vinstruct.errors import VinstructError
from vinstruct.world.captions import CAPTIONS_PER_IMAGE, write_captions
from vinstruct.world.coco_export import CocoBuilder
from vinstruct.world.describe import ObjectView
from vinstruct.world.manifest import build_manifest
from vinstruct.world.render import render_scene
from vinstruct.world.scenes import Scene, allowed_combinations, sample_family, sample_scene
from vinstruct.world.spec import (SPLITS, TEST_HELD_OUT_FRACTION, TRAIN_FAMILY_SIZE, WorldSpec, split_sizes)

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024


def check_arguments(out: Path, images: int, size: int, overwrite: bool) -> None:
    if images < 1:
        raise VinstructError(f"--images must be at least 1 (got {images})")
    if not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise VinstructError(f"--size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} pixels (got {size})")
    if out.exists() and not out.is_dir():
        raise VinstructError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise VinstructError(f"{out}: directory exists and is not empty (pass --overwrite to replace it)")


def split_scenes(spec: WorldSpec, split: str, count: int) -> list[Scene]:
    """The scenes of one split, from (seed, split) only."""
    held_out = spec.held_out()
    combos = allowed_combinations(held_out)
    split_index = SPLITS.index(split)
    scenes: list[Scene] = []
    if split == "train":
        family = 0
        while len(scenes) < count:
            rng = np.random.default_rng([spec.seed, split_index, family])
            scenes += sample_family(rng, spec.image_size, combos, family, min(TRAIN_FAMILY_SIZE, count - len(scenes)))
            family += 1
        return scenes
    for index in range(count):
        rng = np.random.default_rng([spec.seed, split_index, index])
        must = None
        if split == "test" and held_out and rng.uniform() < TEST_HELD_OUT_FRACTION:
            must = [held_out[int(rng.integers(len(held_out)))]]
        scenes.append(sample_scene(rng, spec.image_size, combos, must_include=must))
    return scenes


def render_split(spec: WorldSpec, split: str, scenes: list[Scene], root: Path, first_image_id: int,
                 progress: bool) -> CocoBuilder:
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    split_index = SPLITS.index(split)
    builder = CocoBuilder()
    ann_id, caption_id = 1, 1
    bar = tqdm(scenes, desc=f"world {split}", unit="img", disable=not progress, leave=False)
    for index, scene in enumerate(bar):
        image_id = first_image_id + index
        file_name = f"{split}_{image_id:06d}.png"
        image, masks = render_scene(scene, np.random.default_rng([spec.seed, split_index, index, 1]))
        image.save(image_dir / file_name, format="PNG")
        views = [ObjectView.from_scene(o) for o in scene.objects]
        caption_rng = np.random.default_rng([spec.seed, split_index, index, 2])
        captions = write_captions(views, scene.size, scene.background.tone, caption_rng)
        assert len(captions) == CAPTIONS_PER_IMAGE
        ann_id, caption_id = builder.add(image_id, file_name, scene, masks, captions, ann_id, caption_id)
    return builder


def _readable(path: Path) -> None:
    """Temp directories are private (0700); a finished world should have ordinary permissions."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)


def generate_world(out: str | os.PathLike, images: int, seed: int = 0, size: int = 64, overwrite: bool = False,
                   progress: bool = True) -> dict:
    """Write a world of `images` images (split 80/10/10) to `out`; returns the manifest (world.json)."""
    from vinstruct.atomic import atomic_directory

    out = Path(out)
    check_arguments(out, images, size, overwrite)
    spec = WorldSpec(seed=seed, image_size=size)
    sizes = split_sizes(images)
    with atomic_directory(out) as tmp:
        _readable(tmp.path)
        next_id = 1
        for split in SPLITS:
            scenes = split_scenes(spec, split, sizes[split])
            builder = render_split(spec, split, scenes, tmp.path, next_id, progress)
            next_id += len(scenes)
            write_json(tmp.path / "annotations" / f"instances_{split}.json", builder.instances_json(), indent=None)
            write_json(tmp.path / "annotations" / f"captions_{split}.json", builder.captions_json(), indent=None)
        manifest = build_manifest(spec, sizes)
        write_json(tmp.path / "world.json", manifest)
    return manifest
