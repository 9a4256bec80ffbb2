"""Official LLaVA directories import exactly: same ids, logits and greedy output as a reference
forward written from the documented layout; export onward to llava-hf runs in transformers."""

import json
import os
import shutil

import pytest
import torch
from official_layout import OfficialReference, expand_image_index, write_official_checkpoint
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import CLIPImageProcessor, LlavaForConditionalGeneration

import vinstruct
from vinstruct.data.encoding import EncodingSpec, encode_prompt
from vinstruct.data.templates import get_template
from vinstruct.errors import VinstructError
from vinstruct.model.convert import convert
from vinstruct.model.io import detect_format, load_model

TURNS = [("human", "<image>\nWhat colour is the shape?"), ("gpt", "It is red."), ("human", "And its size?")]


def _compare_with_reference(model, reference, pixels, turns=TURNS):
    """Our ids equal the official ids with -200 expanded; logits and greedy tokens match."""
    ours = encode_prompt(EncodingSpec.for_model(model), turns)
    text = get_template("vicuna_v1").generation_prompt(turns, None, model.tokenizer.eos_token)
    official = reference.tokenize(text)
    assert ours == expand_image_index(official, model.image_token_id, model.num_image_tokens)
    with torch.no_grad():
        logits = model(torch.tensor([ours]), attention_mask=torch.ones(1, len(ours), dtype=torch.long),
                       pixel_values=pixels).logits[0]
    torch.testing.assert_close(logits, reference.logits(official, pixels), atol=1e-5, rtol=0)
    greedy = model.generate([ours], pixels, max_new_tokens=10, eos_token_ids=[])[0].token_ids
    assert greedy == reference.greedy(official, pixels, 10)
    return ours


@pytest.fixture(scope="module")
def official(tiny_parts, tmp_path_factory):
    vision_dir, llm_dir = tiny_parts
    return write_official_checkpoint(tmp_path_factory.mktemp("official") / "llava-tiny", vision_dir, llm_dir)


def test_official_checkpoint_imports_exactly(official, tiny_parts, color_images):
    vision_dir, _ = tiny_parts
    assert detect_format(official) == "official"
    model = vinstruct.load(official)
    c = model.config
    assert (c.tokenization, c.template, c.image_aspect) == ("chunks", "vicuna_v1", "pad")
    assert c.projector_type == "mlp2x_gelu"
    # <image> is a new token past the official vocabulary, which keeps its size
    assert model.llm.config.vocab_size == model.image_token_id == len(model.tokenizer) - 1
    pixels = model.image_processor.load([color_images / "blue.png"])
    ids = _compare_with_reference(model, OfficialReference(official, vision_dir), pixels)
    after_image = ids[ids.index(model.image_token_id) + model.num_image_tokens]
    assert model.tokenizer.convert_ids_to_tokens(after_image) == "Ċ"  # the chunk after <image> starts anew


def test_pad_preprocessing_equals_the_official_expand_to_square(official, color_images):
    """Official: paste on a square of int(mean*255), then the CLIP processor (resize + centre crop)."""
    model = vinstruct.load(official)
    image = Image.open(color_images / "blue.png").convert("RGB")
    processor = CLIPImageProcessor.from_pretrained(str(model.config.extra["mm_vision_tower"]))
    side = max(image.size)
    square = Image.new("RGB", (side, side), tuple(int(x * 255) for x in processor.image_mean))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    expected = processor(images=[square], return_tensors="pt")["pixel_values"]
    assert torch.equal(model.image_processor([image]), expected)


def test_linear_projector_cls_patch_and_sharded_bin_weights(tiny_parts, tmp_path, color_images):
    vision_dir, llm_dir = tiny_parts
    directory = write_official_checkpoint(tmp_path / "llava-linear", vision_dir, llm_dir, projector="linear",
                                          select_feature="cls_patch", select_layer=-1, aspect="square",
                                          weights="bin-shards")
    model = vinstruct.load(directory)
    assert (model.config.projector_type, model.config.image_aspect) == ("linear", "crop")
    assert model.num_image_tokens == 17  # 16 patches + CLS
    pixels = model.image_processor.load([color_images / "red.png"])
    _compare_with_reference(model, OfficialReference(directory, vision_dir), pixels)


