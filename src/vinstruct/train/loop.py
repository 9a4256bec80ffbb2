"""The training loop behind `vinstruct train` and `vinstruct.train.run_training`.

Read top to bottom: set up processes -> model for the stage (frozen parts decided in
stages.py) -> data (bad samples counted, vision features optionally cached) -> step plan
-> optimizer/schedule -> resume state -> steps (accumulate, clip, step, log, evaluate,
checkpoint) -> final export, projector file, loss curve.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vinstruct.data.formats import write_json
from vinstruct.errors import VinstructError
from vinstruct.machine import release_free_memory
from vinstruct.train import checkpoint as ckpt
from vinstruct.train import lora as lora_mod
from vinstruct.train.config import TrainConfig, as_config
from vinstruct.train.data import BatchSource, build_dataset, count_targets
from vinstruct.train.deepspeed_config import check_ds_config, effective_strategy
from vinstruct.train.distributed import (DistEnv, backward, clip_gradients, full_states, gradient_sync,
                                         load_optimizer_state, prepare_engine, setup_distributed,
                                         teardown_distributed, wrap_model)
from vinstruct.train.evaluation import model_inputs, held_out_loss, quick_exact_qa, resolve_hook, run_hooks
from vinstruct.train.features import VisionFeatureCache
from vinstruct.train.metrics import FlopModel, MetricsLog, measure_matmul_peak, plot_loss_curve
from vinstruct.train.model_init import PROJECTOR_FILE, initial_model, save_projector_file
from vinstruct.train.sampler import StepPlan
from vinstruct.train.stages import TrainableSummary, freeze_for_stage
from vinstruct.train.state_io import load_state, set_rng_state
from vinstruct.train.step import TrainStep, build_optimizer, build_scheduler

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    checkpoint: Path  # the final model directory (a vinstruct checkpoint)
    metrics: Path
    loss_curve: Path | None
    projector_file: Path | None
    adapter: Path | None
    steps: int
    final_loss: float
    trainable: TrainableSummary
    skipped: dict = field(default_factory=dict)
    empty_batches: int = 0
    timings: dict = field(default_factory=dict)


def run_training(config: TrainConfig | dict, eval_hooks: list | None = None) -> TrainResult:
    """Train one stage as configured; returns where the results are. `eval_hooks`: fn(model) -> dict."""
    cfg = as_config(config)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    strategy = effective_strategy(cfg)
    if strategy == "deepspeed":
        check_ds_config(cfg)  # before any model is loaded
    env = setup_distributed(strategy)
    try:
        return _Trainer(cfg, env, eval_hooks or []).run()
    finally:
        teardown_distributed(env)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Trainer:
    def __init__(self, cfg: TrainConfig, env: DistEnv, hooks: list):
        self.cfg, self.env = cfg, env
        self.hooks = [resolve_hook(h) for h in hooks] + ([resolve_hook(cfg.eval_hook)] if cfg.eval_hook else [])
        self.out = Path(cfg.output_dir)
        self.timings: dict[str, float] = {}
        self.empty_batches = 0
        self.last_checkpoint: Path | None = None  # the newest checkpoint of this run on disk
        # Set up by run(), in this order:
        self.model = None  # the LlavaModel being trained
        self.trainable: TrainableSummary | None = None  # what the stage trains (from freeze_for_stage)
        self.train_set = self.val_set = None  # LlavaDataset
        self.source: BatchSource | None = None  # micro-batches of the training set
        self.val_source: BatchSource | None = None
        self.vision_computed = True  # False when vision features come from the cache
        self.plan: StepPlan | None = None  # which samples each (step, micro-batch, rank) takes
        self.flops: FlopModel | None = None
        self.wrapped = None  # TrainStep(model), wrapped for the strategy (DDP / FSDP / DeepSpeed)
        self.peak_flops = 0.0  # per device, for MFU
        self.metrics: MetricsLog | None = None  # metrics.jsonl (+ TensorBoard)

    def say(self, message: str) -> None:
        if self.env.is_main and self.cfg.progress:
            tqdm.write(message)

    # ---- setup -------------------------------------------------------------------------------------
    def _resume_point(self) -> Path | None:
        env = self.env
        if env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            ckpt.remove_partial_saves(self.out)
        env.barrier()
        latest = ckpt.latest_checkpoint(self.out)
        if latest is not None and not self.cfg.resume:
            raise VinstructError(f"{self.out}: holds checkpoints ({latest.name}); pass --resume to continue "
                                 "that run or choose another output_dir")
        if not self.cfg.resume:
            return None
        # Process 0 checks the checkpoints (and sets damaged ones aside); all resume from its choice.
        # Its answer, as a number, reaches every process through a sum that only process 0 adds to:
        # step + 1 of the checkpoint, 0 when there is none, -1 when none is intact.
        answer, error = 0, None
        if env.is_main:
            try:
                chosen = ckpt.find_intact_checkpoint(self.out, self.cfg.keep_last)
                answer = ckpt.checkpoint_step(chosen) + 1 if chosen is not None else 0
            except Exception as err:  # noqa: BLE001 - raised below, once the other processes know
                answer, error = -1, err
        answer = int(env.sum(answer))
        if error is not None:
            raise error
        if answer < 0:
            raise VinstructError(f"{ckpt.checkpoints_dir(self.out)}: no intact checkpoint to resume from "
                                 "(process 0 says why)")
        if answer == 0:
            self.say(f"resume: no checkpoint in {ckpt.checkpoints_dir(self.out)}, starting from the beginning")
            return None
        return ckpt.checkpoint_path(self.out, answer - 1)

    def _build_model(self, resume_dir: Path | None):
        _seed_everything(self.cfg.seed)
        model = initial_model(self.cfg, resume_dir / "model" if resume_dir else None)
        if self.cfg.lora:
            adapter = resume_dir / "adapter" if resume_dir else None
            if adapter is not None and adapter.is_dir():
                lora_mod.load_adapter(model, adapter)
            else:
                c = self.cfg
                lora_mod.attach_lora(model, c.lora_r, c.lora_alpha, c.lora_dropout, c.lora_target_modules)
            if self.cfg.precision == "bf16":  # every forward runs under autocast (self.autocast)
                lora_mod.skip_input_casts(model)
        c = self.cfg
        self.trainable = freeze_for_stage(model, c.stage, c.lora, c.llm_train_layers, c.train_projector)
        self.say(self.trainable.line())
        model.to(self.env.device).train()
        if self.cfg.gradient_checkpointing:
            model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model

    def _build_data(self, model):
        c = self.cfg
        template = c.data_template(model)
        started = time.perf_counter()
        self.train_set = build_dataset(c.data, model, template, c.max_length, c.image_dir, c.on_bad_sample,
                                       c.long_samples)
        self.val_set = build_dataset(c.val_data, model, template, c.max_length, c.image_dir, c.on_bad_sample,
                                     c.long_samples) if c.val_data else None
        cache = val_cache = None
        if c.cache_vision_features:
            cache = VisionFeatureCache().build(model, self.train_set, progress=self.env.is_main and c.progress)
            if self.val_set is not None:
                val_cache = VisionFeatureCache().build(model, self.val_set, progress=False)
        self.timings["data_s"] = time.perf_counter() - started
        pad = model.tokenizer.pad_token_id
        self.source = BatchSource(self.train_set, pad, cache, c.num_workers)
        self.val_source = BatchSource(self.val_set, pad, val_cache, 0) if self.val_set is not None else None
        self.vision_computed = cache is None
        self.say(f"data: {len(self.train_set)} training samples ({sum(self.train_set.has_image)} with images), "
                 f"template {template!r}" + (f"; {self.train_set.skipped.summary()}" if self.train_set.skipped.total
                                             else ""))

    def _restore(self, resume_dir: Path, optimizer, scheduler) -> int:
        state = ckpt.read_trainer_state(resume_dir)
        ckpt.check_resumable(state, self.cfg.to_dict(), self.env.world_size, self.env.strategy, resume_dir)
        optimizer_file = ckpt.optimizer_file(resume_dir, self.env)
        load_optimizer_state(self.wrapped, optimizer, load_state(optimizer_file), self.env, str(optimizer_file))
        scheduler.load_state_dict(state["scheduler"])
        rng_file = resume_dir / f"rng-rank{self.env.rank}.safetensors"
        set_rng_state(load_state(rng_file if rng_file.is_file() else resume_dir / "rng-rank0.safetensors"))
        self.say(f"resumed from {resume_dir} at step {state['step']}")
        return int(state["step"])

    # ---- the run -----------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        started = time.perf_counter()
        c, env = self.cfg, self.env
        resume_dir = self.last_checkpoint = self._resume_point()
        model = self.model = self._build_model(resume_dir)
        self._build_data(model)
        self.plan = StepPlan(self.train_set.lengths, self.train_set.has_image, c.per_device_batch_size,
                             c.grad_accum, env.world_size, c.seed, c.group_by_length, c.group_window)
        total = self.plan.total_steps(c.epochs, c.max_steps)
        self.flops = FlopModel.of(model)  # counted before ZeRO-3 partitions the parameters
        self.wrapped = wrap_model(TrainStep(model), env, c.cache_vision_features)
        optimizer = build_optimizer(self.wrapped, c.lr, c.projector_lr, c.weight_decay,
                                    (c.adam_beta1, c.adam_beta2), c.adam_eps)
        scheduler = build_scheduler(optimizer, c.lr_scheduler, c.warmup_ratio, total)
        self.wrapped, optimizer = prepare_engine(self.wrapped, optimizer, c, env)
        start = self._restore(resume_dir, optimizer, scheduler) if resume_dir is not None else 0
        self.peak_flops = c.peak_flops or measure_matmul_peak(env.device, torch.bfloat16 if c.precision == "bf16"
                                                        else torch.float32)
        metrics_path = self.out / "metrics.jsonl"
        self.metrics = MetricsLog(metrics_path, start if resume_dir is not None else None,
                              self.out / "tensorboard" if c.tensorboard else None, env.is_main)
        if env.is_main:
            write_json(self.out / "train_config.json", c.to_dict())
        last_loss = self._train_steps(start, total, optimizer, scheduler)
        self.metrics.close()
        return self._finish(total, last_loss, optimizer, scheduler, started, metrics_path)

    def autocast(self):
        if self.cfg.precision == "bf16":
            return torch.autocast(self.env.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _train_steps(self, start: int, total: int, optimizer, scheduler) -> float:
        c, env = self.cfg, self.env
        lists = [mb for s in range(start, total) for mb in self.plan.step_batches(s, env.rank)]
        batches = self.source.iterate(lists)
        bar = tqdm(total=total, initial=start, desc=f"train {c.stage}", unit="step",
                   disable=not (env.is_main and c.progress))
        window = {"samples": 0, "tokens": 0, "flops": 0.0, "since": time.perf_counter()}
        loss = float("nan")
        train_started = time.perf_counter()
        for step in range(start, total):
            micro = [next(batches) for _ in range(c.grad_accum)]
            loss, grad_norm = self._one_step(step, micro, optimizer, scheduler, window)
            bar.update(1)
            done = step + 1
            if c.release_memory_every and done % c.release_memory_every == 0 and self.env.device.type == "cpu":
                release_free_memory()
            if done % c.log_every == 0 or done == total:
                row = self._log_row(done, loss, grad_norm, scheduler, window)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{row['lr']:.2e}", sps=f"{row['samples_per_s']:.1f}",
                                tps=f"{row['tokens_per_s']:.0f}", mfu=f"{100 * row['mfu']:.1f}%")
            if c.eval_every and (done % c.eval_every == 0 or done == total):
                self._evaluate(done)
            if c.save_every and done % c.save_every == 0 and done != total:
                self._save_checkpoint(done, optimizer, scheduler)
        bar.close()
        self.timings["train_s"] = time.perf_counter() - train_started
        return loss

    def _one_step(self, step: int, micro: list[dict], optimizer, scheduler, window: dict) -> tuple[float, float]:
        c, env = self.cfg, self.env
        global_tokens = env.sum(sum(count_targets(b) for b in micro))
        if global_tokens == 0:
            ids = [i for b in micro for i in b.get("ids", [])]
            message = f"step {step + 1}: no supervised tokens in the whole batch (labels all -100; samples {ids[:8]})"
            if c.on_bad_sample == "fail":
                raise VinstructError(message)
            log.warning("%s; the optimizer step is skipped", message)
            self.empty_batches += 1
        loss_sum = 0.0
        for index, batch in enumerate(micro):
            batch = self._usable(batch, step)
            with gradient_sync(self.wrapped, env, enabled=index == len(micro) - 1):
                with self.autocast():
                    micro_loss, _ = self.wrapped(**model_inputs(batch, env.device))
                scale = env.world_size / global_tokens if global_tokens else 0.0
                backward(micro_loss, scale, env)
            loss_sum += float(micro_loss.detach())
            self._count(batch, window)
        grad_norm = clip_gradients(self.wrapped, c.max_grad_norm, env)
        loss = env.sum(loss_sum) / global_tokens if global_tokens else float("nan")  # nan: a skipped step
        if global_tokens:
            self._stop_unless_finite(step, loss, grad_norm)
            optimizer.step()
            scheduler.step()
        else:
            with warnings.catch_warnings():  # the schedule keeps its pace over a skipped step
                warnings.simplefilter("ignore", UserWarning)
                scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss, grad_norm

    def _stop_unless_finite(self, step: int, loss: float, grad_norm: float) -> None:
        """Stop before a NaN or infinity reaches the weights or a checkpoint. The loss is summed over every
        micro-batch and process, and the gradient norm is taken after the all-reduce, so every process
        sees the same numbers and all stop together, at the same step. (DeepSpeed steps inside its
        backward and reports no norm on some paths: there the loss is checked, at the latest one step on.)"""
        checks = [("loss", loss)] + ([("gradient norm", grad_norm)] if self.env.engine is None else [])
        for name, value in checks:
            if not math.isfinite(value):
                kept = (f"the last checkpoint is {self.last_checkpoint}" if self.last_checkpoint
                        else "no checkpoint was written before it")
                raise VinstructError(f"step {step + 1}: the {name} is {value}; training stopped without saving "
                                     f"anything ({kept})")

    def _usable(self, batch: dict, step: int) -> dict:
        """A batch to run; one whose samples all failed to load becomes a no-loss placeholder so
        that every process still takes part in the step's collectives."""
        if batch.get("input_ids") is not None:
            if count_targets(batch) == 0:
                log.warning("step %d: a micro-batch has no supervised tokens (samples %s)", step + 1, batch["ids"][:8])
                self.empty_batches += 1
            return batch
        self.empty_batches += 1
        pad = self.model.tokenizer.pad_token_id
        return {"input_ids": torch.tensor([[pad]]), "attention_mask": torch.ones(1, 1, dtype=torch.long),
                "labels": torch.full((1, 1), -100), "ids": []}

    def _count(self, batch: dict, window: dict) -> None:
        if not batch["ids"]:
            return
        rows, width = batch["input_ids"].shape
        images = int(batch["pixel_values"].shape[0]) if batch.get("pixel_values") is not None else (
            int(batch["vision_features"].shape[0]) if batch.get("vision_features") is not None else 0)
        window["samples"] += rows
        window["tokens"] += int(batch["attention_mask"].sum())
        window["flops"] += self.flops.step_flops(rows, width, images, count_targets(batch), self.vision_computed)

    def _log_row(self, step: int, loss: float, grad_norm: float, scheduler, window: dict) -> dict:
        env = self.env
        elapsed = max(time.perf_counter() - window["since"], 1e-9)
        samples, tokens, flops = env.sum(window["samples"]), env.sum(window["tokens"]), env.sum(window["flops"])
        row = {"kind": "train", "step": step, "epoch": round(step / self.plan.steps_per_epoch, 4), "loss": loss,
               "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm, "samples_per_s": samples / elapsed,
               "tokens_per_s": tokens / elapsed, "mfu": flops / elapsed / (self.peak_flops * env.world_size)}
        self.metrics.write(row)
        window.update(samples=0, tokens=0, flops=0.0, since=time.perf_counter())
        return row

    def _evaluate(self, step: int) -> dict:
        c = self.cfg
        row: dict = {"kind": "eval", "step": step}
        if self.val_source is not None:
            row["eval_loss"] = held_out_loss(self.wrapped, self.val_source, self.env, c.per_device_batch_size,
                                             c.eval_max_samples, self.autocast)
        if c.eval_questions and not self.env.sharded and self.env.is_main:
            row.update(quick_exact_qa(self.model, c.eval_questions, c.image_dir, c.eval_max_questions))
        row.update(run_hooks(self.model, self.hooks, self.env))
        if len(row) > 2:
            self.metrics.write(row)
            self.say("eval @ step {}: {}".format(step, ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else
                                                                   f"{k} {v}" for k, v in row.items()
                                                                   if k not in ("kind", "step"))))
        return row

    def _trainer_state(self) -> dict:
        return {"config": self.cfg.to_dict(), "steps_per_epoch": self.plan.steps_per_epoch}

    def _save_checkpoint(self, step: int, optimizer, scheduler) -> None:
        started = time.perf_counter()
        ckpt.save_checkpoint(self.out, step, self.model, self.wrapped, optimizer, scheduler, self.env,
                             self._trainer_state(), self.cfg.keep_last)
        self.last_checkpoint = ckpt.checkpoint_path(self.out, step)
        self.timings["checkpoint_s"] = self.timings.get("checkpoint_s", 0.0) + time.perf_counter() - started

    # ---- the end -----------------------------------------------------------------------------------
    def _finish(self, total: int, last_loss: float, optimizer, scheduler, started: float,
                metrics_path: Path) -> TrainResult:
        c, env = self.cfg, self.env
        self._save_checkpoint(total, optimizer, scheduler)
        model_state, _ = full_states(self.wrapped, optimizer, env) if env.strategy in ("fsdp", "deepspeed") \
            else (None, None)
        final = self.out / "model"
        projector = curve = adapter = None
        if env.is_main:
            state = self.model.state_dict() if model_state is None else TrainStep.model_state(model_state)
            ckpt.save_weights(self.model, state, self.out, merge_lora=c.lora_merge)
            adapter = self.out / "adapter" if c.lora and not c.lora_merge else None
            if c.write_projector_file:
                proj_state = {k[len("projector."):]: v for k, v in state.items() if k.startswith("projector.")}
                projector = save_projector_file(self.model, self.out / PROJECTOR_FILE, proj_state)
            if c.loss_curve:
                curve = plot_loss_curve(metrics_path, self.out / "loss_curve.png", f"{c.stage}: loss per step")
        env.barrier()
        self.timings["total_s"] = time.perf_counter() - started
        skipped = dict(self.train_set.skipped.counts)
        self.say(f"done: {total} steps, final loss {last_loss:.4f}; model in {final}")
        return TrainResult(final, metrics_path, curve, projector, adapter, total, last_loss, self.trainable,
                           skipped, self.empty_batches, dict(self.timings))
