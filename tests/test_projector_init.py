"""Projector warm start: each region token of the world's images is fitted to the LM's words for what it holds."""

import torch

from vinstruct.bootstrap.projector_init import BACKGROUND_WORD, cell_targets, warm_start_projector
from vinstruct.data.coco import CocoSet


def test_cells_name_the_object_covering_them_and_empty_cells_the_background(tiny_model, tiny_world):
    image = next(i for i in CocoSet.load(tiny_world, "test").images if i.objects)
    words = {}
    targets = cell_targets(tiny_model, image, 4, words)
    assert targets.shape == (16, tiny_model.llm.config.hidden_size)
    background = words[BACKGROUND_WORD]
    named = [t for t in targets if not torch.equal(t, background)]
    assert 0 < len(named) < 16  # some cells hold an object, some are empty
    obj = image.objects[0]
    assert obj.attributes["color"] in words and obj.attributes["shape"] in words


def test_warm_start_fits_the_projector_to_the_targets(tiny_model, tiny_world):
    said = []
    figures = warm_start_projector(tiny_model, tiny_world, "test", steps=300, lr=3e-3, say=said.append)
    assert figures["tokens"] == figures["images"] * tiny_model.num_image_tokens
    assert figures["cosine"] > 0.5
    assert "projector warm start" in said[0]
    assert not any(p.requires_grad for p in tiny_model.projector.parameters())
