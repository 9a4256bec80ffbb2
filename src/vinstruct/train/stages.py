"""What each training stage trains: the one place where parameters are frozen.

  pretrain (stage 1, feature alignment)  vision frozen, LLM frozen, projector trained
  finetune (stage 2, end to end)         vision frozen, projector + LLM trained
  finetune with LoRA                     vision frozen, LLM base frozen, LoRA adapters + projector trained
  finetune, partial (llm_train_layers=K) vision frozen, the LLM's top K decoder layers and final norm trained,
                                         embeddings / output head and lower layers frozen; with
                                         train_projector false the projector is frozen too, and then the
                                         backward pass stops at layer -K (the cheapest stage 2 there is)
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class TrainableSummary:
    vision_tower: int
    projector: int
    llm: int
    total: int
    trainable: int

    def line(self) -> str:
        share = 100.0 * self.trainable / max(self.total, 1)
        return (f"trainable parameters: {self.trainable:,} of {self.total:,} ({share:.2f} %) — "
                f"vision {self.vision_tower:,}, projector {self.projector:,}, LLM {self.llm:,}")


def freeze_for_stage(model: nn.Module, stage: str, lora: bool = False, llm_train_layers: int = 0,
                     train_projector: bool = True) -> TrainableSummary:
    """Set requires_grad on every parameter of an LlavaModel for `stage`; return the counts.

    With LoRA the adapters (parameters whose names contain 'lora_') stay trainable in the LLM.
    `llm_train_layers` > 0 trains only the LLM's top decoder layers (and its final norm) in stage 2.
    """
    model.vision_tower.requires_grad_(False)
    model.projector.requires_grad_(train_projector or stage == "pretrain")
    if stage == "pretrain":
        model.llm.requires_grad_(False)
    elif lora:
        for name, param in model.llm.named_parameters():
            param.requires_grad_("lora_" in name)
    elif llm_train_layers > 0:
        model.llm.requires_grad_(False)
        decoder = model.llm.get_decoder()
        for layer in decoder.layers[-llm_train_layers:]:
            layer.requires_grad_(True)
        if getattr(decoder, "norm", None) is not None:
            decoder.norm.requires_grad_(True)
    else:
        model.llm.requires_grad_(True)
    return trainable_summary(model)


def trainable_summary(model: nn.Module) -> TrainableSummary:
    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    return TrainableSummary(
        vision_tower=count(model.vision_tower),
        projector=count(model.projector),
        llm=count(model.llm),
        total=sum(p.numel() for p in model.parameters()),
        trainable=count(model),
    )


def vision_is_frozen(model: nn.Module) -> bool:
    return not any(p.requires_grad for p in model.vision_tower.parameters())
