"""Several LLM tokens per vision feature (`projector_tokens`): sizes, order, training, saving, refusals."""

import pytest
import torch

from vinstruct.bootstrap.projector_init import BACKGROUND_WORD, cell_targets
from vinstruct.data.coco import CocoSet
from vinstruct.errors import VinstructError
from vinstruct.model.build import build_model
from vinstruct.model.io import load_model, save_model
from vinstruct.model.projector import build_projector


@pytest.fixture
def two_token_model(tiny_parts):
    vision_dir, llm_dir = tiny_parts
    torch.manual_seed(0)
    return build_model(str(vision_dir), str(llm_dir), projector_tokens=2)


def test_each_feature_becomes_two_consecutive_tokens(two_token_model, tiny_model, color_images):
    model = two_token_model
    assert model.num_image_tokens == 2 * tiny_model.num_image_tokens
    pixels = model.image_processor.load([color_images / "red.png", color_images / "blue.png"])
    features = model.vision_features(pixels)
    tokens = model.encode_images(pixels)
    hidden = model.llm.config.hidden_size
    assert tokens.shape == (2, 2 * features.shape[1], hidden)
    wide = model.projector(features)  # [2, n, 2 * hidden]: the first half is a feature's first token
    assert torch.equal(tokens[:, 0::2], wide[..., :hidden]) and torch.equal(tokens[:, 1::2], wide[..., hidden:])


def test_two_token_model_answers_saves_and_loads(two_token_model, color_images, tmp_path):
    from vinstruct.data.encoding import EncodingSpec, encode_prompt

    model = two_token_model.eval()
    ids = encode_prompt(EncodingSpec.for_model(model), [("human", "<image>\nWhat color is it?")])
    assert ids.count(model.image_token_id) == model.num_image_tokens
    pixels = model.image_processor.load([color_images / "red.png"])
    before = model.generate([ids], pixels, max_new_tokens=4, eos_token_ids=[])[0].token_ids
    loaded = load_model(save_model(model, tmp_path / "two")).eval()
    assert loaded.config.projector_tokens == 2 and loaded.num_image_tokens == model.num_image_tokens
    assert loaded.generate([ids], pixels, max_new_tokens=4, eos_token_ids=[])[0].token_ids == before


def test_training_a_two_token_model(train_config):
    from vinstruct.train import run_training
    from vinstruct.train.config import load_config

    result = run_training(load_config(None, train_config("finetune", projector_tokens=2, max_steps=2)))
    assert load_model(result.checkpoint).config.projector_tokens == 2


def test_refusals(two_token_model, tmp_path):
    from vinstruct.model.convert_hf_export import check_exportable
    from vinstruct.model.config import LlavaConfig

    with pytest.raises(VinstructError, match="projector_tokens"):
        check_exportable(two_token_model)
    with pytest.raises(VinstructError, match="identity"):
        build_projector("identity", 8, 8, tokens=2)
    with pytest.raises(VinstructError, match="at least 1"):
        build_projector("linear", 8, 8, tokens=0)
    for bad in (0, True, "2"):
        data = two_token_model.config.to_dict() | {"projector_tokens": bad}
        with pytest.raises(VinstructError, match="projector_tokens must be an integer >= 1"):
            LlavaConfig.from_dict(data).validate()


def test_projector_file_of_another_token_count_is_refused(two_token_model, tiny_model, tmp_path):
    from vinstruct.train.model_init import load_projector_file, save_projector_file

    path = save_projector_file(tiny_model, tmp_path / "one.safetensors")
    with pytest.raises(VinstructError, match="projector_tokens is '1' but the model has '2'"):
        load_projector_file(two_token_model, path)


def test_warm_start_targets_name_colour_then_shape(two_token_model, tiny_world):
    image = next(i for i in CocoSet.load(tiny_world, "test").images if i.objects)
    words = {}
    targets = cell_targets(two_token_model, image, 4, words, tokens=2)
    hidden = two_token_model.llm.config.hidden_size
    assert targets.shape == (16, 2 * hidden)
    pairs = {(tuple(t[:hidden].tolist()), tuple(t[hidden:].tolist())) for t in targets}
    as_words = {name: tuple(v.tolist()) for name, v in words.items()}
    background = (as_words[BACKGROUND_WORD], as_words[BACKGROUND_WORD])
    named = pairs - {background}
    assert named, "some cell holds an object"
    colours = {o.attributes["color"] for o in image.objects}
    shapes = {o.attributes["shape"] for o in image.objects}
    for first, second in named:
        assert first in {as_words[c] for c in colours} and second in {as_words[s] for s in shapes}
    with pytest.raises(VinstructError, match="1 or 2 projector tokens"):
        cell_targets(two_token_model, image, 4, words, tokens=3)
