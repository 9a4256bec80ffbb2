"""The engine's lean forward computes exactly what the transformers forward computes, and steps aside when unsure."""

import pytest
import torch
import torch.nn.functional as F
from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from vinstruct.model.decoding import Decoder, Sequence
from vinstruct.model.lean_forward import LeanForward, onednn_usable, unsupported_reason
from vinstruct.model.sampling import RowState, SamplingParams
from vinstruct.model.slots import SlotCache

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


def _logits_of_a_session(model, lean: bool, kernel: str = "aten") -> list[torch.Tensor]:
    """Every logits row the engine computes while two prompts prefill together, decode, a third joins the
    running batch (unequal lengths: the general scatter and mask), then one is left alone (the one-row path)."""
    tok = model.tokenizer
    prompts = [tok("a red circle and a blue square", add_special_tokens=False)["input_ids"],
               tok("hi", add_special_tokens=False)["input_ids"],
               tok("what shape is at the top left of the picture?", add_special_tokens=False)["input_ids"]]
    recorded = []
    decoder = Decoder(model, max_batch_size=4, kv_tokens=4096, eos_ids=[], pad_id=0, lean=lean, kernel=kernel)
    assert (decoder.lean is not None) == lean
    if lean and kernel == "onednn":  # the tiny model's weights are all below the size where oneDNN is used
        decoder.lean = LeanForward(model.llm, "onednn", onednn_min_bytes=0)
        assert all(f is not F.linear for f in decoder.lean._fast) and decoder.lean.fused
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


needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


@needs_onednn
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_onednn_products_give_the_transformers_logits_to_rounding_and_the_same_tokens(tiny_model, arch):
    model = tiny_model.eval()
    if arch == "qwen2":
        model.llm = _qwen2_like(model.llm)  # biased projections: oneDNN must add them
    fast = _logits_of_a_session(model, lean=True, kernel="onednn")
    plain = _logits_of_a_session(model, lean=False)
    assert len(fast) == len(plain) > 8
    for a, b in zip(fast, plain):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        assert torch.equal(a.argmax(-1), b.argmax(-1))  # the same greedy choices


@needs_onednn
def test_the_engine_chooses_onednn_for_float32_cpu_weights_only(tiny_model):
    llm = tiny_model.eval().llm
    assert onednn_usable(llm)
    assert LeanForward.build(llm).kernel == "onednn"
    assert LeanForward.build(llm, "aten").kernel == "aten"
    # Small weights stay on transformers' kernels (oneDNN's per-call cost outweighs its speed there).
    assert all(f is F.linear for f in LeanForward.build(llm)._fast)
    assert all(f is not F.linear for f in LeanForward(llm, "onednn", onednn_min_bytes=0)._fast)
    with pytest.raises(ValueError, match="kernel must be one of"):
        LeanForward.build(llm, "blas")
    llm.to(torch.bfloat16)
    assert not onednn_usable(llm)
    assert LeanForward.build(llm).kernel == "aten"


def _logits_of_one_prompt(model, decoder: Decoder) -> list[torch.Tensor]:
    ids = model.tokenizer("a red circle and a blue square", add_special_tokens=False)["input_ids"]
    recorded = []
    advance = decoder._advance
    decoder._advance = lambda first, logits: (recorded.append(logits.clone()), advance(first, logits))[1]
    params = SamplingParams(max_new_tokens=4)
    with torch.inference_mode():
        decoder.admit([Sequence(list(ids), params, RowState(model.tokenizer, params, set()))])
        while decoder.rows:
            decoder.step()
    return recorded


@needs_onednn
def test_a_model_moved_to_bfloat16_after_the_engine_chose_onednn_decodes_with_exact_kernels(tiny_model):
    """The kernel is chosen when the engine is built; a pass in another dtype uses transformers' kernels."""
    model = tiny_model.eval()
    chosen = Decoder(model, max_batch_size=1, kv_tokens=512, eos_ids=[], pad_id=0)
    chosen.lean = LeanForward(model.llm, "onednn", onednn_min_bytes=0)
    exact = Decoder(model, max_batch_size=1, kv_tokens=512, eos_ids=[], pad_id=0, kernel="aten")
    assert (chosen.lean.kernel, exact.lean.kernel) == ("onednn", "aten")
    model.to(torch.bfloat16)
    for decoder in (chosen, exact):
        decoder.cache = SlotCache(*decoder.cache.geometry, torch.bfloat16, "cpu")
    a, b = _logits_of_one_prompt(model, chosen), _logits_of_one_prompt(model, exact)
    assert len(a) == len(b) == 4 and a[0].dtype == torch.bfloat16
    assert all(torch.equal(x, y) for x, y in zip(a, b))


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


@needs_onednn
def test_stacked_copies_are_reused_remade_after_training_and_skipped_when_memory_is_short(tiny_model, monkeypatch):
    from vinstruct.model import lean_forward

    model = tiny_model.eval()
    llm = model.llm
    first = LeanForward(llm, "onednn", onednn_min_bytes=0)
    again = LeanForward(llm, "onednn", onednn_min_bytes=0)
    assert first.fused and again.layers[0].gate_up is first.layers[0].gate_up  # made once per model

    with torch.no_grad():  # a training step changes a weight in place
        llm.model.layers[0].mlp.up_proj.weight.add_(0.5)
    after = LeanForward(llm, "onednn", onednn_min_bytes=0)
    inner = llm.model.layers[0].mlp.gate_proj.weight.shape[0]
    assert after.layers[0].gate_up is not first.layers[0].gate_up
    assert torch.equal(after.layers[0].gate_up[inner:], llm.model.layers[0].mlp.up_proj.weight)
    fast = _logits_of_a_session(model, lean=True, kernel="onednn")
    plain = _logits_of_a_session(model, lean=False)
    assert all(torch.equal(a.argmax(-1), b.argmax(-1)) for a, b in zip(fast, plain))

    lean_forward.release_stacked_weights(llm)
    assert llm not in lean_forward._FUSED
    monkeypatch.setattr("vinstruct.machine.available_memory", lambda device: 1024)  # copies would not fit
    short = LeanForward(llm, "onednn", onednn_min_bytes=0)
    assert not short.fused and short.layers[0].qkv is None
    assert all(f is not F.linear for f in short._fast)  # still oneDNN, product by product
