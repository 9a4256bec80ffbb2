"""Projectors from vision-feature space to the LLM's word-embedding space, chosen by name.

Names follow the official LLaVA code so that checkpoints map key for key:
  linear        one nn.Linear (the paper)            -> keys `weight`, `bias`
  mlp{N}x_gelu  Linear, (GELU, Linear) * (N-1)       -> keys `0.*`, `2.*`, ... (nn.Sequential indices)
  identity      features passed through unchanged (dimensions must already match)
"""

from __future__ import annotations

import re

from torch import nn

from vinstruct.errors import VinstructError

_MLP_GELU = re.compile(r"^mlp(\d+)x_gelu$")


def projector_names() -> list[str]:
    return ["linear", "mlp2x_gelu", "mlp{N}x_gelu", "identity"]


def build_projector(name: str, vision_dim: int, text_dim: int) -> nn.Module:
    """Build the projector called `name` mapping `vision_dim` -> `text_dim`."""
    if name == "linear":
        return nn.Linear(vision_dim, text_dim)
    if name == "identity":
        if vision_dim != text_dim:
            raise VinstructError(
                f"projector 'identity' needs equal dimensions, got vision {vision_dim} vs LLM {text_dim}"
            )
        return nn.Identity()
    match = _MLP_GELU.match(name)
    if match:
        depth = int(match.group(1))
        if depth < 1:
            raise VinstructError(f"projector {name!r}: depth must be at least 1")
        layers: list[nn.Module] = [nn.Linear(vision_dim, text_dim)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(text_dim, text_dim)]
        return nn.Sequential(*layers)
    raise VinstructError(f"unknown projector type {name!r}; expected one of {', '.join(projector_names())}")
