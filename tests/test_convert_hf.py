"""llava-hf both ways: exports load in transformers' own LlavaForConditionalGeneration with equal
logits and greedy outputs; imports of the hub and transformers 5.x layouts match that class too."""

import json
import shutil

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoProcessor, LlavaForConditionalGeneration
from transformers import LlavaConfig as HFLlavaConfig

import vinstruct
from vinstruct.data.encoding import EncodingSpec, encode_prompt
from vinstruct.errors import VinstructError
from vinstruct.model.convert import convert
from vinstruct.model.convert_hf_export import export_llava_hf
from vinstruct.model.generation import left_pad
from vinstruct.model.build import build_model
from vinstruct.model.io import load_model, save_model
from vinstruct.model.positions import positions_from_mask

QUESTION = "What colour is the shape on the left?"


def _prompts_and_pixels(model, color_images):
    spec = EncodingSpec.for_model(model)
    prompts = [
        encode_prompt(spec, [("human", f"<image>\n{QUESTION}")]),
        encode_prompt(spec, [("human", "Describe it. <image>")]),
        encode_prompt(spec, [("human", "hi")]),
    ]
    pixels = model.image_processor.load([color_images / "red.png", color_images / "blue.png"])
    return prompts, pixels


def _assert_same_logits(model, hf, color_images, columns=None):
    prompts, pixels = _prompts_and_pixels(model, color_images)
    ids, mask = left_pad(prompts, model.tokenizer.pad_token_id, "cpu")
    with torch.no_grad():
        ours = model(ids, attention_mask=mask, pixel_values=pixels).logits
        theirs = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                    position_ids=positions_from_mask(mask)).logits
    columns = columns or ours.shape[-1]
    valid = mask.bool()
    torch.testing.assert_close(ours[valid][:, :columns], theirs[valid][:, :columns], atol=1e-5, rtol=0)


def _assert_same_greedy(model, hf, color_images):
    prompts, pixels = _prompts_and_pixels(model, color_images)
    ours = model.generate(prompts, pixels, max_new_tokens=10, eos_token_ids=[])
    ids, mask = left_pad(prompts, model.tokenizer.pad_token_id, "cpu")
    theirs = hf.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=10,
                         do_sample=False, pad_token_id=model.tokenizer.pad_token_id, eos_token_id=None)
    assert [g.token_ids for g in ours] == theirs[:, ids.shape[1]:].tolist()


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    destination = tmp_path_factory.mktemp("hf") / "tiny-hf"
    convert(tiny_checkpoint, destination, target="llava-hf")
    return destination


def test_export_runs_in_transformers_with_identical_logits_and_greedy_output(exported, tiny_model, color_images):
    hf = LlavaForConditionalGeneration.from_pretrained(str(exported)).eval()
    _assert_same_logits(tiny_model.eval(), hf, color_images)
    _assert_same_greedy(tiny_model.eval(), hf, color_images)


def test_export_uses_the_hub_key_layout_that_vllm_reads(exported, tiny_model):
    with safe_open(str(exported / "model.safetensors"), framework="pt") as handle:
        keys = set(handle.keys())
    prefixes = {k.split(".")[0] + "." + k.split(".")[1] for k in keys}
    assert prefixes == {"vision_tower.vision_model", "multi_modal_projector.linear_1",
                        "multi_modal_projector.linear_2", "language_model.model", "language_model.lm_head"}
    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"]
    assert config["image_token_index"] == tiny_model.image_token_id
    assert config["vision_feature_layer"] == -2 and config["vision_feature_select_strategy"] == "default"
    assert config["projector_hidden_act"] == "gelu"
    assert config["text_config"]["rope_theta"] == 10000.0  # for readers on transformers 4.x
    processor = json.loads((exported / "processor_config.json").read_text())
    assert processor["patch_size"] == 8 and processor["num_additional_image_tokens"] == 1


def test_transformers_processor_reproduces_our_prompt_and_pixels(exported, tiny_model, color_images):
    """The exported processor + chat template build exactly the ids and pixels we build."""
    processor = AutoProcessor.from_pretrained(str(exported))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.open(color_images / "blue.png")  # not square: exercises the padding colour
    inputs = processor(text=text, images=[image], return_tensors="pt")
    spec = EncodingSpec.for_model(tiny_model)
    assert inputs["input_ids"][0].tolist() == encode_prompt(spec, [("human", f"<image>\n{QUESTION}")])
    assert torch.equal(inputs["pixel_values"], tiny_model.image_processor.load([color_images / "blue.png"]))


def test_round_trip_vinstruct_llava_hf_vinstruct_is_bit_exact(exported, tiny_model, tmp_path):
    back = tmp_path / "back"
    convert(exported, back, target="vinstruct")
    restored = load_model(back)
    original, again = tiny_model.state_dict(), restored.state_dict()
    assert original.keys() == again.keys()
    assert all(torch.equal(original[k], again[k]) and original[k].dtype == again[k].dtype for k in original)
    for field in ("projector_type", "vision_feature_layer", "vision_feature_select", "image_token_id", "template",
                  "image_aspect", "tokenization", "model_max_length"):
        assert getattr(restored.config, field) == getattr(tiny_model.config, field), field
    assert restored.config.vision_config == tiny_model.config.vision_config
    assert restored.config.text_config == tiny_model.config.text_config
    assert restored.tokenizer.get_vocab() == tiny_model.tokenizer.get_vocab()


