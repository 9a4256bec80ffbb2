"""The shapes world: COCO files that load with pycocotools, boxes that match pixels, determinism,
held-out combinations, captions and questions that tell the truth, clear errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from vinstruct.cli import main
from vinstruct.data.coco import CocoSet
from vinstruct.errors import VinstructError
from vinstruct.world import generate_world, load_manifest
from vinstruct.world.describe import ObjectView, horizontal, relation
from vinstruct.world.generate import split_scenes
from vinstruct.world.questions import scene_questions
from vinstruct.world.render import mask_box, render_scene
from vinstruct.world.spec import COLORS, SHAPES, SPLITS, WorldSpec


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    generate_world(out, images=40, seed=3, size=64, progress=False)
    return out


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_manifest(world):
    manifest = load_manifest(world)
    assert manifest["generator"] == "vinstruct-world" and manifest["seed"] == 3
    assert manifest["splits"] == {"train": 32, "val": 4, "test": 4}
    assert len(manifest["shapes"]) >= 6 and len(manifest["colors"]) >= 8
    for split in SPLITS:
        pngs = sorted((world / "images" / split).glob("*.png"))
        assert len(pngs) == manifest["splits"][split]


def test_annotations_load_with_pycocotools_and_cocoset(world):
    instances = COCO(str(world / "annotations" / "instances_train.json"))
    captions = COCO(str(world / "annotations" / "captions_train.json"))
    assert len(instances.getImgIds()) == 32
    names = {c["name"] for c in instances.loadCats(instances.getCatIds())}
    assert "red circle" in names and len(names) == len(SHAPES) * len(COLORS)
    for image_id in instances.getImgIds():
        assert len(captions.getAnnIds(imgIds=image_id)) == 5
        for ann in instances.loadAnns(instances.getAnnIds(imgIds=image_id)):
            category = instances.loadCats(ann["category_id"])[0]["name"]
            assert category == f"{ann['color']} {ann['shape']}"
            assert ann["size"] in ("small", "large")
            # COCO tools can rasterise our polygons
            assert instances.annToMask(ann).sum() > 0
    coco = CocoSet.load(world, "val")
    obj = coco.images[0].objects[0]
    assert set(obj.attributes) >= {"shape", "color", "size"}
    assert coco.images[0].path.is_file()


def test_boxes_contain_the_object_pixels(world):
    """Removing one object from a scene changes pixels only inside that object's box."""
    spec = WorldSpec(seed=3, image_size=64)
    scenes = split_scenes(spec, "val", 4)
    data = json.loads((world / "annotations" / "instances_val.json").read_text())
    boxes_by_image: dict[int, list] = {}
    for ann in data["annotations"]:
        boxes_by_image.setdefault(ann["image_id"], []).append(ann["bbox"])
    for scene, image in zip(scenes, data["images"]):
        full, masks = render_scene(scene, np.random.default_rng(1))
        stored = boxes_by_image[image["id"]]
        assert stored == [mask_box(m) for m in masks]
        for index, (x, y, w, h) in enumerate(stored):
            without, _ = render_scene(scene, np.random.default_rng(1), skip=index)
            changed = np.abs(np.asarray(full, int) - np.asarray(without, int)).sum(-1) > 0
            ys, xs = np.nonzero(changed)
            assert len(xs) > 0.3 * w * h  # the object is really drawn
            assert xs.min() >= x and xs.max() < x + w and ys.min() >= y and ys.max() < y + h


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path):
    generate_world(tmp_path / "a", images=12, seed=5, progress=False)
    generate_world(tmp_path / "b", images=12, seed=5, progress=False)
    generate_world(tmp_path / "c", images=12, seed=6, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_held_out_combinations_appear_only_in_test(tmp_path):
    root = tmp_path / "w"
    manifest = generate_world(root, images=600, seed=0, progress=False)
    held = {tuple(p) for p in manifest["held_out"]}
    assert len(held) >= 4

    def combos(split):
        return [(o.attributes["shape"], o.attributes["color"])
                for img in CocoSet.load(root, split).images for o in img.objects]

    assert not held & set(combos("train")) and not held & set(combos("val"))
    assert held & set(combos("test"))
    # Every colour keeps appearing with most shapes in train: no colour -> shape shortcut.
    train = set(combos("train"))
    for color in COLORS:
        assert sum((shape, color) in train for shape in SHAPES) >= len(SHAPES) - 1


def test_train_scenes_come_in_families_that_differ_in_one_way(world):
    images = json.loads((world / "annotations" / "instances_train.json").read_text())["images"]
    families: dict[int, list[str]] = {}
    for image in images:
        families.setdefault(image["family"], []).append(image["variant"])
    assert families[0][0] == "base" and families[0][1] == "shape"
    assert all(len(v) <= 4 for v in families.values())


def test_captions_name_shapes_and_the_first_two_name_every_object(world):
    for split in SPLITS:
        for image in CocoSet.load(world, split).images:
            assert len(image.captions) == 5
            for caption in image.captions:
                assert any(shape in caption for shape in SHAPES), caption
                assert caption[0].isupper() and caption.endswith(".")
            for caption in image.captions[:2]:
                for obj in image.objects:
                    assert obj.attributes["shape"] in caption and obj.attributes["color"] in caption


def test_positions_and_questions_tell_the_truth():
    left = ObjectView("circle", "red", "small", 10, 32, 14)
    right = ObjectView("star", "blue", "large", 54, 30, 24)
    assert horizontal(left, 64) == "left" and horizontal(right, 64) == "right"
    assert relation(left, right, 64) == "to the left of"
    questions = scene_questions([left, right], 64, np.random.default_rng(0))
    answers = {q.text: q.answer for q in questions}
    assert answers["How many shapes are there in the image?"] == "two"
    assert answers["What color is the star?"] == "blue"
    assert answers["What shape is the red object?"] == "circle"
    assert answers["Is the red circle on the left or on the right side of the image?"] == "left"
    assert answers["Is there a red circle in the image?"] == "yes"
    assert {q.category for q in questions} == {"count", "color", "shape", "position", "relation", "existence"}
    no = [q for q in questions if q.category == "existence" and q.answer == "no"][0]
    assert "red circle" not in no.text and "blue star" not in no.text


def test_cli_writes_a_world(tmp_path, capsys):
    assert main(["world", "--out", str(tmp_path / "w"), "--images", "10", "--seed", "1", "--quiet"]) == 0
    assert "held out of train" in capsys.readouterr().out
    assert load_manifest(tmp_path / "w")["splits"]["train"] == 8


def test_bad_input_gives_one_line_errors_and_overwrites_nothing(tmp_path, capsys):
    assert main(["world", "--out", str(tmp_path / "w"), "--images", "0"]) == 1
    assert "--images must be at least 1" in capsys.readouterr().err
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    assert main(["world", "--out", str(occupied), "--images", "5"]) == 1
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (occupied / "keep.txt").read_text() == "mine" and len(list(occupied.iterdir())) == 1
    assert main(["world", "--out", str(occupied), "--images", "5", "--overwrite", "--quiet"]) == 0
    assert not (occupied / "keep.txt").exists() and load_manifest(occupied)
    assert not list(tmp_path.glob(".*tmp*"))  # no temp directories left behind


def test_incomplete_world_is_named(world, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(world, broken)
    (broken / "annotations" / "captions_val.json").unlink()
    with pytest.raises(VinstructError, match="captions_val.json: not found"):
        load_manifest(broken)
    with pytest.raises(VinstructError, match="world.json: not found"):
        load_manifest(tmp_path)
