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


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A shapes world written by `vinstruct.world`: 120 images split 96/12/12 (COCO layout + world.json)."""
    from vinstruct.world import generate_world

    root = tmp_path_factory.mktemp("world")
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
    """A tiny shapes world as a COCO-format set written by `vinstruct.world`: 10 images split 8/1/1,
    '<color> <shape>' categories, 5 captions each."""
    from vinstruct.world import generate_world

    root = tmp_path_factory.mktemp("coco")
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
