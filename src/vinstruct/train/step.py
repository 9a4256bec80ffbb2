"""One micro-batch forward as a module (so DDP/FSDP see the whole computation), the optimizer
and the learning-rate schedule.

The forward returns the *sum* of token losses and the number of supervised
tokens; the loop divides by the token count of the whole global batch, so the
gradient is the same however the batch is split over processes and
accumulation steps. Logits are computed only where a label is supervised.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup, \
    get_linear_schedule_with_warmup

from vinstruct.data.encoding import IGNORE_INDEX
from vinstruct.model.positions import positions_from_mask
from vinstruct.train.stages import vision_is_frozen


class TrainStep(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @staticmethod
    def model_state(wrapped_state: dict) -> dict:
        """The model's own state dict out of this wrapper's (which holds the model as `model.`)."""
        return {k.removeprefix("model."): v for k, v in wrapped_state.items() if k.startswith("model.")}

    def image_features(self, pixel_values, vision_features):
        model = self.model
        if vision_features is None:
            if pixel_values is None:
                return None
            if vision_is_frozen(model):
                with torch.no_grad():
                    vision_features = model.vision_features(pixel_values)
            else:
                vision_features = model.vision_features(pixel_values)
        return model.project(vision_features)

    def forward(self, input_ids, attention_mask, labels, pixel_values=None, vision_features=None,
                turn_segments=None, position_ids=None):
        model = self.model
        features = self.image_features(pixel_values, vision_features)
        embeds = model.embed_inputs(input_ids, image_features=features)
        loss_sum, supervised = self.token_loss(embeds, attention_mask, labels, turn_segments, position_ids)
        if features is None:
            # A text-only batch does not use the projector; a zero-valued term keeps its parameters in
            # the graph so that every process reduces the same gradients (DDP, FSDP).
            loss_sum = loss_sum + sum(p.sum() for p in model.projector.parameters() if p.requires_grad) * 0.0
        return loss_sum, supervised

    def token_loss(self, embeds, attention_mask, labels, turn_segments=None, position_ids=None):
        """(sum of token losses, number of supervised tokens) of the LLM run on input embeddings."""
        model = self.model
        mask, positions = attention_mask, positions_from_mask(attention_mask)
        if turn_segments is not None:
            mask, positions = independent_turn_mask(attention_mask, turn_segments), position_ids
        hidden = model.llm.get_decoder()(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False,
        ).last_hidden_state
        targets = labels[:, 1:]
        supervised = targets != IGNORE_INDEX
        logits = model.llm.get_output_embeddings()(hidden[:, :-1][supervised])
        return F.cross_entropy(logits.float(), targets[supervised], reduction="sum"), supervised.sum()


def independent_turn_mask(attention_mask: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """[B, 1, T, T] boolean mask (True = may attend): causal, no padding, and a token of exchange k
    sees the shared prefix (segment 0) and exchange k only. transformers takes a 4-D mask as given."""
    length = attention_mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    visible = (segments[:, :, None] == segments[:, None, :]) | (segments[:, None, :] == 0)
    allowed = causal & visible & attention_mask.bool()[:, None, :]
    allowed |= torch.eye(length, dtype=torch.bool, device=attention_mask.device)  # padding rows see themselves
    return allowed[:, None]


def _no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")


def build_optimizer(wrapped: nn.Module, lr: float, projector_lr: float | None, weight_decay: float,
                    betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
    """AdamW over trainable parameters; projector at its own lr; no decay on biases and norms."""
    groups: dict[tuple[float, float], list] = {}
    for name, param in wrapped.named_parameters():
        if not param.requires_grad:
            continue
        group_lr = projector_lr if projector_lr is not None and ".projector." in f".{name}" else lr
        decay = 0.0 if _no_decay(name, param) else weight_decay
        groups.setdefault((group_lr, decay), []).append(param)
    param_groups = [{"params": params, "lr": group_lr, "weight_decay": decay}
                    for (group_lr, decay), params in sorted(groups.items())]
    return torch.optim.AdamW(param_groups, lr=lr, betas=betas, eps=eps)


def build_scheduler(optimizer, kind: str, warmup_ratio: float, total_steps: int):
    warmup = math.ceil(warmup_ratio * total_steps)  # as transformers' Trainer counts warmup steps
    if kind == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    if kind == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)
