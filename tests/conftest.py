"""Shared fixtures: tiny random base models and a tiny LLaVA model built on the fly."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_parts(tmp_path_factory):
    """(vision_dir, llm_dir): a random CLIPVisionModel and a random LlamaForCausalLM + BPE tokenizer."""
    from vinstruct.model.random_parts import make_random_parts

    return make_random_parts(tmp_path_factory.mktemp("parts"), seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_parts, tmp_path_factory):
    """A saved vinstruct checkpoint directory (mlp2x_gelu projector, vicuna_v1 template)."""
    from vinstruct.model.build import build_model
    from vinstruct.model.io import save_model

    vision_dir, llm_dir = tiny_parts
    torch.manual_seed(0)
    model = build_model(str(vision_dir), str(llm_dir))
    return save_model(model, tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture
def tiny_model(tiny_checkpoint):
    """A fresh copy of the tiny model for each test (tests may train or modify it)."""
    from vinstruct.model.io import load_model

    return load_model(tiny_checkpoint)


@pytest.fixture(scope="session")
def color_images(tmp_path_factory):
    """A few small PNGs of plain colours and odd sizes, keyed by name."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    specs = {"red.png": ((255, 0, 0), (40, 30)), "blue.png": ((0, 0, 255), (24, 48)), "green.png": ((0, 200, 0), (32, 32))}
    for name, (color, size) in specs.items():
        Image.new("RGB", size, color).save(root / name)
    return root


# ---- a tiny shapes world in the COCO layout the world generator writes -----------------------------
TINY_SHAPES = ("circle", "square", "triangle")
TINY_COLORS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (40, 60, 230), "yellow": (230, 210, 20)}
TINY_HELD_OUT = [["triangle", "yellow"], ["circle", "blue"]]


def _draw(draw, shape, box, fill):
    x1, y1, x2, y2 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=fill)


