"""LoRA on the language model through peft, and what a LoRA run saves.

The LLM is wrapped in a peft `PeftModel`; the projector stays a full trainable
module (with its own learning rate). A checkpoint of a LoRA run holds
  model/     a vinstruct checkpoint with the base (unmerged) LLM and the trained projector
  adapter/   the adapter in peft's format (adapter_config.json + adapter_model.safetensors)
and the final export can instead merge the adapters into the base weights
(W + B·A·alpha/r), giving an ordinary vinstruct checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors.torch import save_file

from vinstruct.errors import VinstructError

PEFT_PREFIX = "llm.base_model.model."
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def attach_lora(model, r: int, alpha: int, dropout: float, target_modules) -> None:
    """Replace model.llm by a peft model with fresh LoRA adapters."""
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        bias="none", task_type="CAUSAL_LM")
    try:
        model.llm = get_peft_model(model.llm, config)
    except ValueError as err:
        raise VinstructError(f"LoRA: {err}") from None


def skip_input_casts(model) -> int:
    """Stop peft from casting each LoRA layer's input to the adapter's dtype; returns how many layers.

    Under bf16 autocast the adapters' fp32 weights are multiplied in bf16 anyway, so peft's cast
    of a bf16 activation to fp32 is undone at once by autocast: the result is bit-identical, and
    the two full-size activation copies per adapted layer are pure cost (about 5 % of a CPU LoRA
    micro-batch on the demo's 135 M LM, measured). Only for training under autocast: without it the cast is
    what makes an fp32 adapter accept a bf16 activation.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    return len(layers)


def load_adapter(model, adapter_dir: Path) -> None:
    """Wrap model.llm with a saved adapter, trainable (resuming a LoRA run)."""
    model.llm = PeftModel.from_pretrained(model.llm, str(adapter_dir), is_trainable=True)


def is_lora(model) -> bool:
    return isinstance(model.llm, PeftModel)


def _adapter_name(model) -> str:
    return model.llm.active_adapter if isinstance(model.llm.active_adapter, str) else model.llm.active_adapter[0]


def base_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our ordinary checkpoint keys from a LoRA model's state dict, adapters left out."""
    out = {}
    for key, tensor in state.items():
        if not key.startswith(PEFT_PREFIX):
            out[key] = tensor
        elif ".lora_" not in key:
            out["llm." + key[len(PEFT_PREFIX):].replace(".base_layer.", ".")] = tensor
    return out


def merged_state(model, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Base weights with every adapter merged in: W + scaling * B @ A."""
    name = _adapter_name(model)
    config = model.llm.peft_config[name]
    scaling = config.lora_alpha / (config.r ** 0.5 if config.use_rslora else config.r)
    merged = base_state(state)
    suffix = f".lora_A.{name}.weight"
    for key in state:
        if not key.endswith(suffix):
            continue
        module = key[: -len(suffix)]
        lora_a, lora_b = state[key].float(), state[f"{module}.lora_B.{name}.weight"].float()
        target = "llm." + module[len(PEFT_PREFIX):] + ".weight"
        weight = merged[target]
        merged[target] = (weight.float() + scaling * (lora_b @ lora_a)).to(weight.dtype)
    return merged


def save_adapter(model, state: dict[str, torch.Tensor], directory: Path) -> None:
    """Write the adapter in peft's format from a (full) LoRA model state dict."""
    llm_state = {key[len("llm."):]: t for key, t in state.items() if key.startswith("llm.")}
    # The embeddings stay frozen in a LoRA run and live in model/: keep them out of the adapter.
    adapter = get_peft_model_state_dict(model.llm, state_dict=llm_state, adapter_name=_adapter_name(model),
                                        save_embedding_layers=False)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in adapter.items()}, str(directory / ADAPTER_WEIGHTS),
              metadata={"format": "pt"})
    model.llm.peft_config[_adapter_name(model)].save_pretrained(str(directory))
