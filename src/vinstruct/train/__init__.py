"""Two-stage LLaVA training: `run_training(config)` (see docs/train.md)."""

from __future__ import annotations


def run_training(config, eval_hooks=None):
    """Train one stage; `config` is a TrainConfig or a dict of its options. See vinstruct.train.loop."""
    from vinstruct.train.loop import run_training as _run

    return _run(config, eval_hooks)


def __getattr__(name):
    if name in ("TrainConfig", "load_config"):
        from vinstruct.train import config

        return getattr(config, name)
    if name == "TrainResult":
        from vinstruct.train.loop import TrainResult

        return TrainResult
    raise AttributeError(name)
