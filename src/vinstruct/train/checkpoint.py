"""Training checkpoints that survive kill -9 and are checked before they are resumed from.

  <output_dir>/checkpoints/step-000120/
    model/                  vinstruct checkpoint (for LoRA: base LLM + trained projector)
    adapter/                LoRA adapter in peft's format (LoRA runs only)
    optimizer.safetensors   full optimizer state (see state_io); under DeepSpeed instead
    optimizer-rank<R>.safetensors  each process's optimizer partition
    rng-rank<R>.safetensors RNG states of each process
    trainer_state.json      step, epoch, scheduler, counters, the run's config
    manifest.json           size and sha256 of every file above, written last (manifest.py)

A checkpoint is written to .step-N.tmp and renamed once complete; leftovers of an interrupted
save are removed at the next start. Older checkpoints are deleted (keep_last) only after the new
one is in place and its files check out. On resume the newest checkpoint whose files match its
manifest is used; damaged newer ones are reported and set aside as step-N.damaged.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import torch

from vinstruct.atomic import AtomicDirectory
from vinstruct.data.formats import write_json
from vinstruct.errors import VinstructError
from vinstruct.train import lora as lora_mod
from vinstruct.train.distributed import DistEnv, full_states
from vinstruct.train.manifest import checksum_problem, loading_problem, read_manifest, size_problem, write_manifest
from vinstruct.train.state_io import rng_state, save_state
from vinstruct.train.step import TrainStep

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"
# Options that decide which samples each step sees: a resumed run must keep them.
PLAN_KEYS = ("per_device_batch_size", "seed", "group_by_length", "group_window", "data", "stage")


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def step_directories(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Every checkpoints/step-N directory, complete or not, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Checkpoints that look complete (they hold trainer_state.json), oldest first."""
    return [(step, path) for step, path in step_directories(output_dir) if (path / STATE_FILE).is_file()]


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    return checkpoints_dir(output_dir) / f"step-{step:06d}"


def checkpoint_step(checkpoint: Path) -> int:
    return int(_STEP_DIR.match(checkpoint.name).group(1))


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
    final = checkpoint_path(output_dir, step)
    if (final / STATE_FILE).is_file():
        # Only a run resumed from this very checkpoint, with no step taken since, gets here (the end of a
        # finished run): it holds this state already, and replacing it would leave a moment without it.
        env.barrier()
        return final if env.is_main else None
    # Every process writes its own files into the same staging directory; process 0 renames it into place.
    tmp = root / f".step-{step:06d}.tmp"
    staging = AtomicDirectory(final, temp=tmp) if env.is_main else None
    env.barrier()
    save_state(rng_state(), tmp / f"rng-rank{env.rank}.safetensors")
    if env.engine is not None:  # DeepSpeed: optimizer state stays partitioned, one file per process
        save_state(env.engine.optimizer_state(), optimizer_file(tmp, env))
    env.barrier()  # every process's file is in place before rank 0 renames the directory
    model_state, optim_state = full_states(wrapped, optimizer, env)
    problem = None
    poisoned = _non_finite_tensor(model_state) if env.is_main else None
    if env.sum(1 if poisoned else 0):  # every process learns it: all stop here, none waits for the others
        if staging is not None:
            staging.abort()
        raise VinstructError(f"step {step}: " + (f"the weights hold NaN or infinite values ({poisoned})"
                                                 if poisoned else "process 0 found non-finite weights")
                             + "; checkpoint not written (the newest one on disk is kept)")
    if env.is_main:
        model_state = TrainStep.model_state(model_state)
        save_weights(model, model_state, tmp, merge_lora=False)
        if optim_state is not None:
            save_state(optim_state, optimizer_file(tmp, env))
        state = dict(trainer_state, step=step, scheduler=scheduler.state_dict(), world_size=env.world_size,
                     strategy=env.strategy)
        write_json(tmp / STATE_FILE, state)
        manifest = write_manifest(tmp)  # last: it vouches for every file above
        staging.commit()  # replaces a step directory without trainer_state.json (not a checkpoint)
        problem = size_problem(final, manifest)
        if not problem:  # older checkpoints go only once this one is in place and checks out
            for _, old in list_checkpoints(output_dir)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    if env.sum(1 if problem else 0):
        raise VinstructError(f"{final}: the checkpoint just written does not check out "
                             f"({problem or 'process 0 says why'}); older checkpoints are kept")
    return final if env.is_main else None


def _non_finite_tensor(state: dict) -> str | None:
    """The first floating-point tensor holding a NaN or infinity, by name (a checkpoint must never hold one)."""
    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            return name.removeprefix("model.")  # as in model.safetensors
    return None


def checkpoint_problem(checkpoint: Path) -> tuple[str | None, bool]:
    """(why `checkpoint` cannot be resumed from or None, whether a manifest vouched for it)."""
    if not (checkpoint / STATE_FILE).is_file():
        return f"{STATE_FILE} is missing", False
    try:
        manifest = read_manifest(checkpoint)
    except ValueError as err:
        return str(err), False
    if manifest is None:
        return loading_problem(checkpoint), False
    return checksum_problem(checkpoint, manifest), True


def find_intact_checkpoint(output_dir: str | Path, keep_last: int) -> Path | None:
    """The newest checkpoint that checks out, or None when there is none at all; damaged newer ones are
    reported (one warning line each) and renamed step-N.damaged. Raises when every checkpoint is damaged."""
    candidates = list(reversed(step_directories(output_dir)))
    damaged: list[tuple[Path, str]] = []
    for _, path in candidates:
        problem, verified = checkpoint_problem(path)
        if problem is None:
            if not verified:
                log.warning("%s has no checksum manifest (written by an earlier version): its files load and are "
                            "finite, but it is resumed from unverified", path)
            for bad, _ in damaged:
                _set_aside(bad)
            return path
        log.warning("checkpoint %s is damaged (%s); %s", path, problem,
                    "trying the one before it" if path != candidates[-1][1] else "no older checkpoint is left")
        damaged.append((path, problem))
    if not damaged:
        return None
    hint = (" (keep_last: 1 keeps no older checkpoint to fall back to; 2 or more does)" if keep_last < 2 else "")
    raise VinstructError(f"{checkpoints_dir(output_dir)}: no intact checkpoint to resume from: "
                         + "; ".join(f"{p.name}: {why}" for p, why in damaged) + hint)


def _set_aside(path: Path) -> None:
    """Rename a damaged checkpoint out of the way (kept for inspection; it no longer counts as a checkpoint)."""
    target = path.with_name(path.name + ".damaged")
    shutil.rmtree(target, ignore_errors=True)
    path.rename(target)
    log.warning("moved the damaged checkpoint to %s (delete it once inspected)", target)


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
