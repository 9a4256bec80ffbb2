"""LoRA adapters made with peft merge into the weights: the merged model computes what the
model with the adapter attached computes, in our code and, after export, in transformers."""

import json
import shutil

import pytest
import torch
from official_layout import OfficialReference, expand_image_index, write_official_checkpoint
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LlavaForConditionalGeneration

import vinstruct
from vinstruct.data.encoding import EncodingSpec, encode_prompt
from vinstruct.data.templates import get_template
from vinstruct.errors import VinstructError
from vinstruct.model.convert import convert
from vinstruct.model.convert_lora import merge_lora
from vinstruct.model.io import load_model

QUESTION = [("human", "<image>\nHow many shapes are there?")]


def _lora_config(**extra):
    # init_lora_weights=False gives B a random start, so the adapter changes the outputs
    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                      init_lora_weights=False, **extra)


def _logits(model, color_images):
    ids = encode_prompt(EncodingSpec.for_model(model), QUESTION)
    pixels = model.image_processor.load([color_images / "red.png"])
    with torch.no_grad():
        return model(torch.tensor([ids]), pixel_values=pixels).logits[0], ids, pixels


@pytest.fixture
def llm_adapter(tiny_checkpoint, tmp_path, color_images):
    """An adapter trained-as-if on the LLM alone, and the logits of the model wearing it."""
    torch.manual_seed(5)
    model = load_model(tiny_checkpoint)
    model.llm = get_peft_model(model.llm, _lora_config())
    model.llm.save_pretrained(str(tmp_path / "adapter"))
    with_adapter, _, _ = _logits(model, color_images)
    return tmp_path / "adapter", with_adapter


def test_llm_adapter_merges_into_the_weights(llm_adapter, tiny_model, color_images):
    adapter, with_adapter = llm_adapter
    before, _, _ = _logits(tiny_model, color_images)
    assert not torch.allclose(before, with_adapter, atol=1e-3)  # the adapter matters
    merged = merge_lora(tiny_model, adapter)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(_logits(merged, color_images)[0], with_adapter, atol=1e-5, rtol=0)


def test_merged_export_to_llava_hf_runs_in_transformers(llm_adapter, tiny_checkpoint, tmp_path, color_images):
    adapter, with_adapter = llm_adapter
    convert(tiny_checkpoint, tmp_path / "hf", target="llava-hf", lora=adapter)
    hf = LlavaForConditionalGeneration.from_pretrained(str(tmp_path / "hf")).eval()
    _, ids, pixels = _logits(load_model(tiny_checkpoint), color_images)
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor([ids]), pixel_values=pixels).logits[0]
    torch.testing.assert_close(theirs, with_adapter, atol=1e-5, rtol=0)


def test_whole_model_adapter_restores_its_saved_projector(tiny_checkpoint, tiny_model, tmp_path, color_images):
    """Adapters saved from the whole model (keys base_model.model.llm.*) with the projector as a
    fully trained module (modules_to_save)."""
    torch.manual_seed(6)
    model = load_model(tiny_checkpoint)
    parts = nn.ModuleDict({"vision_tower": model.vision_tower, "projector": model.projector, "llm": model.llm})
    peft = get_peft_model(parts, _lora_config(modules_to_save=["projector"]))
    trained_projector = peft.base_model.model["projector"]
    with torch.no_grad():
        trained_projector.modules_to_save["default"][0].weight.mul_(1.5)
    peft.save_pretrained(str(tmp_path / "adapter"))
    keys = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors")).keys()
    assert any(k.startswith("base_model.model.llm.") for k in keys)
    model.projector = trained_projector  # the model as trained: LoRA layers in the LLM, new projector
    expected, _, _ = _logits(model, color_images)
    merged = merge_lora(tiny_model, tmp_path / "adapter")
    torch.testing.assert_close(_logits(merged, color_images)[0], expected, atol=1e-5, rtol=0)


def test_official_lora_checkpoint_on_a_base_llm(tiny_parts, tmp_path, color_images):
    """Official LoRA runs save the adapter, non_lora_trainables.bin (the projector) and config.json."""
    vision_dir, llm_dir = tiny_parts
    directory = write_official_checkpoint(tmp_path / "llava-lora", vision_dir, llm_dir, projector_only=True)
    reference = OfficialReference(directory, vision_dir, base_dir=llm_dir)
    projector = torch.load(directory / "mm_projector.bin", weights_only=True)
    (directory / "mm_projector.bin").unlink()
    torch.save({"base_model.model." + k: v for k, v in projector.items()}, directory / "non_lora_trainables.bin")
    torch.manual_seed(7)
    reference.llm = get_peft_model(reference.llm, _lora_config())
    reference.llm.save_pretrained(str(directory))
    with pytest.raises(VinstructError, match="holds a LoRA adapter on a base LLM; pass the base"):
        vinstruct.load(directory)
    model = vinstruct.load(directory, base=llm_dir)
    pixels = model.image_processor.load([color_images / "blue.png"])
    text = get_template("vicuna_v1").generation_prompt(QUESTION, None, model.tokenizer.eos_token)
    official = reference.tokenize(text)
    ours = encode_prompt(EncodingSpec.for_model(model), QUESTION)
    assert ours == expand_image_index(official, model.image_token_id, model.num_image_tokens)
    with torch.no_grad():
        logits = model(torch.tensor([ours]), pixel_values=pixels).logits[0]
    torch.testing.assert_close(logits, reference.logits(official, pixels), atol=1e-5, rtol=0)


def test_bad_adapters_are_named(llm_adapter, tiny_model, tmp_path):
    adapter, _ = llm_adapter
    bad = tmp_path / "bad"
    shutil.copytree(adapter, bad)
    weights = load_file(str(bad / "adapter_model.safetensors"))
    key = next(k for k in weights if "lora_A" in k)
    weights[key] = torch.zeros(2, 2)
    save_file(weights, str(bad / "adapter_model.safetensors"))
    with pytest.raises(VinstructError, match=rf"adapter_model\.safetensors: shape mismatch for '{key}'"):
        merge_lora(tiny_model, bad)
    config = json.loads((bad / "adapter_config.json").read_text())
    config["target_modules"] = ["no_such_proj"]
    (bad / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(VinstructError, match=r"adapter_config\.json: does not fit this model"):
        merge_lora(tiny_model, bad)
    with pytest.raises(VinstructError, match=r"adapter_config\.json: not found"):
        merge_lora(tiny_model, tmp_path)
