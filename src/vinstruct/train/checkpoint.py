"""Training checkpoints that survive kill -9: written to a temp directory, then renamed.

  <output_dir>/checkpoints/step-000120/
    model/                  vinstruct checkpoint (for LoRA: base LLM + trained projector)
    adapter/                LoRA adapter in peft's format (LoRA runs only)
    optimizer.safetensors   full optimizer state (see state_io); under DeepSpeed instead
    optimizer-rank<R>.safetensors  each process's optimizer partition
    rng-rank<R>.safetensors RNG states of each process
    trainer_state.json      step, epoch, scheduler, counters, the run's config
A directory named step-* is complete by construction; leftovers of an
interrupted save (.step-*.tmp) are removed at the next start.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from vinstruct.data.formats import write_json
from vinstruct.errors import VinstructError
from vinstruct.train import lora as lora_mod
from vinstruct.train.distributed import DistEnv, full_states
from vinstruct.train.state_io import rng_state, save_state

_STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"
# Options that decide which samples each step sees: a resumed run must keep them.
PLAN_KEYS = ("per_device_batch_size", "seed", "group_by_length", "group_window", "data", "stage")


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def remove_partial_saves(output_dir: str | Path) -> None:
    root = checkpoints_dir(output_dir)
    if root.is_dir():
        for path in root.glob(".step-*.tmp"):
            shutil.rmtree(path, ignore_errors=True)


def optimizer_file(checkpoint: Path, env: DistEnv) -> Path:
    return checkpoint / (f"optimizer-rank{env.rank}.safetensors" if env.strategy == "deepspeed"
                         else "optimizer.safetensors")


def save_weights(model, wrapped_state: dict, directory: Path, merge_lora: bool) -> None:
    """Write `model/` (and `adapter/` for unmerged LoRA) under directory from a full state dict."""
    from vinstruct.model.io import save_model

    if lora_mod.is_lora(model):
        if merge_lora:
            save_model(model, directory / "model", state_dict=lora_mod.merged_state(model, wrapped_state))
            return
        save_model(model, directory / "model", state_dict=lora_mod.base_state(wrapped_state))
        lora_mod.save_adapter(model, wrapped_state, directory / "adapter")
        return
    save_model(model, directory / "model", state_dict=wrapped_state)


def save_checkpoint(output_dir: str | Path, step: int, model, wrapped, optimizer, scheduler, env: DistEnv,
                    trainer_state: dict, keep_last: int) -> Path | None:
    """Save everything needed to resume at `step`; every process must call it (collective under FSDP)."""
    root = checkpoints_dir(output_dir)
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    env.barrier()
    save_state(rng_state(), tmp / f"rng-rank{env.rank}.safetensors")
    if env.engine is not None:  # DeepSpeed: optimizer state stays partitioned, one file per process
        save_state(env.engine.optimizer_state(), optimizer_file(tmp, env))
    env.barrier()  # every process's file is in place before rank 0 renames the directory
    model_state, optim_state = full_states(wrapped, optimizer, env)
    if env.is_main:
        # The model's own state dict keys (the training wrapper holds the model as `model.`).
        model_state = {k[len("model."):]: v for k, v in model_state.items() if k.startswith("model.")}
        save_weights(model, model_state, tmp, merge_lora=False)
        if optim_state is not None:
            save_state(optim_state, optimizer_file(tmp, env))
        state = dict(trainer_state, step=step, scheduler=scheduler.state_dict(), world_size=env.world_size,
                     strategy=env.strategy)
        write_json(tmp / STATE_FILE, state)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    env.barrier()
    return final if env.is_main else None


def read_trainer_state(checkpoint: Path) -> dict:
    path = checkpoint / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise VinstructError(f"{path}: cannot read ({err})") from None


def check_resumable(state: dict, config: dict, world_size: int, strategy: str, checkpoint: Path) -> None:
    """Refuse to resume with options that would change which samples each step sees."""
    saved = state.get("config", {})
    for key in PLAN_KEYS:
        if saved.get(key) != config.get(key):
            raise VinstructError(f"{checkpoint}: cannot resume: it was written with {key}={saved.get(key)!r}, "
                                 f"this run has {key}={config.get(key)!r}")
    for keyed_apart in ("fsdp", "deepspeed"):
        if (state.get("strategy") == keyed_apart) != (strategy == keyed_apart):
            raise VinstructError(f"{checkpoint}: cannot resume: written under strategy {state.get('strategy')!r}, "
                                 f"this run uses {strategy!r} (optimizer state is keyed differently)")
    if strategy == "deepspeed" and state.get("world_size") != world_size:
        raise VinstructError(f"{checkpoint}: cannot resume: its DeepSpeed optimizer partitions are for "
                             f"{state.get('world_size')} processes, this run has {world_size}")
    if saved.get("grad_accum", 1) * state.get("world_size", 1) != config.get("grad_accum", 1) * world_size:
        raise VinstructError(f"{checkpoint}: cannot resume: the global batch changed "
                             f"(grad_accum x processes was {saved.get('grad_accum')} x {state.get('world_size')})")
