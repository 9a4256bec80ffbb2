"""LoRA: only adapters and the projector train; merging keeps the adapted model's outputs."""

import torch
from safetensors.torch import load_file

from vinstruct.data.encoding import EncodingSpec, encode_prompt
from vinstruct.model.io import load_model
from vinstruct.train import run_training
from vinstruct.train.lora import attach_lora, merged_state
from vinstruct.train.stages import freeze_for_stage


def test_lora_trains_only_adapters_and_the_projector(tiny_model):
    attach_lora(tiny_model, r=4, alpha=8, dropout=0.0, target_modules="all-linear")
    summary = freeze_for_stage(tiny_model, "finetune", lora=True)
    trainable = [n for n, p in tiny_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("projector.") for n in trainable)
    assert summary.vision_tower == 0 and summary.llm == sum(
        p.numel() for n, p in tiny_model.llm.named_parameters() if "lora_" in n)


def test_lora_run_keeps_base_weights_and_the_merged_export_equals_the_adapted_model(
        train_config, tiny_checkpoint, color_images, tmp_path):
    config = train_config("finetune", init_from=str(tiny_checkpoint), vision=None, llm=None, lora=True,
                          lora_r=4, lora_alpha=8, lora_dropout=0.0, lr=2e-2, projector_lr=1e-3,
                          lora_merge=False, max_steps=4)
    result = run_training(config)
    base_before, base_after = load_file(str(tiny_checkpoint / "model.safetensors")), \
        load_file(str(result.checkpoint / "model.safetensors"))
    changed = [k for k in base_after if not torch.equal(base_before[k], base_after[k])]
    assert changed and all(k.startswith("projector.") for k in changed)  # LLM base untouched
    adapter = load_file(str(result.adapter / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)

    # the adapted model (base + adapter, through peft) and our merged weights give the same logits
    from peft import PeftModel

    adapted = load_model(result.checkpoint)
    adapted.llm = PeftModel.from_pretrained(adapted.llm, str(result.adapter)).eval()
    merged = load_model(result.checkpoint)
    merged.load_state_dict(merged_state(adapted, adapted.state_dict()))
    spec = EncodingSpec.for_model(merged)
    prompt = torch.tensor([encode_prompt(spec, [("human", "<image>\nWhat color is the shape?")])])
    pixels = merged.image_processor.load([color_images / "red.png"])
    with torch.no_grad():
        expected = adapted(prompt, pixel_values=pixels).logits
        got = merged(prompt, pixel_values=pixels).logits
        unadapted = load_model(result.checkpoint)(prompt, pixel_values=pixels).logits
    assert not torch.allclose(expected, unadapted, atol=1e-4)  # the adapter does something
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_lora_merge_on_save_writes_an_ordinary_checkpoint(train_config, tiny_checkpoint):
    result = run_training(train_config("finetune", init_from=str(tiny_checkpoint), vision=None, llm=None,
                                       lora=True, lora_r=4, lora_alpha=8, lr=2e-2, max_steps=2))
    assert result.adapter is None
    weights = load_file(str(result.checkpoint / "model.safetensors"))
    assert not any("lora" in k for k in weights)
    before = load_file(str(tiny_checkpoint / "model.safetensors"))
    assert not torch.equal(before["llm.model.layers.0.self_attn.q_proj.weight"],
                           weights["llm.model.layers.0.self_attn.q_proj.weight"])
    assert load_model(result.checkpoint).num_image_tokens > 0


def test_skipping_peft_input_casts_under_bf16_autocast_changes_no_bit(tiny_model, color_images):
    """The training loop turns peft's fp32 input cast off under autocast: same loss, same gradients."""
    import copy

    from vinstruct.train.lora import skip_input_casts

    attach_lora(tiny_model, r=4, alpha=8, dropout=0.0, target_modules="all-linear")
    freeze_for_stage(tiny_model, "finetune", lora=True)
    with torch.no_grad():  # non-zero B, so the adapters take part in the forward
        for name, param in tiny_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05, generator=torch.Generator().manual_seed(len(name)))
    skipping = copy.deepcopy(tiny_model)
    assert skip_input_casts(skipping) > 0
    spec = EncodingSpec.for_model(tiny_model)
    prompt = torch.tensor([encode_prompt(spec, [("human", "<image>\nWhat color is the shape?")])])
    pixels = tiny_model.image_processor.load([color_images / "red.png"])

    def loss_and_grads(model):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(prompt, pixel_values=pixels).logits.float().logsumexp(-1).sum()
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    loss, grads = loss_and_grads(tiny_model)
    loss_skip, grads_skip = loss_and_grads(skipping)
    assert torch.equal(loss, loss_skip)
    assert grads.keys() == grads_skip.keys() and all(torch.equal(grads[n], grads_skip[n]) for n in grads)