def write_tiny_world(root, split="test", n_images=12, seed=0):
    """Write DIR/world.json, DIR/images/<split>/*.png and DIR/annotations/{instances,captions}_<split>.json.

    Objects sit in a 3x3 grid of 64x64 images; every scene names each object in one caption.
    """
    import json
    from pathlib import Path

    from PIL import Image, ImageDraw

    root = Path(root)
    rng = random.Random(seed)
    categories = [f"{c} {s}" for s in TINY_SHAPES for c in TINY_COLORS]
    cat_ids = {name: i + 1 for i, name in enumerate(categories)}
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations, captions = [], [], []
    for image_id in range(1, n_images + 1):
        img = Image.new("RGB", (64, 64), (245, 245, 245))
        draw = ImageDraw.Draw(img)
        cells = rng.sample(range(9), rng.randint(1, 3))
        names = []
        for cell in cells:
            shape, color = rng.choice(TINY_SHAPES), rng.choice(list(TINY_COLORS))
            x, y = (cell % 3) * 21 + 2, (cell // 3) * 21 + 2
            _draw(draw, shape, (x, y, x + 17, y + 17), TINY_COLORS[color])
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat_ids[f"{color} {shape}"],
                                "bbox": [x, y, 17, 17], "area": 289, "iscrowd": 0,
                                "shape": shape, "color": color, "size": "small"})
            names.append(f"a {color} {shape}")
        file_name = f"{split}_{image_id:05d}.png"
        img.save(root / "images" / split / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": 64, "height": 64})
        captions.append({"id": len(captions) + 1, "image_id": image_id, "caption": "A picture with " + " and ".join(names) + "."})
        captions.append({"id": len(captions) + 1, "image_id": image_id, "caption": f"{len(names)} shapes on a plain background."})
    cats = [{"id": i, "name": n, "supercategory": "shape"} for n, i in cat_ids.items()]
    (root / "annotations" / f"instances_{split}.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    (root / "annotations" / f"captions_{split}.json").write_text(json.dumps({"images": images, "annotations": captions}))
    (root / "world.json").write_text(json.dumps({"shapes": list(TINY_SHAPES), "colors": list(TINY_COLORS),
                                                 "sizes": ["small"], "held_out": TINY_HELD_OUT}))
    return root


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A shapes world with a 12-image 'test' split (COCO layout + world.json).

    Written by `vinstruct.world` (120 images split 96/12/12) where it is installed, else by
    `write_tiny_world`, which follows the same layout and fields.
    """
    root = tmp_path_factory.mktemp("world")
    try:
        from vinstruct.world import generate_world
    except ImportError:
        return write_tiny_world(root, "test", n_images=12, seed=0)
    generate_world(root / "world", images=120, seed=0, size=64, progress=False)
    return root / "world"


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (tiny models decode faster that way on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_llava_data(tmp_path_factory):
    """A tiny LLaVA data set: coloured-shape PNGs, `pretrain.json` (caption pairs), `finetune.json`
    (conversations, some text-only), `val.json` and `val_pretrain.json`, all in one directory."""
    import json

    from PIL import Image, ImageDraw

    root = tmp_path_factory.mktemp("llava_data")
    colors = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
    shapes = ("circle", "square")
    pretrain, finetune = [], []
    for ci, (color, rgb) in enumerate(colors.items()):
        for si, shape in enumerate(shapes):
            name = f"{color}_{shape}.png"
            img = Image.new("RGB", (32, 32), (255, 255, 255))
            draw = ImageDraw.Draw(img)
            box = (6 + ci, 6 + si, 26, 26)
            (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=rgb)
            img.save(root / name)
            n = len(pretrain)
            pretrain.append({"id": f"p{n}", "image": name, "conversations": [
                {"from": "human", "value": "<image>\nDescribe the image briefly."},
                {"from": "gpt", "value": f"a {color} {shape}."}]})
            finetune.append({"id": f"f{n}", "image": name, "conversations": [
                {"from": "human", "value": "<image>\nWhat color is the shape?"},
                {"from": "gpt", "value": f"{color}."},
                {"from": "human", "value": "What shape is it?"},
                {"from": "gpt", "value": f"a {shape}."}]})
    for i, text in enumerate(("how many objects are there", "what is a circle", "describe a square")):
        finetune.append({"id": f"t{i}", "conversations": [{"from": "human", "value": text + "?"},
                                                          {"from": "gpt", "value": "there is one object."}]})
    (root / "pretrain.json").write_text(json.dumps(pretrain))
    (root / "finetune.json").write_text(json.dumps(finetune))
    (root / "val.json").write_text(json.dumps(finetune[:3]))
    (root / "val_pretrain.json").write_text(json.dumps(pretrain[:3]))
    return root


@pytest.fixture
def train_config(tiny_parts, tiny_llava_data, tmp_path):
    """make(**options) -> a small, fast training config (dict) on the tiny parts and data."""
    vision_dir, llm_dir = tiny_parts

    def make(stage="finetune", **options):
        config = {
            "stage": stage, "vision": str(vision_dir), "llm": str(llm_dir),
            "data": str(tiny_llava_data / ("pretrain.json" if stage == "pretrain" else "finetune.json")),
            "output_dir": str(tmp_path / f"run-{stage}"), "per_device_batch_size": 4, "epochs": 2,
            "lr": 2e-3 if stage == "pretrain" else 1e-3, "progress": False, "peak_flops": 1e11,
            "loss_curve": False, "seed": 0,
        }
        config.update(options)
        return config

    return make


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory):
    """A tiny shapes world as a COCO-format set: 8 train images, '<color> <shape>' categories, 5 captions each.

    Written by `vinstruct.world` (10 images split 8/1/1), or, where that is not installed, by a
    stand-in that follows the same layout and fields.
    """
    root = tmp_path_factory.mktemp("coco")
    try:
        from vinstruct.world import generate_world
    except ImportError:
        from coco_shapes import write_tiny_coco

        return write_tiny_coco(root, images=8, seed=0)
    generate_world(root / "world", images=10, seed=0, size=64, progress=False)
    return root / "world"


# ---- the packaged pretrained chat LM ----------------------------------------------------------------
@pytest.fixture(scope="session")
def packaged_lm_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct written by `vinstruct base-lm` (from the pip package `make setup` installs):
    a standard transformers causal-LM directory with a ChatML chat template, 542 MB, about 40 s to
    write on 2 cores, so once per session. Tests that use it are slow; they must not modify it."""
    from vinstruct.cli import main

    out = tmp_path_factory.mktemp("packaged_lm") / "smollm2"
    assert main(["base-lm", "--out", str(out)]) == 0
    return out
