"""Crash safety: kill -9 mid-run, --resume, and the result equals an uninterrupted run bit for bit."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vinstruct.errors import VinstructError
from vinstruct.train import run_training
from vinstruct.train.checkpoint import list_checkpoints

STEPS = 60


def _train_command(config_path, *extra):
    return [sys.executable, "-m", "vinstruct", "train", "--config", str(config_path), *extra]


def _curve(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["lr"]) for r in rows if r["kind"] == "train"]


def _last_step(metrics):
    if not metrics.is_file():
        return 0
    lines = [line for line in metrics.read_text().splitlines() if line.endswith("}")]
    return json.loads(lines[-1])["step"] if lines else 0


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(train_config, tmp_path):
    config = train_config("finetune", max_steps=STEPS, per_device_batch_size=3, grad_accum=2, save_every=5,
                          keep_last=2, lora=False, lr=3e-3, num_threads=1)
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(config))
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    subprocess.run(_train_command(config_path, f"--output_dir={clean}"), check=True, capture_output=True)

    trainer = subprocess.Popen(_train_command(config_path, f"--output_dir={crashed}"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _last_step(crashed / "metrics.jsonl") < 12 and trainer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()
    killed_at = _last_step(crashed / "metrics.jsonl")
    assert 12 <= killed_at < STEPS and not (crashed / "model").exists()  # it really died mid-run
    assert list_checkpoints(crashed)

    subprocess.run(_train_command(config_path, f"--output_dir={crashed}", "--resume"), check=True,
                   capture_output=True)
    assert _curve(crashed) == _curve(clean)  # same losses and learning rates at every step
    a, b = load_file(str(clean / "model" / "model.safetensors")), load_file(str(crashed / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(list_checkpoints(crashed)) == 2  # keep_last


def test_resume_continues_from_the_latest_checkpoint_in_process(train_config, tmp_path):
    full = run_training(train_config("pretrain", max_steps=6, save_every=2, output_dir=str(tmp_path / "full")))
    part = train_config("pretrain", max_steps=6, save_every=2, output_dir=str(tmp_path / "part"))
    run_training(dict(part, max_steps=6))
    # pretend the run stopped after step 4: drop the later checkpoint and the final export
    for step, path in list_checkpoints(tmp_path / "part"):
        if step > 4:
            import shutil
            shutil.rmtree(path)
    resumed = run_training(dict(part, resume=True))
    assert _curve(tmp_path / "part") == _curve(tmp_path / "full")
    assert torch.equal(load_file(str(resumed.checkpoint / "model.safetensors"))["projector.0.weight"],
                       load_file(str(full.checkpoint / "model.safetensors"))["projector.0.weight"])


def test_resume_refuses_a_changed_batch_plan(train_config, tmp_path):
    config = train_config("pretrain", max_steps=2, save_every=1)
    run_training(config)
    with pytest.raises(VinstructError, match="cannot resume: it was written with per_device_batch_size=4"):
        run_training(dict(config, resume=True, per_device_batch_size=2))


def test_a_second_run_into_a_used_output_dir_asks_for_resume(train_config):
    config = train_config("pretrain", max_steps=1)
    run_training(config)
    with pytest.raises(VinstructError, match="pass --resume"):
        run_training(config)


def test_partial_checkpoint_saves_are_ignored_and_cleaned(train_config, tmp_path):
    config = train_config("pretrain", max_steps=2, save_every=1)
    run_training(config)
    out = tmp_path / "run-pretrain" / "checkpoints"
    (out / ".step-000009.tmp").mkdir()  # a save that was killed before its rename
    (out / "step-000010").mkdir()  # a directory without trainer_state.json is not a checkpoint
    assert [step for step, _ in list_checkpoints(tmp_path / "run-pretrain")] == [1, 2]
    run_training(dict(config, resume=True))
    assert not (out / ".step-000009.tmp").exists()
