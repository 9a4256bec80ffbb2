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
    from vinstruct.model.io import build_model, save_model

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