def test_im_start_end_wraps_each_image(tiny_parts, tmp_path, color_images):
    vision_dir, llm_dir = tiny_parts
    directory = write_official_checkpoint(tmp_path / "llava-wrapped", vision_dir, llm_dir, use_im_start_end=True)
    model = vinstruct.load(directory)
    assert model.config.use_im_start_end
    reference = OfficialReference(directory, vision_dir)
    pixels = model.image_processor.load([color_images / "red.png"])
    # the official prompt spells the wrapping out; ours adds it from the config
    official_turns = [("human", "<im_start><image><im_end>\nWhat colour is the shape?")]
    official = reference.tokenize(get_template("vicuna_v1").generation_prompt(official_turns, None, "</s>"))
    ours = encode_prompt(EncodingSpec.for_model(model), [("human", "<image>\nWhat colour is the shape?")])
    assert ours == expand_image_index(official, model.image_token_id, model.num_image_tokens)
    start = model.tokenizer.convert_tokens_to_ids("<im_start>")
    assert ours[ours.index(model.image_token_id) - 1] == start
    with torch.no_grad():
        logits = model(torch.tensor([ours]), pixel_values=pixels).logits[0]
    torch.testing.assert_close(logits, reference.logits(official, pixels), atol=1e-5, rtol=0)


def test_stage1_projector_only_checkpoint_on_a_base_llm(tiny_parts, tmp_path, color_images):
    vision_dir, llm_dir = tiny_parts
    directory = write_official_checkpoint(tmp_path / "llava-pretrain", vision_dir, llm_dir, projector_only=True)
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "mm_projector.bin"]
    with pytest.raises(VinstructError, match=r"holds only a projector \(mm_projector.bin\); pass the base"):
        vinstruct.load(directory)
    model = vinstruct.load(directory, base=llm_dir)
    pixels = model.image_processor.load([color_images / "green.png"])
    _compare_with_reference(model, OfficialReference(directory, vision_dir, base_dir=llm_dir), pixels)


def test_vision_tower_is_found_by_option_or_beside_the_checkpoint(tiny_parts, tmp_path, monkeypatch):
    vision_dir, llm_dir = tiny_parts
    shutil.copytree(vision_dir, tmp_path / "towers" / "clip-tiny")
    directory = write_official_checkpoint(tmp_path / "llava-relative", vision_dir, llm_dir,
                                          vision_name="../towers/clip-tiny")
    monkeypatch.chdir(tmp_path.parent)  # the name does not resolve from the working directory
    assert vinstruct.load(directory).config.extra["mm_vision_tower"] == "../towers/clip-tiny"
    unknown = write_official_checkpoint(tmp_path / "llava-unknown", vision_dir, llm_dir, vision_name="no/such-tower")
    with pytest.raises(VinstructError, match="no/such-tower"):
        vinstruct.load(unknown)
    assert vinstruct.load(unknown, vision=vision_dir).num_image_tokens == 16


def test_official_to_vinstruct_to_llava_hf_keeps_outputs(official, tmp_path, color_images):
    model = vinstruct.load(official)
    convert(official, tmp_path / "ours")
    again = load_model(tmp_path / "ours")
    assert again.config.tokenization == "chunks"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    notes = convert(tmp_path / "ours", tmp_path / "hf", target="llava-hf")
    assert "one string" in notes[0]
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    vocab = model.llm.config.vocab_size
    assert config["image_token_index"] == vocab and config["text_config"]["vocab_size"] == vocab + 1
    hf = LlavaForConditionalGeneration.from_pretrained(str(tmp_path / "hf")).eval()
    ids = encode_prompt(EncodingSpec.for_model(model), TURNS)
    pixels = model.image_processor.load([color_images / "red.png"])
    with torch.no_grad():
        ours = model(torch.tensor([ids]), pixel_values=pixels).logits[0]
        theirs = hf(input_ids=torch.tensor([ids]), pixel_values=pixels).logits[0]
    torch.testing.assert_close(ours, theirs[:, :vocab], atol=1e-5, rtol=0)
    generated = hf.generate(input_ids=torch.tensor([ids]), pixel_values=pixels, max_new_tokens=10,
                            do_sample=False, eos_token_id=None)
    assert generated[0, len(ids):].tolist() == model.generate([ids], pixels, max_new_tokens=10,
                                                               eos_token_ids=[])[0].token_ids


