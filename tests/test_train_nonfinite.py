"""A loss or gradient norm that is NaN or infinite stops training at once, naming the step: no NaN update,
no NaN checkpoint or model, a non-zero exit from the CLI, and the last good checkpoint kept."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vinstruct.cli import main
from vinstruct.errors import VinstructError
from vinstruct.train import run_training
from vinstruct.train.checkpoint import list_checkpoints
from vinstruct.train.step import TrainStep


def _logged_losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["kind"] == "train"]


def _nan_on_call(monkeypatch, call: int):
    """Make the `call`-th micro-batch forward (1-based) return a NaN loss."""
    original, calls = TrainStep.forward, {"n": 0}

    def forward(self, *args, **kwargs):
        calls["n"] += 1
        loss_sum, supervised = original(self, *args, **kwargs)
        return (loss_sum * float("nan") if calls["n"] == call else loss_sum), supervised

    monkeypatch.setattr(TrainStep, "forward", forward)


def test_a_nan_in_one_accumulated_micro_batch_stops_the_run_at_its_step(train_config, tmp_path, monkeypatch):
    config = train_config("finetune", max_steps=6, per_device_batch_size=2, grad_accum=2, save_every=2, num_threads=1)
    _nan_on_call(monkeypatch, call=6)  # step 3, second of its two micro-batches
    with pytest.raises(VinstructError, match=r"^step 3: the loss is nan; training stopped without saving anything "
                                             r"\(the last checkpoint is .*step-000002\)$"):
        run_training(config)
    run = tmp_path / "run-finetune"
    assert [step for step, _ in list_checkpoints(run)] == [2]  # nothing written after the NaN
    assert not (run / "model").exists()  # no final export
    weights = load_file(str(run / "checkpoints" / "step-000002" / "model" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert all(math.isfinite(loss) for loss in _logged_losses(run)) and len(_logged_losses(run)) == 2


def test_an_infinite_gradient_norm_stops_the_run_before_the_update(train_config, tmp_path, monkeypatch):
    import vinstruct.train.loop as loop

    config = train_config("pretrain", max_steps=3, save_every=1, num_threads=1)
    real, calls = loop.clip_gradients, {"n": 0}

    def clip(*args, **kwargs):
        calls["n"] += 1
        return float("inf") if calls["n"] == 2 else real(*args, **kwargs)

    monkeypatch.setattr(loop, "clip_gradients", clip)
    with pytest.raises(VinstructError, match=r"^step 2: the gradient norm is inf; .*step-000001\)$"):
        run_training(config)
    assert [step for step, _ in list_checkpoints(tmp_path / "run-pretrain")] == [1]


POISON_HOOK = '''
import torch

def poison(model):
    """An evaluation hook that turns one projector weight into NaN (as a bad update would)."""
    with torch.no_grad():
        next(model.projector.parameters()).view(-1)[0] = float("nan")
    return {"poisoned": 1}
'''


def test_the_cli_exits_non_zero_with_one_line_naming_the_step(train_config, tmp_path, monkeypatch, capsys):
    (tmp_path / "poison_hook.py").write_text(POISON_HOOK)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = train_config("pretrain", max_steps=5, save_every=2, eval_every=3, eval_hook="poison_hook:poison",
                          num_threads=1)
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(config_path)]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines == [f"error: step 4: the loss is nan; training stopped without saving anything "
                     f"(the last checkpoint is {tmp_path / 'run-pretrain' / 'checkpoints' / 'step-000002'})"]
    assert [step for step, _ in list_checkpoints(tmp_path / "run-pretrain")] == [2]


def test_a_checkpoint_is_never_written_with_non_finite_weights(train_config, tmp_path, monkeypatch):
    (tmp_path / "poison_hook.py").write_text(POISON_HOOK)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = train_config("pretrain", max_steps=4, save_every=1, eval_every=2, eval_hook="poison_hook:poison",
                          num_threads=1)
    with pytest.raises(VinstructError, match=r"^step 2: the weights hold NaN or infinite values \(projector\.0\.weight\); "
                                             r"checkpoint not written"):
        run_training(config)  # the hook poisons the model after step 2, just before its checkpoint
    checkpoints = tmp_path / "run-pretrain" / "checkpoints"
    assert [step for step, _ in list_checkpoints(tmp_path / "run-pretrain")] == [1]
    assert not list(checkpoints.glob(".step-*"))  # the half-written one is gone too
