"""The engine's lean forward computes exactly what the transformers forward computes, and steps aside when unsure."""

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from vinstruct.model.decoding import Decoder, Sequence
from vinstruct.model.lean_forward import LeanForward, unsupported_reason
from vinstruct.model.sampling import RowState, SamplingParams

pytestmark = pytest.mark.usefixtures("one_thread")


def _qwen2_like(llm):
    """A random Qwen2 (biased q/k/v projections) with the tiny Llama's sizes and vocabulary."""
    c = llm.config
    torch.manual_seed(1)
    qwen = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, max_position_embeddings=c.max_position_embeddings,
        rope_theta=10000.0, tie_word_embeddings=False, attn_implementation="sdpa"))
    for layer in qwen.model.layers:  # non-zero biases, so a forgotten bias shows
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
            torch.nn.init.normal_(proj.bias, std=0.5)
    return qwen.eval()


def _logits_of_a_session(model, lean: bool) -> list[torch.Tensor]:
    """Every logits row the engine computes while two prompts prefill together, decode, a third joins the
    running batch (unequal lengths: the general scatter and mask), then one is left alone (the one-row path)."""
    tok = model.tokenizer
    prompts = [tok("a red circle and a blue square", add_special_tokens=False)["input_ids"],
               tok("hi", add_special_tokens=False)["input_ids"],
               tok("what shape is at the top left of the picture?", add_special_tokens=False)["input_ids"]]
    recorded = []
    decoder = Decoder(model, max_batch_size=4, kv_tokens=4096, eos_ids=[], pad_id=0, lean=lean)
    assert (decoder.lean is not None) == lean
    advance = decoder._advance
    decoder._advance = lambda first, logits: (recorded.append(logits.clone()), advance(first, logits))[1]

    def row(ids, n):
        params = SamplingParams(max_new_tokens=n)
        return Sequence(list(ids), params, RowState(tok, params, set()))

    with torch.inference_mode():
        decoder.admit([row(prompts[0], 3), row(prompts[1], 9)])
        decoder.step()
        decoder.admit([row(prompts[2], 4)])
        while decoder.rows:
            decoder.step()
    return recorded


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_lean_logits_equal_the_transformers_forward_bit_for_bit(tiny_model, dtype, arch):
    model = tiny_model.eval()
    if arch == "qwen2":
        model.llm = _qwen2_like(model.llm)
    model = model.to(dtype)
    assert unsupported_reason(model.llm) is None
    lean = _logits_of_a_session(model, lean=True)
    plain = _logits_of_a_session(model, lean=False)
    assert len(lean) == len(plain) > 8
    for a, b in zip(lean, plain):
        assert a.shape == b.shape
        assert torch.equal(a, b)


def test_lean_forward_steps_aside_for_what_it_cannot_vouch_for(tiny_model):
    llm = tiny_model.llm
    assert LeanForward.build(llm) is not None

    handle = llm.model.layers[0].mlp.register_forward_hook(lambda *args: None)
    assert "hook" in unsupported_reason(llm)
    handle.remove()

    llm.config._attn_implementation = "eager"
    assert "attention implementation" in unsupported_reason(llm)
    llm.config._attn_implementation = "sdpa"

    original = llm.model.layers[0].self_attn.q_proj
    llm.model.layers[0].self_attn.q_proj = torch.nn.Sequential(original)  # as an adapter would wrap it
    assert "not plain linear" in unsupported_reason(llm)
    assert LeanForward.build(llm) is None
    llm.model.layers[0].self_attn.q_proj = original

    class PatchedLayer(type(llm.model.layers[0])):  # e.g. what a wrapper library substitutes
        pass

    real_class = type(llm.model.layers[0])
    llm.model.layers[0].__class__ = PatchedLayer
    assert "decoder layer class" in unsupported_reason(llm)
    llm.model.layers[0].__class__ = real_class
    assert unsupported_reason(llm) is None

    mistral = MistralForCausalLM(MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))
    assert "architecture" in unsupported_reason(mistral)


def test_lora_wrapped_llm_uses_the_transformers_forward(tiny_model):
    from peft import LoraConfig, get_peft_model

    peft_llm = get_peft_model(tiny_model.llm, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert unsupported_reason(peft_llm) is not None
    assert unsupported_reason(peft_llm.base_model.model) is not None  # the LoRA layers themselves