def _rewrite_weights(directory, change):
    tensors = load_file(str(directory / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(directory / "model.safetensors"))


def test_bad_official_directories_fail_with_one_line_naming_file_and_key(official, tmp_path):
    broken = tmp_path / "llava-broken"
    shutil.copytree(official, broken)
    _rewrite_weights(broken, lambda t: t.__setitem__("model.mm_projector.2.weight", torch.zeros(5, 5)))
    shape_error = r"model\.safetensors: shape mismatch for 'model\.mm_projector\.2\.weight'"
    with pytest.raises(VinstructError, match=shape_error):
        vinstruct.load(broken)
    shutil.copy(official / "model.safetensors", broken / "model.safetensors")
    _rewrite_weights(broken, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(VinstructError, match=r"missing weights for 'model\.layers\.1\.mlp\.up_proj\.weight'"):
        vinstruct.load(broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(VinstructError, match=r"llava-broken: no weights found"):
        vinstruct.load(broken)


@pytest.mark.parametrize("key, value, message", [
    ("mm_projector_type", "resampler", r"config\.json: unknown projector type mm_projector_type='resampler'"),
    ("mm_patch_merge_type", "spatial_unpad", r"config\.json: mm_patch_merge_type='spatial_unpad'"),
    ("mm_vision_select_feature", "cls", r"config\.json: mm_vision_select_feature='cls'"),
    ("model_type", "llava_mpt", r"config\.json: model_type 'llava_mpt' is not supported"),
])
def test_unsupported_official_configs_are_named(official, tmp_path, key, value, message):
    odd = tmp_path / "llava-odd"
    shutil.copytree(official, odd)
    config = json.loads((odd / "config.json").read_text())
    config[key] = value
    (odd / "config.json").write_text(json.dumps(config))
    with pytest.raises(VinstructError, match=message):
        vinstruct.load(odd)


def test_strict_mode_refuses_pickled_shards(tiny_parts, tmp_path):
    vision_dir, llm_dir = tiny_parts
    directory = write_official_checkpoint(tmp_path / "llava-bin", vision_dir, llm_dir, weights="bin-shards")
    with pytest.raises(VinstructError, match=r"pytorch_model\.bin\.index\.json: pickled weights refused in strict"):
        vinstruct.load(directory, strict=True)


def test_a_pickle_holding_more_than_tensors_is_refused(official, tmp_path):
    directory = tmp_path / "llava-evil"
    shutil.copytree(official, directory)
    state = load_file(str(directory / "model.safetensors"))
    (directory / "model.safetensors").unlink()
    torch.save({"weights": state, "hook": os.system}, directory / "pytorch_model.bin")
    with pytest.raises(VinstructError, match=r"pytorch_model\.bin: not a plain tensor state dict"):
        vinstruct.load(directory)


def test_llava_v15_configs_saying_model_type_llava_are_official(official, tmp_path):
    """LLaVA-1.5 hub configs say model_type "llava" like llava-hf ones; their mm_* keys decide."""
    renamed = tmp_path / "llava-v1.5"
    shutil.copytree(official, renamed)
    config = json.loads((renamed / "config.json").read_text())
    config["model_type"] = "llava"
    (renamed / "config.json").write_text(json.dumps(config))
    assert detect_format(renamed) == "official"
    assert vinstruct.load(renamed).config.tokenization == "chunks"
