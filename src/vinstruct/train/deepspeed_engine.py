"""Strategy `deepspeed`: DeepSpeed ZeRO (stage 1, 2 or 3) built by accelerate, under the same loop.

Sampler, loss normalisation, schedule, metrics and checkpoint layout are the trainer's own; what
differs is said here, with why:

- The engine owns the update. `accelerator.backward` runs DeepSpeed's backward and, on the last
  micro-batch of a step, its gradient reduction, clipping (`gradient_clipping`) and AdamW step.
  The loss given to it is already divided by the supervised tokens of the whole global batch, so
  DeepSpeed is told not to divide by the accumulation steps again (`scale_wrt_gas=False`); it
  averages over processes, which the trainer's ×processes factor undoes, as under DDP.
- The schedule is the trainer's LambdaLR on the AdamW it built; DeepSpeed steps that AdamW on its
  flat fp32 partitions but keeps the parameter-group dicts the schedule writes the lr into.
- Every process must run the same graph on every micro-batch: ZeRO-2 reduces gradients in the
  order backward produces them, and ZeRO-3 gathers each module's weights collectively when it runs.
  Micro-batches of one step may differ in modality between processes, so a text-only micro-batch
  runs the projector (and the vision tower, unless features are cached) on one blank image and
  adds the result times zero to the embeddings, where an image batch splices its features.
- Checkpoints: `model/` holds full weights, gathered one parameter at a time: the fp32 master
  copy of trainable parameters, frozen ones as the engine holds them, cast back to the dtypes they
  had before (so bf16-rounded under bf16). Each process writes its optimizer partition (AdamW
  moments and fp32 master slice) to `optimizer-rank<R>.safetensors`; resuming needs the same
  number of processes and ZeRO stage.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from vinstruct.errors import VinstructError
from vinstruct.train.config import TrainConfig
from vinstruct.train.deepspeed_config import find_ds_config, read_ds_config, resolve_ds_config, zero_stage
from vinstruct.train.step import TrainStep


class AlignedTrainStep(TrainStep):
    """TrainStep whose text-only micro-batches run the image path too (on one blank image, times zero)."""

    def __init__(self, model: nn.Module, cached_features: bool):
        super().__init__(model)
        self.cached_features = cached_features

    def blank_image(self, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(pixel_values, vision_features) of one blank image, in the form image batches come in."""
        vision = self.model.vision_tower.config
        if self.cached_features:
            return None, torch.zeros(1, self.model.num_image_tokens, vision.hidden_size, device=device)
        return torch.zeros(1, vision.num_channels, vision.image_size, vision.image_size, device=device), None

    def forward(self, input_ids, attention_mask, labels, pixel_values=None, vision_features=None):
        if pixel_values is not None or vision_features is not None:
            return super().forward(input_ids, attention_mask, labels, pixel_values, vision_features)
        features = self.image_features(*self.blank_image(input_ids.device))
        embeds = self.model.embed_inputs(input_ids) + features.sum() * 0.0
        return self.token_loss(embeds, attention_mask, labels)


def llm_hidden_size(model: nn.Module) -> int:
    config = model.llm.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.hidden_size)


