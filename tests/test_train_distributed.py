"""The same command under torchrun: DDP equals one process with more accumulation; FSDP2 saves a
loadable checkpoint. Two CPU processes talk over gloo on the loopback interface."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vinstruct.model.io import load_model


def _run(config_path, output_dir, *extra, processes=1):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                "--standalone"] if processes > 1 else [sys.executable]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([*launcher, "-m", "vinstruct", "train", "--config", str(config_path),
                           f"--output_dir={output_dir}", *extra], capture_output=True, text=True, env=env,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return output_dir


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def config_file(train_config, tmp_path):
    config = train_config("finetune", max_steps=4, per_device_batch_size=2, lr=1e-3, num_threads=1)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_with_double_accumulation(config_file, tmp_path):
    ddp = _run(config_file, tmp_path / "ddp", "--grad_accum=1", processes=2)
    single = _run(config_file, tmp_path / "single", "--grad_accum=2")
    a, b = load_file(str(ddp / "model/model.safetensors")), load_file(str(single / "model/model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5)
    assert _losses(ddp) == pytest.approx(_losses(single), abs=1e-5)
    final_checkpoint = load_file(str(ddp / "checkpoints/step-000004/model/model.safetensors"))
    assert all(torch.equal(a[k], final_checkpoint[k]) for k in a)  # the last checkpoint holds the final weights


@pytest.mark.slow
def test_fsdp_on_two_processes_saves_a_loadable_checkpoint(config_file, tmp_path, color_images):
    fsdp = _run(config_file, tmp_path / "fsdp", "--strategy=fsdp", "--grad_accum=1", "--save_every=2", processes=2)
    model = load_model(fsdp / "model")
    pixels = model.image_processor.load([color_images / "red.png"])
    prompt = torch.tensor([[model.image_token_id] * model.num_image_tokens + [5, 6, 7]])
    with torch.no_grad():
        assert torch.isfinite(model(prompt, pixel_values=pixels).logits).all()
    assert (fsdp / "checkpoints/step-000002/optimizer.safetensors").is_file()
    assert (fsdp / "checkpoints/step-000004/rng-rank1.safetensors").is_file()
    assert all(loss == loss for loss in _losses(fsdp))  # finite, logged from the reduced global batch


POISON_ON_RANK_0 = '''
import torch

def poison(model):
    """Evaluation hooks run on process 0 only: this makes one process's weights NaN, not the other's."""
    with torch.no_grad():
        next(model.projector.parameters()).view(-1)[0] = float("nan")
    return {"poisoned": 1}
'''


@pytest.mark.slow
def test_a_nan_on_one_process_stops_every_process_at_the_same_step(config_file, tmp_path):
    (tmp_path / "poison_hook.py").write_text(POISON_ON_RANK_0)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    done = subprocess.run([*launcher, "-m", "vinstruct", "train", "--config", str(config_file),
                           f"--output_dir={tmp_path / 'ddp'}", "--grad_accum=2", "--save_every=2", "--eval_every=3",
                           "--eval_hook=poison_hook:poison"], capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode != 0
    # Both processes write to one stderr and their lines may interleave, so find the messages, not line starts.
    errors = re.findall(r"error: step (\d+): ([^;]*);", done.stderr)
    assert errors == [("4", "the loss is nan")] * 2, done.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == ["step-000002"]


@pytest.mark.slow
def test_two_processes_resume_from_the_previous_checkpoint_when_the_latest_is_damaged(config_file, tmp_path):
    # written by one process with 2 accumulation steps, resumed by two with 1: the same global batch
    run = _run(config_file, tmp_path / "run", "--save_every=2", "--keep_last=2", "--grad_accum=2")
    weights = run / "checkpoints" / "step-000004" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    first = load_file(str(run / "model" / "model.safetensors"))
    resumed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                              "-m", "vinstruct", "train", "--config", str(config_file), f"--output_dir={run}",
                              "--save_every=2", "--keep_last=2", "--grad_accum=1", "--resume"],
                             capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count("step-000004 is damaged (model/model.safetensors has") == 1  # said once, by process 0
    again = load_file(str(run / "model" / "model.safetensors"))
    for key in first:  # steps 3-4 trained again from step 2
        torch.testing.assert_close(first[key], again[key], atol=1e-5, rtol=1e-5)
