"""Projectors from vision-feature space to the LLM's word-embedding space, chosen by name.

Names follow the official LLaVA code so that checkpoints map key for key:
  linear        one nn.Linear (the paper)            -> keys `weight`, `bias`
  mlp{N}x_gelu  Linear, (GELU, Linear) * (N-1)       -> keys `0.*`, `2.*`, ... (nn.Sequential indices)
  identity      features passed through unchanged (dimensions must already match)

`tokens` > 1 (a vinstruct extension, `projector_tokens` in the model config) widens the last layer to
`tokens * text_dim` outputs: each vision feature then becomes `tokens` consecutive LLM tokens (the model
splits the widened output; see LlavaModel.project). 1 is the paper's one token per feature.
"""

from __future__ import annotations

import re

from torch import nn

from vinstruct.errors import VinstructError

_MLP_GELU = re.compile(r"^mlp(\d+)x_gelu$")


def projector_names() -> list[str]:
    return ["linear", "mlp2x_gelu", "mlp{N}x_gelu", "identity"]


def build_projector(name: str, vision_dim: int, text_dim: int, tokens: int = 1) -> nn.Module:
    """Build the projector called `name` mapping `vision_dim` -> `tokens * text_dim`."""
    if tokens < 1:
        raise VinstructError(f"projector tokens per vision feature must be at least 1, got {tokens}")
    if name == "linear":
        return nn.Linear(vision_dim, text_dim * tokens)
    if name == "identity":
        if tokens != 1:
            raise VinstructError("projector 'identity' makes one token per vision feature (projector_tokens 1)")
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
        widths = [vision_dim] + [text_dim] * (depth - 1) + [text_dim * tokens]
        layers: list[nn.Module] = [nn.Linear(widths[0], widths[1])]
        for k in range(1, depth):
            layers += [nn.GELU(), nn.Linear(widths[k], widths[k + 1])]
        return nn.Sequential(*layers)
    raise VinstructError(f"unknown projector type {name!r}; expected one of {', '.join(projector_names())}")
