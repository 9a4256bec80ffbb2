"""Merging a peft LoRA adapter into a model's weights, so exports need no peft at serving time.

An adapter directory is peft's standard one: `adapter_config.json` plus
`adapter_model.safetensors` (or `adapter_model.bin`, read with weights_only). Two
placements are recognised from the keys in the weights file:
  on the language model  `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`
                         (peft applied to the causal LM; official LLaVA LoRA runs save this)
  on the whole model     `base_model.model.llm.model.layers.N...` (peft applied to LlavaModel;
                         `modules_to_save` such as the projector come back too)
"""

from __future__ import annotations

import warnings
from pathlib import Path

from torch import nn

from vinstruct.errors import VinstructError
from vinstruct.model.convert_weights import WeightSet, read_weight_file

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_WHOLE_MODEL_PREFIXES = tuple(f"base_model.model.{part}." for part in ("llm", "projector", "vision_tower"))


class _Parts(nn.Module):
    """The model's three parts under their usual names, without a `config` attribute.

    peft treats a module whose config has a `model_type` as a transformers model and
    looks up transformers' weight-conversion tables by class name; our own classes
    are not in them, so peft gets this plain container instead.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.vision_tower = model.vision_tower
        self.projector = model.projector
        self.llm = model.llm


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def read_adapter(directory: str | Path, strict: bool = False):
    """(LoraConfig, WeightSet) of a peft adapter directory, with one-line errors."""
    from peft import PeftConfig, PeftType

    directory = Path(directory)
    if not (directory / ADAPTER_CONFIG).is_file():
        raise VinstructError(f"{directory / ADAPTER_CONFIG}: not found (a peft adapter directory has it)")
    try:
        config = PeftConfig.from_pretrained(str(directory))
    except (ValueError, TypeError, OSError) as err:
        raise VinstructError(f"{directory / ADAPTER_CONFIG}: not a valid peft adapter config ({err})") from None
    if config.peft_type != PeftType.LORA:
        raise VinstructError(f"{directory / ADAPTER_CONFIG}: peft_type is {config.peft_type!s}, expected LORA")
    for name in ADAPTER_WEIGHTS:
        if (directory / name).is_file():
            return config, read_weight_file(directory / name, strict)
    raise VinstructError(f"{directory / ADAPTER_WEIGHTS[0]}: not found (no adapter weights in {directory})")


def _check_adapter_keys(peft_model, weights: WeightSet, directory: Path) -> None:
    """Every LoRA weight present with the right shape; other keys must be whole base weights
    (peft saves resized embeddings that way)."""
    from peft import get_peft_model_state_dict

    # save_embedding_layers=False: "auto" would look the base model up on the hub
    expected = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
    full_weights = peft_model.state_dict()
    for key, tensor in weights.tensors.items():
        known = expected.get(key, full_weights.get(key))
        if known is None:
            raise VinstructError(f"{weights.origin[key]}: unexpected adapter key {key!r} (no such module in the model)")
        if tuple(tensor.shape) != tuple(known.shape):
            raise VinstructError(
                f"{weights.origin[key]}: shape mismatch for {key!r}: file has {tuple(tensor.shape)}, "
                f"the model expects {tuple(known.shape)}"
            )
    missing = sorted(set(expected) - set(weights.tensors))
    if missing:
        raise VinstructError(f"{directory}: adapter weights lack {missing[0]!r} ({len(missing)} missing in all)")


def merge_lora(model, directory: str | Path, strict: bool = False):
    """Apply the LoRA adapter in `directory` to `model` and fold it into the weights (in place).

    On a bad adapter the model is left as it was and a one-line error names the file and key.
    """
    from peft import get_peft_model, set_peft_model_state_dict

    directory = Path(directory)
    config, weights = read_adapter(directory, strict)
    config.inference_mode = True
    whole = any(key.startswith(_WHOLE_MODEL_PREFIXES) for key in weights.tensors)
    target = _Parts(model) if whole else model.llm
    try:
        with warnings.catch_warnings():  # peft calls a transformers API that 5.x marks deprecated
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = get_peft_model(target, config)
    except ValueError as err:  # e.g. target_modules that match nothing
        raise VinstructError(f"{directory / ADAPTER_CONFIG}: does not fit this model ({err})") from None
    try:
        _check_adapter_keys(peft_model, weights, directory)
    except VinstructError:
        peft_model.unload()  # take the (still empty) LoRA layers out again
        raise
    dtype = next(target.parameters()).dtype
    set_peft_model_state_dict(peft_model, {k: t.to(dtype) for k, t in weights.tensors.items()})
    merged = peft_model.merge_and_unload()
    if whole:
        model.vision_tower, model.projector, model.llm = merged.vision_tower, merged.projector, merged.llm
    else:
        model.llm = merged
    return model
