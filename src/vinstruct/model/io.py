"""Checkpoint directories: save ours, tell the formats apart, load any supported one.

A vinstruct checkpoint directory holds:
  config.json                   LlavaConfig (vision/LLM sub-configs, projector, feature selection, template, ...)
  model.safetensors             all weights (or model-0000x-of-0000y.safetensors + model.safetensors.index.json)
  tokenizer files               the LLM tokenizer with <image> added
  preprocessor_config.json      the vision encoder's image processor
Building a model from parts is `vinstruct.model.build`, the weight files `vinstruct.model.weights`;
official LLaVA and llava-hf directories are read by `vinstruct.model.convert_official` / `convert_hf`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoTokenizer

from vinstruct.atomic import atomic_directory
from vinstruct.data.images import ImageProcessor
from vinstruct.errors import VinstructError
from vinstruct.model.build import attach, model_from_config, sub_config_dict
from vinstruct.model.config import MODEL_TYPE, LlavaConfig, read_config_json
from vinstruct.model.llava import LlavaModel
from vinstruct.model.weights import load_weights_into, unique_state_dict, weight_files, write_weights
from vinstruct.quiet import quiet_transformers

FORMATS = ("vinstruct", "llava-hf", "official")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ---- save ------------------------------------------------------------------------------------------
def save_model(model: LlavaModel, directory: str | os.PathLike, max_shard_size: int | str = "5GB",
               state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Save a checkpoint directory atomically (written beside it, then renamed into place).

    state_dict: weights to write instead of model.state_dict() (a training run passes the full
    weights gathered from shards, or LoRA-merged weights); keys as in our checkpoints.
    """
    directory = Path(directory)
    model.config.text_config = sub_config_dict(model.llm.config)
    model.config.vision_config = sub_config_dict(model.vision_tower.config)
    with atomic_directory(directory) as tmp:
        model.config.save(tmp.path)
        tensors, aliases = unique_state_dict(model, state_dict)
        write_weights(tensors, tmp.path, aliases, max_shard_size)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(str(tmp.path))
        if model.image_processor is not None:
            model.image_processor.save_pretrained(tmp.path)
    return directory


# ---- load --------------------------------------------------------------------------------------------
def detect_format(path: str | os.PathLike) -> str:
    """'vinstruct', 'llava-hf' or 'official' from a checkpoint directory's config.json."""
    if not Path(path).is_dir():
        raise VinstructError(f"{path}: not a directory")
    config_path, data = read_config_json(path)
    if data.get("model_type") == MODEL_TYPE:
        return "vinstruct"
    # Official configs come first: LLaVA-1.5 and NeXT configs also say model_type "llava".
    if "mm_vision_tower" in data or "mm_projector_type" in data or "mm_hidden_size" in data:
        return "official"
    if data.get("model_type") == "llava":
        return "llava-hf"
    raise VinstructError(
        f"{config_path}: unknown checkpoint format (model_type {data.get('model_type')!r}); expected a vinstruct "
        "checkpoint, a llava-hf (LlavaForConditionalGeneration) directory or an official LLaVA directory"
    )


def parse_dtype(name: str | torch.dtype | None):
    """None, "auto" (keep the stored dtype) or a torch dtype, from a name or a dtype."""
    if name is None or name == "auto" or isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name]
    except KeyError:
        raise VinstructError(f"unknown dtype {name!r}; expected auto, {', '.join(DTYPES)}") from None


def load_foreign(path: str | os.PathLike, fmt: str, dtype=None, device="cpu", *, vision=None, base=None,
                 template: str | None = None, strict: bool = False, lora=None):
    """An LlavaModel from an official LLaVA or a llava-hf directory.

    vision: a local copy of the official checkpoint's vision tower (else its mm_vision_tower is
    tried as a path, relative to the checkpoint, then as a cached hub name); base: the base LLM
    of an official projector-only or LoRA checkpoint; template: our chat template name (official
    configs rarely say; default vicuna_v1); strict: refuse pickled (.bin) weights; lora: a peft
    adapter directory merged into the weights after loading.
    """
    dtype = parse_dtype(dtype)
    if fmt == "official":
        from vinstruct.model.convert_official import load_official

        model = load_official(path, vision=vision, base=base, template=template, strict=strict, dtype=dtype,
                              device=device)
    elif fmt == "llava-hf":
        from vinstruct.model.convert_hf import load_llava_hf

        model = load_llava_hf(path, template=template, strict=strict, dtype=dtype, device=device)
    else:
        raise VinstructError(f"{path}: unknown checkpoint format {fmt!r}; expected one of {', '.join(FORMATS[1:])}")
    if lora is not None:
        from vinstruct.model.convert_lora import merge_lora

        merge_lora(model, lora, strict)
    return model


def load_model(path: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
               **kwargs) -> LlavaModel:
    """Load any supported checkpoint directory (vinstruct, llava-hf or official LLaVA)."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt != "vinstruct":
        return load_foreign(path, fmt, dtype=dtype, device=device, **kwargs)
    config = LlavaConfig.load(path)
    files = weight_files(path)
    model = model_from_config(config)
    load_weights_into(model, files)
    model.llm.tie_weights()
    try:
        with quiet_transformers():  # it reads our config.json and warns that it is not its own
            tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise VinstructError(f"{path}: cannot load the tokenizer ({err})") from None
    image_processor = ImageProcessor.from_pretrained(path, aspect=config.image_aspect)
    if dtype is not None:
        model = model.to(dtype)
    model = model.to(device).eval()
    return attach(model, tokenizer, image_processor)
