"""Where a stage's model comes from, and the projector-only file stage 1 writes.

A run starts from base encoders (`vision` + `llm`, optionally with a stage-1
`projector_file`), from a checkpoint (`init_from`), or, when resuming, from its
own latest training checkpoint.

Projector-only file (`mm_projector.safetensors`): the projector's own state dict
(keys as in `model.projector`, i.e. our checkpoint keys without the `projector.`
prefix: `0.weight`, `0.bias`, `2.weight`, ... for mlp2x_gelu; `weight`, `bias` for
linear) plus metadata naming the projector type and the feature selection it was
trained with, which must match the model it is loaded onto.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vinstruct.atomic import atomic_file
from vinstruct.data.templates import DEFAULT_TEMPLATE
from vinstruct.errors import VinstructError
from vinstruct.model.build import build_model
from vinstruct.model.io import load_model

PROJECTOR_FILE = "mm_projector.safetensors"
PROJECTOR_FORMAT = "vinstruct-projector"
_MATCHING = ("projector_type", "vision_feature_layer", "vision_feature_select", "vision_feature_pool",
             "projector_tokens")


def projector_metadata(model) -> dict[str, str]:
    c = model.config
    meta = {key: str(getattr(c, key)) for key in _MATCHING}
    meta.update(format=PROJECTOR_FORMAT, vision_hidden=str(model.vision_tower.config.hidden_size),
                llm_hidden=str(model.llm.config.hidden_size))
    return meta


def save_projector_file(model, path: str | os.PathLike, state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the projector weights alone (atomically)."""
    path = Path(path)
    state = state if state is not None else model.projector.state_dict()
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=projector_metadata(model))
    return path


def load_projector_file(model, path: str | os.PathLike) -> None:
    """Load a projector-only file onto `model`, refusing a projector of another kind or shape."""
    path = Path(path)
    if not path.is_file():
        raise VinstructError(f"{path}: projector file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (OSError, ValueError) as err:
        raise VinstructError(f"{path}: cannot read safetensors ({err})") from None
    if meta.get("format") != PROJECTOR_FORMAT:
        raise VinstructError(f"{path}: not a vinstruct projector file (metadata format {meta.get('format')!r}); "
                             "official mm_projector.bin files go through `vinstruct convert`")
    expected = projector_metadata(model)
    meta.setdefault("projector_tokens", "1")  # files written before the option existed
    for key in _MATCHING:
        if meta.get(key) != expected[key]:
            raise VinstructError(f"{path}: {key} is {meta.get(key)!r} but the model has {expected[key]!r}")
    own = model.projector.state_dict()
    if set(tensors) != set(own):
        raise VinstructError(f"{path}: keys {sorted(tensors)} do not match the projector's {sorted(own)}")
    for key, tensor in tensors.items():
        if tensor.shape != own[key].shape:
            raise VinstructError(f"{path}: {key!r} has shape {tuple(tensor.shape)}, "
                                 f"the projector expects {tuple(own[key].shape)}")
    model.projector.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})


def initial_model(config, resume_model_dir: Path | None = None):
    """The model a run starts from (fp32 master weights; autocast handles bf16)."""
    if resume_model_dir is not None:
        return load_model(resume_model_dir)
    if config.init_from:
        model = load_model(config.init_from)
        if config.template:
            model.config.template = config.template
        return model
    model = build_model(
        config.vision, config.llm, projector=config.projector_type, vision_feature_layer=config.vision_feature_layer,
        vision_feature_select=config.vision_feature_select, vision_feature_pool=config.vision_feature_pool,
        projector_tokens=config.projector_tokens, template=config.template or DEFAULT_TEMPLATE, image_aspect=config.image_aspect,
        model_max_length=config.max_length,
    )
    if config.projector_file:
        load_projector_file(model, config.projector_file)
    return model