class DeepSpeedRun:
    """The engine and its accelerator, behind the calls the training loop makes."""

    def __init__(self, accelerator, engine, stage: int, dtypes: dict[str, torch.dtype]):
        self.accelerator, self.engine, self.stage, self.dtypes = accelerator, engine, stage, dtypes
        self.stepped = False

    @property
    def sharded(self) -> bool:
        """ZeRO-3: no process holds whole weights outside a forward."""
        return self.stage == 3

    def set_boundary(self, last_micro_batch: bool) -> None:
        self.accelerator.sync_gradients = last_micro_batch

    def backward(self, loss: torch.Tensor, scale: float) -> None:
        if scale == 0.0:
            return  # no supervised token in the whole step (on every process): no backward, no update
        self.accelerator.backward(loss * scale, scale_wrt_gas=False)
        self.stepped = self.stepped or self.accelerator.sync_gradients

    def grad_norm(self) -> float:
        """The step's gradient norm before clipping (0 for a skipped step)."""
        if not self.stepped:
            return 0.0
        self.stepped = False
        norm = self.engine.get_global_grad_norm()
        return float("nan") if norm is None else float(norm)

    # ---- checkpoints ---------------------------------------------------------------------------------
    def full_model_state(self, is_main: bool) -> dict[str, torch.Tensor]:
        """The training module's whole state dict on rank 0; every process takes part in the gathers."""
        import deepspeed
        from deepspeed.utils import safe_get_full_fp32_param

        state: dict[str, torch.Tensor] = {}
        gathered: dict[int, torch.Tensor | None] = {}  # tied weights: gathered once, stored as one tensor
        for name, value in self.engine.module.state_dict(keep_vars=True).items():
            if not isinstance(value, nn.Parameter):  # buffers are never partitioned
                full = value.detach().cpu() if is_main else None
            elif id(value) in gathered:
                full = gathered[id(value)]
            else:
                full = safe_get_full_fp32_param(value) if value.requires_grad else None
                if full is None:
                    with deepspeed.zero.GatheredParameters([value]):  # ZeRO-3 only; a no-op on stages 1 and 2
                        full = value.detach().clone() if is_main else None
                full = full.to("cpu", self.dtypes.get(name, full.dtype)) if is_main else None
                gathered[id(value)] = full
            if is_main:
                state[name] = full
        return state

    def _partition(self) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
        """(our AdamW inside DeepSpeed's optimizer, this process's flat fp32 master slices it steps)."""
        zero = self.engine.optimizer
        for name in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat"):  # stages 1-2, 3
            if hasattr(zero, name):
                return zero.optimizer, list(getattr(zero, name))
        raise VinstructError(f"{type(zero).__name__}: unknown DeepSpeed optimizer; cannot save its state")

    def optimizer_state(self) -> dict:
        """This process's partition: fp32 master slices, AdamW's state for each, the group settings (lr...)."""
        base, masters = self._partition()
        return {"zero_stage": self.stage, "master": [t.detach() for t in masters],
                "moments": [dict(base.state.get(t, {})) for t in masters],
                "groups": [{k: v for k, v in group.items() if k != "params"} for group in base.param_groups]}

    def load_optimizer_state(self, state: dict, where: str) -> None:
        base, masters = self._partition()
        saved = state.get("master", [])
        if (state.get("zero_stage") != self.stage or len(state.get("groups", [])) != len(base.param_groups)
                or [tuple(t.shape) for t in saved] != [tuple(t.shape) for t in masters]):
            raise VinstructError(f"{where}: cannot resume: written under ZeRO stage {state.get('zero_stage')} "
                                 f"with another partitioning; this run uses stage {self.stage}")
        with torch.no_grad():
            for master, value, moments in zip(masters, saved, state["moments"]):
                master.copy_(value.to(master.device, master.dtype))
                base.state[master] = {key: (v if key == "step" or not torch.is_tensor(v)
                                            else v.to(master.device, master.dtype)) for key, v in moments.items()}
        for group, settings in zip(base.param_groups, state["groups"]):
            group.update(settings)


def prepare(step_module: TrainStep, optimizer: torch.optim.Optimizer, cfg: TrainConfig, world_size: int):
    """(engine, optimizer for the loop, DeepSpeedRun) from the module and the AdamW the trainer built."""
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)  # keep the progress bar readable
    path = find_ds_config(cfg.deepspeed_config)
    config = resolve_ds_config(read_ds_config(path), cfg, world_size, llm_hidden_size(step_module.model),
                               str(path))
    dtypes = {name: t.dtype for name, t in step_module.state_dict().items()}
    # zero3_init_flag off: the model is already built; ZeRO-3 partitions it when the engine is made.
    plugin = DeepSpeedPlugin(hf_ds_config=config, zero3_init_flag=False)
    accelerator = Accelerator(deepspeed_plugin=plugin, mixed_precision="bf16" if cfg.precision == "bf16" else "no")
    engine, engine_optimizer = accelerator.prepare(step_module, optimizer)
    return engine, engine_optimizer, DeepSpeedRun(accelerator, engine, zero_stage(config), dtypes)
