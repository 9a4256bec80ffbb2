"""Checkpoint interop: read official LLaVA and llava-hf directories, write vinstruct or llava-hf.

  load_any(path, ...)               any of the three formats, detected, with an optional LoRA merged
  convert(src, dst, ...)            load, optionally merge LoRA, write in the target format

The modules behind it: convert_official (official import), convert_hf (llava-hf import),
convert_hf_export (llava-hf export), convert_lora (peft merge), convert_weights (file reading),
convert_chat (Jinja chat templates).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vinstruct.errors import VinstructError
from vinstruct.model.io import FORMATS, detect_format, load_foreign, load_model, parse_dtype, save_model
from vinstruct.model.weights import weight_files

TARGETS = ("vinstruct", "llava-hf")


def _stored_dtype(path: Path) -> torch.dtype | None:
    """The dtype a vinstruct checkpoint's LLM weights are stored in (read from the file headers)."""
    from safetensors import safe_open

    names = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    for f in weight_files(path):
        with safe_open(str(f), framework="pt") as handle:
            for key in handle.keys():
                if key.startswith("llm."):
                    return names.get(handle.get_slice(key).get_dtype())
    return None


def load_any(path: str | os.PathLike, *, source: str | None = None, dtype="auto", lora=None, **kwargs):
    """Load a checkpoint of any supported format (detected unless `source` names it)."""
    path = Path(path)
    fmt = source or detect_format(path)
    if fmt not in FORMATS:
        raise VinstructError(f"unknown source format {fmt!r}; expected one of {', '.join(FORMATS)}")
    dtype = parse_dtype(dtype)
    if fmt != "vinstruct":
        return load_foreign(path, fmt, dtype=dtype, lora=lora, **kwargs)
    unused = sorted(k for k in ("vision", "base") if kwargs.get(k) is not None)
    if unused:
        raise VinstructError(f"{path}: --{unused[0]} applies to official LLaVA sources only")
    model = load_model(path, dtype=_stored_dtype(path) if dtype == "auto" else dtype)
    if kwargs.get("template"):
        from vinstruct.data.templates import get_template

        model.config.template = get_template(kwargs["template"]).name
    if lora is not None:
        from vinstruct.model.convert_lora import merge_lora

        merge_lora(model, lora)
    return model


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, source: str | None = None, target: str = "vinstruct",
            dtype="auto", lora=None, pad_vocab_to: int | None = None, max_shard_size: int | str = "5GB",
            **load_options) -> list[str]:
    """Convert a checkpoint directory; returns notes worth telling the user. See io.load_foreign for options."""
    if target not in TARGETS:
        raise VinstructError(f"unknown target format {target!r}; expected one of {', '.join(TARGETS)}")
    if Path(dst).resolve() == Path(src).resolve():
        raise VinstructError(f"{dst}: the destination must differ from the source")
    if pad_vocab_to and target != "llava-hf":
        raise VinstructError("--pad-vocab-to applies to llava-hf exports only")
    model = load_any(src, source=source, dtype=dtype, lora=lora, **load_options)
    if target == "llava-hf":
        from vinstruct.model.convert_hf_export import export_llava_hf

        return export_llava_hf(model, dst, pad_vocab_to=pad_vocab_to, max_shard_size=max_shard_size)
    save_model(model, dst, max_shard_size=max_shard_size)
    return []
