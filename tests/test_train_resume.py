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


# ---- damaged checkpoints: found by their checksum manifest, the previous intact one is used ---------
def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _overwrite_last_4kb(path):
    data = bytearray(path.read_bytes())
    data[-4096:] = bytes(range(256)) * 16
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated optimizer file": (lambda c: _truncate(c / "optimizer.safetensors"), "optimizer.safetensors has"),
    "truncated model weights": (lambda c: _truncate(c / "model" / "model.safetensors"), "model/model.safetensors has"),
    "truncated RNG file": (lambda c: _truncate(c / "rng-rank0.safetensors"), "rng-rank0.safetensors has"),
    "garbage trainer_state.json": (lambda c: (c / "trainer_state.json").write_text("{garbage"), "trainer_state.json has"),
    "deleted optimizer file": (lambda c: (c / "optimizer.safetensors").unlink(), "optimizer.safetensors is missing"),
    "deleted trainer_state.json": (lambda c: (c / "trainer_state.json").unlink(), "trainer_state.json is missing"),
    "last 4 KB of the weights overwritten": (lambda c: _overwrite_last_4kb(c / "model" / "model.safetensors"),
                                             "model/model.safetensors does not match its checksum"),
}


@pytest.fixture(scope="module")
def finished_run(tiny_parts, tiny_llava_data, tmp_path_factory):
    """(config, run dir): 4 fp32 steps, checkpoints at steps 2 and 4, and the final model."""
    vision_dir, llm_dir = tiny_parts
    out = tmp_path_factory.mktemp("finished") / "run"
    config = {"stage": "finetune", "vision": str(vision_dir), "llm": str(llm_dir),
              "data": str(tiny_llava_data / "finetune.json"), "output_dir": str(out), "per_device_batch_size": 2,
              "max_steps": 4, "save_every": 2, "keep_last": 2, "lr": 1e-3, "progress": False, "peak_flops": 1e11,
              "loss_curve": False, "seed": 0, "num_threads": 1}
    run_training(config)
    return config, out


def _copy_run(finished_run, tmp_path):
    import shutil

    config, out = finished_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "model")  # as if the run had stopped before its end
    return dict(config, output_dir=str(copy), resume=True), copy


def _weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_latest_checkpoint_is_reported_and_the_previous_one_used(finished_run, tmp_path, caplog, case):
    damage, reported = DAMAGE[case]
    config, run = _copy_run(finished_run, tmp_path)
    damage(run / "checkpoints" / "step-000004")
    with caplog.at_level("WARNING"):
        run_training(config)
    (line,) = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert "step-000004 is damaged" in line and reported in line and "trying the one before it" in line
    assert (run / "checkpoints" / "step-000004.damaged").is_dir()  # set aside for inspection
    # steps 3 and 4 were trained again from step 2: the same weights and curve as the uninterrupted run
    done = _weights(finished_run[1])
    assert all(torch.equal(done[k], v) for k, v in _weights(run).items())
    assert _curve(run) == _curve(finished_run[1])


def test_resume_fails_in_one_line_when_no_checkpoint_is_intact(finished_run, tmp_path):
    config, run = _copy_run(finished_run, tmp_path)
    _truncate(run / "checkpoints" / "step-000004" / "optimizer.safetensors")
    _overwrite_last_4kb(run / "checkpoints" / "step-000002" / "model" / "model.safetensors")
    with pytest.raises(VinstructError) as caught:
        run_training(config)
    message = str(caught.value)
    assert "no intact checkpoint to resume from" in message and "\n" not in message
    assert "step-000004: optimizer.safetensors has" in message and "step-000002: model/model.safetensors" in message
    assert (run / "checkpoints" / "step-000004").is_dir()  # nothing is moved when nothing can be used


def test_with_keep_last_1_the_error_says_there_is_nothing_to_fall_back_to(finished_run, tmp_path):
    import shutil

    config, run = _copy_run(finished_run, tmp_path)
    shutil.rmtree(run / "checkpoints" / "step-000002")
    _truncate(run / "checkpoints" / "step-000004" / "rng-rank0.safetensors")
    with pytest.raises(VinstructError, match="keep_last: 1 keeps no older checkpoint"):
        run_training(dict(config, keep_last=1))


def test_a_checkpoint_of_an_earlier_version_without_manifest_resumes_with_a_warning(finished_run, tmp_path, caplog):
    import shutil

    config, run = _copy_run(finished_run, tmp_path)
    shutil.rmtree(run / "checkpoints" / "step-000004")
    (run / "checkpoints" / "step-000002" / "manifest.json").unlink()
    with caplog.at_level("WARNING"):
        run_training(config)
    assert any("step-000002 has no checksum manifest" in r.getMessage() and "unverified" in r.getMessage()
               for r in caplog.records)
    assert (run / "checkpoints" / "step-000004" / "manifest.json").is_file()  # the checkpoint written now has one
    done = _weights(finished_run[1])
    assert all(torch.equal(done[k], v) for k, v in _weights(run).items())


def test_without_manifest_a_checkpoint_with_nan_weights_is_still_refused(finished_run, tmp_path, caplog):
    from safetensors.torch import save_file

    config, run = _copy_run(finished_run, tmp_path)
    for manifest in run.glob("checkpoints/*/manifest.json"):
        manifest.unlink()
    weights_file = run / "checkpoints" / "step-000004" / "model" / "model.safetensors"
    weights = load_file(str(weights_file))
    key = next(k for k in weights if k.startswith("projector.") and k.endswith("weight"))
    weights[key][0, 0] = float("nan")  # a poisoned weight, in a file that loads fine
    save_file(weights, str(weights_file), metadata={"format": "pt"})
    with caplog.at_level("WARNING"):
        run_training(config)
    assert any(f"tensor {key!r} holds NaN" in r.getMessage() for r in caplog.records)
    assert all(torch.isfinite(v).all() for v in _weights(run).values() if v.is_floating_point())


def test_every_checkpoint_carries_a_manifest_and_old_ones_go_only_after_the_new_one_is_in_place(finished_run, tmp_path):
    from vinstruct.train.manifest import checksum_problem, read_manifest

    _, run = finished_run
    assert [step for step, _ in list_checkpoints(run)] == [2, 4]  # keep_last 2
    for _, path in list_checkpoints(run):
        manifest = read_manifest(path)
        assert checksum_problem(path, manifest) is None
        assert {"trainer_state.json", "optimizer.safetensors", "rng-rank0.safetensors",
                "model/model.safetensors", "model/config.json"} <= set(manifest["files"])
