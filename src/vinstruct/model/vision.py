"""Loading a pretrained vision encoder and selecting the features LLaVA feeds to its projector.

Any transformers vision model directory works: a bare `CLIPVisionModel` /
`SiglipVisionModel` directory, or a full dual-encoder directory such as
`openai/clip-vit-large-patch14` (its vision half is taken).
"""

from __future__ import annotations

import os

import torch
import transformers
from torch import nn
from transformers import AutoConfig, PretrainedConfig

from vinstruct.errors import VinstructError

# Composite (image + text) model types -> the class of their vision half.
_VISION_CLASS_BY_TYPE = {
    "clip": "CLIPVisionModel",
    "clip_vision_model": "CLIPVisionModel",
    "siglip": "SiglipVisionModel",
    "siglip_vision_model": "SiglipVisionModel",
    "siglip2": "Siglip2VisionModel",
    "siglip2_vision_model": "Siglip2VisionModel",
}

FEATURE_SELECTS = ("patch", "cls_patch")


def _vision_class(config: PretrainedConfig):
    name = _VISION_CLASS_BY_TYPE.get(config.model_type)
    if name is not None:
        return getattr(transformers, name)
    return transformers.AutoModel


def vision_config_of(config: PretrainedConfig) -> PretrainedConfig:
    """The vision sub-config of a composite config, or the config itself."""
    if config.model_type in ("clip", "siglip", "siglip2") and hasattr(config, "vision_config"):
        return config.vision_config
    return config


def load_vision_tower(name_or_path: str, dtype: torch.dtype | None = None) -> nn.Module:
    """Load pretrained vision weights from a local directory or a cached hub name."""
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except OSError as err:
        where = "directory" if os.path.isdir(name_or_path) else "name or directory"
        raise VinstructError(f"vision encoder {name_or_path!r}: cannot read config.json from this {where} ({err})") from None
    cls = _vision_class(config)
    model = cls.from_pretrained(name_or_path, dtype=dtype or torch.float32)
    return model


def vision_tower_from_config(config_dict: dict) -> nn.Module:
    """Build an untrained vision tower from a saved sub-config (weights are loaded separately)."""
    config_dict = dict(config_dict)
    model_type = config_dict.pop("model_type", None)
    if model_type is None:
        raise VinstructError("vision_config has no 'model_type'")
    config = AutoConfig.for_model(model_type, **config_dict)
    return _vision_class(config)._from_config(config)


def has_cls_token(vision_config: PretrainedConfig) -> bool:
    """CLIP-style ViTs prepend a CLS token; SigLIP-style ones do not."""
    return vision_config.model_type.startswith("clip")


def num_patches(vision_config: PretrainedConfig) -> int:
    side = vision_config.image_size // vision_config.patch_size
    return side * side


def num_image_tokens(vision_config: PretrainedConfig, select: str, pool: int) -> int:
    """How many embeddings one image becomes after selection and pooling."""
    side = vision_config.image_size // vision_config.patch_size
    if pool > 1:
        side = -(-side // pool)  # ceil: pooling keeps partial windows
    tokens = side * side
    if select == "cls_patch" and has_cls_token(vision_config):
        tokens += 1
    return tokens


def select_features(
    hidden_states: torch.Tensor, select: str, has_cls: bool, pool: int
) -> torch.Tensor:
    """Drop (or keep) the CLS token and optionally average-pool the patch grid.

    hidden_states: [num_images, tokens, dim] from one encoder layer.
    """
    if select not in FEATURE_SELECTS:
        raise VinstructError(f"unknown vision feature select {select!r}; expected one of {FEATURE_SELECTS}")
    cls = hidden_states[:, :1] if has_cls else None
    patches = hidden_states[:, 1:] if has_cls else hidden_states
    if pool > 1:
        n, t, d = patches.shape
        side = int(round(t**0.5))
        grid = patches.transpose(1, 2).reshape(n, d, side, side)
        grid = nn.functional.avg_pool2d(grid, kernel_size=pool, stride=pool, ceil_mode=True)
        patches = grid.flatten(2).transpose(1, 2)
    if select == "cls_patch" and cls is not None:
        return torch.cat([cls, patches], dim=1)
    return patches