def _hf_model_with_tokenizer(tiny_model, vocab_rows):
    """transformers' own Llava model (random weights) with our tokenizer, vocabulary padded to vocab_rows."""
    text = tiny_model.llm.config.to_dict()
    text["vocab_size"] = vocab_rows
    config = HFLlavaConfig(vision_config=tiny_model.vision_tower.config.to_dict(), text_config=text,
                           image_token_index=tiny_model.image_token_id, vision_feature_layer=-2)
    torch.manual_seed(3)
    return LlavaForConditionalGeneration(config).eval()


@pytest.mark.parametrize("layout", ["transformers-5", "hub"])
def test_import_of_either_key_layout_keeps_padded_rows(tiny_model, tmp_path, color_images, layout):
    rows = 64 * -(-len(tiny_model.tokenizer) // 64) + 64  # padded well beyond the tokenizer
    hf = _hf_model_with_tokenizer(tiny_model, rows)
    directory = tmp_path / "hf"
    hf.save_pretrained(str(directory))  # transformers 5.x writes vision_tower.* without vision_model.
    tiny_model.tokenizer.save_pretrained(str(directory))
    tiny_model.image_processor.save_pretrained(directory)
    weights = load_file(str(directory / "model.safetensors"))
    assert any(k.startswith("vision_tower.encoder.") for k in weights)
    if layout == "hub":  # as llava-1.5-7b-hf and older transformers store it
        weights = {k.replace("vision_tower.", "vision_tower.vision_model.", 1): v for k, v in weights.items()}
        save_file(weights, str(directory / "model.safetensors"))
    model = vinstruct.load(directory)
    assert model.llm.get_input_embeddings().num_embeddings == rows
    assert model.config.tokenization == "joined"
    _assert_same_logits(model, hf, color_images)  # every column, padded ones included
    _assert_same_greedy(model, hf, color_images)


def test_export_pads_the_vocabulary_and_suppresses_the_new_rows(tiny_model, tmp_path, color_images):
    notes = export_llava_hf(tiny_model, tmp_path / "padded", pad_vocab_to=64)
    assert notes == []
    config = json.loads((tmp_path / "padded" / "config.json").read_text())
    rows = config["text_config"]["vocab_size"]
    original = tiny_model.llm.get_input_embeddings().num_embeddings
    assert rows % 64 == 0 and rows > original
    assert config["image_token_index"] == tiny_model.image_token_id
    generation = json.loads((tmp_path / "padded" / "generation_config.json").read_text())
    assert generation["suppress_tokens"] == list(range(original, rows))
    hf = LlavaForConditionalGeneration.from_pretrained(str(tmp_path / "padded")).eval()
    _assert_same_logits(tiny_model.eval(), hf, color_images, columns=original)
    _assert_same_greedy(tiny_model.eval(), hf, color_images)


@pytest.mark.parametrize("change, message", [
    ({"projector": "linear"}, "projector is 'linear'"),
    ({"vision_feature_pool": 2}, "pools patches 2x"),
    ({"use_im_start_end": True}, "<im_start>/<im_end>"),
])
def test_export_refuses_what_llava_hf_cannot_express(tiny_parts, tmp_path, change, message):
    vision_dir, llm_dir = tiny_parts
    model = build_model(str(vision_dir), str(llm_dir), **change)
    with pytest.raises(VinstructError, match="cannot export to llava-hf") as err:
        export_llava_hf(model, tmp_path / "out")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_chunked_tokenization_is_exported_with_a_note(tiny_parts, tmp_path):
    vision_dir, llm_dir = tiny_parts
    model = build_model(str(vision_dir), str(llm_dir), tokenization="chunks")
    notes = export_llava_hf(model, tmp_path / "out")
    assert len(notes) == 1 and "one string" in notes[0]


def test_import_names_the_file_and_key_of_bad_weights(exported, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    tensors = load_file(str(broken / "model.safetensors"))
    tensors["multi_modal_projector.linear_1.weight"] = torch.zeros(3, 3)
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(VinstructError, match=r"model\.safetensors: shape mismatch for 'multi_modal_projector"):
        vinstruct.load(broken)
    del tensors["multi_modal_projector.linear_1.weight"]
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(VinstructError, match=r"missing weights for 'multi_modal_projector.linear_1.weight'"):
        vinstruct.load(broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(VinstructError, match=r"broken: no weights found"):
        vinstruct.load(broken)


def test_strict_mode_refuses_a_pickle_where_safetensors_is_expected(exported, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(exported, pickled)
    state = load_file(str(pickled / "model.safetensors"))
    (pickled / "model.safetensors").unlink()
    torch.save(state, pickled / "pytorch_model.bin")
    with pytest.raises(VinstructError, match=r"pytorch_model\.bin: pickled weights refused in strict mode"):
        vinstruct.load(pickled, strict=True)
    assert vinstruct.load(pickled).config.projector_type == "mlp2x_gelu"  # weights_only read otherwise


def test_saved_import_is_a_plain_vinstruct_checkpoint(exported, tmp_path):
    model = vinstruct.load(exported)
    save_model(model, tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["model_type"] == "vinstruct_llava"
