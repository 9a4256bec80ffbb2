"""DeepSpeed configs for `strategy: deepspeed`: found, read, checked and filled from the training options.

The shipped configs (configs/deepspeed/zero2.json, zero3.json) say "auto" where a value follows
from the run, as Hugging Face's configs do. `resolve_ds_config` fills them from the TrainConfig so
that the engine and the trainer agree on what a step is:

  train_micro_batch_size_per_gpu   per_device_batch_size
  gradient_accumulation_steps      grad_accum
  train_batch_size                 per_device_batch_size x grad_accum x processes
  gradient_clipping                max_grad_norm (0: no clipping)
  bf16.enabled                     precision == "bf16"
  fp16.enabled                     false (fp16 with loss scaling is not a precision of this trainer)
  zero_optimization.reduce_bucket_size, stage3_prefetch_bucket_size, stage3_param_persistence_threshold
                                   h*h, 0.9*h*h, 10*h for the LLM's hidden size h (transformers' choice)

A value written in the file that disagrees with the options is refused, and so are "optimizer"
and "scheduler" sections: the trainer builds AdamW (its parameter groups: projector lr, no decay
on biases and norms) and the learning-rate schedule itself, as on every other strategy.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
from pathlib import Path

import torch

from vinstruct.errors import VinstructError
from vinstruct.train.config import PRESET_DIRS, TrainConfig

INSTALL_HINT = "pip install deepspeed"
# Set by `accelerate launch --use_deepspeed --deepspeed_config_file FILE`.
ACCELERATE_USE_ENV, ACCELERATE_FILE_ENV = "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_CONFIG_FILE"
HIDDEN_SIZE_KEYS = ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold")


def effective_strategy(cfg: TrainConfig, environ=os.environ) -> str:
    """`auto` means deepspeed when a DeepSpeed config was given or accelerate launched with DeepSpeed."""
    if cfg.strategy == "auto" and (cfg.deepspeed_config or environ.get(ACCELERATE_USE_ENV, "").lower() == "true"):
        return "deepspeed"
    return cfg.strategy


def require_deepspeed() -> None:
    """One-line errors when the package or the GPUs it needs are missing."""
    if importlib.util.find_spec("deepspeed") is None:
        raise VinstructError(f"strategy deepspeed needs the deepspeed package, which is not installed: "
                             f"{INSTALL_HINT} (it trains on CUDA GPUs)")
    if not torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR") != "cpu":
        raise VinstructError(f"strategy deepspeed needs CUDA GPUs and none is visible ({INSTALL_HINT} on a GPU "
                             "machine; DeepSpeed's CPU accelerator, DS_ACCELERATOR=cpu, is for small tests only)")


def find_ds_config(name: str | None, environ=os.environ) -> Path:
    """deepspeed_config as a path or a shipped name (zero2, zero3), else accelerate's config file."""
    name = name or environ.get(ACCELERATE_FILE_ENV)
    if not name or name == "none":
        raise VinstructError("strategy deepspeed needs deepspeed_config: a DeepSpeed JSON file, or zero2 / zero3 "
                             "from configs/deepspeed/ (or accelerate launch --deepspeed_config_file FILE)")
    path = Path(name)
    if path.is_file():
        return path
    for base in PRESET_DIRS:
        for candidate in (base / "deepspeed" / path, base / "deepspeed" / f"{path}.json"):
            if candidate.is_file():
                return candidate
    raise VinstructError(f"{name}: DeepSpeed config not found (a JSON file, or zero2 / zero3 from configs/deepspeed/)")


def read_ds_config(path: str | Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise VinstructError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    except OSError as err:
        raise VinstructError(f"{path}: cannot read ({err.strerror})") from None
    if not isinstance(data, dict):
        raise VinstructError(f"{path}: expected a JSON object of DeepSpeed options")
    return data


def run_values(cfg: TrainConfig, world_size: int) -> dict[str, tuple[object, str]]:
    """DeepSpeed key -> (value this run needs, the option it comes from)."""
    micro, accum = cfg.per_device_batch_size, cfg.grad_accum
    return {
        "train_micro_batch_size_per_gpu": (micro, "per_device_batch_size"),
        "gradient_accumulation_steps": (accum, "grad_accum"),
        "train_batch_size": (micro * accum * world_size, f"per_device_batch_size x grad_accum x {world_size} "
                                                          "processes"),
        "gradient_clipping": (float(cfg.max_grad_norm), "max_grad_norm"),
        "bf16.enabled": (cfg.precision == "bf16", "precision"),
        "fp16.enabled": (False, "precision; fp16 is not supported, use bf16"),
    }


def _node(config: dict, dotted: str, create: bool) -> tuple[dict | None, str]:
    *parents, leaf = dotted.split(".")
    for part in parents:
        if not isinstance(config.get(part), dict):
            if not create:
                return None, leaf
            config[part] = {}
        config = config[part]
    return config, leaf


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return isinstance(a, (int, float)) and abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))


def _autos(config, prefix: str = "") -> list[str]:
    found = []
    for key, value in config.items():
        if isinstance(value, dict):
            found += _autos(value, f"{prefix}{key}.")
        elif value == "auto":
            found.append(prefix + key)
    return found


def resolve_ds_config(raw: dict, cfg: TrainConfig, world_size: int, hidden_size: int | None,
                      where: str = "deepspeed_config") -> dict:
    """A complete DeepSpeed config for this run (a copy); one-line errors for what cannot work.

    hidden_size None: leave the hidden-size keys as they are (an early check before the model is loaded).
    """
    config = copy.deepcopy(raw)
    for section in ("optimizer", "scheduler"):
        if section in config:
            raise VinstructError(f"{where}: remove the {section!r} section: the trainer builds its AdamW and "
                                 "learning-rate schedule from the training options (lr, projector_lr, ...)")
    zero = config.get("zero_optimization")
    stage = zero.get("stage") if isinstance(zero, dict) else None
    if isinstance(stage, bool) or stage not in (1, 2, 3):
        raise VinstructError(f"{where}: zero_optimization.stage must be 1, 2 or 3, got {stage!r} "
                             "(stage 0 is plain data parallelism: use strategy ddp)")
    for key, (value, source) in run_values(cfg, world_size).items():
        node, leaf = _node(config, key, create=True)
        if node.get(leaf, "auto") == "auto":
            node[leaf] = value
        elif not _same(node[leaf], value):
            raise VinstructError(f"{where}: {key} is {json.dumps(node[leaf])} but this run needs "
                                 f"{json.dumps(value)} (from {source}); write \"auto\" or change the option")
    if hidden_size is not None:
        fills = {"reduce_bucket_size": hidden_size * hidden_size,
                 "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
                 "stage3_param_persistence_threshold": 10 * hidden_size}
        for key, value in fills.items():
            if zero.get(key) == "auto":
                zero[key] = value
        left = _autos(config)
        if left:
            raise VinstructError(f"{where}: {', '.join(left)} {'is' if len(left) == 1 else 'are'} \"auto\" but the "
                                 "trainer does not fill it; write a value")
    return config


def zero_stage(config: dict) -> int:
    return int(config["zero_optimization"]["stage"])


def check_ds_config(cfg: TrainConfig, environ=os.environ) -> Path:
    """Before anything is loaded: deepspeed usable here, and its config readable and consistent."""
    require_deepspeed()
    path = find_ds_config(cfg.deepspeed_config, environ)
    resolve_ds_config(read_ds_config(path), cfg, int(environ.get("WORLD_SIZE", "1")), None, str(path))
    return path
