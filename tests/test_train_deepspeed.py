"""Strategy deepspeed: the shipped ZeRO configs, how they are filled from the training options, the
one-line errors, and the aligned training step that keeps every process on the same graph.

Runs with DeepSpeed itself (two CPU processes over gloo, DeepSpeed's CPU accelerator) are at the
end; they need the deepspeed package, which is not a requirement of the project, and are skipped
where it is not installed."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vinstruct.cli import main
from vinstruct.errors import VinstructError
from vinstruct.train import run_training
from vinstruct.train.config import TrainConfig, load_config
from vinstruct.train.deepspeed_config import (effective_strategy, find_ds_config, read_ds_config, require_deepspeed,
                                              resolve_ds_config)
from vinstruct.train.deepspeed_engine import AlignedTrainStep
from vinstruct.train.step import TrainStep

HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "deepspeed"


def _options(**values) -> TrainConfig:
    return TrainConfig(data="d.json", vision="v", llm="l", **values)


# ---- the shipped configs ------------------------------------------------------------------------------
@pytest.mark.parametrize("name, stage", [("zero2", 2), ("zero3", 3)])
def test_shipped_configs_leave_the_run_values_to_the_trainer(name, stage):
    config = json.loads((CONFIGS / f"{name}.json").read_text())
    assert config["zero_optimization"]["stage"] == stage
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size",
                "gradient_clipping"):
        assert config[key] == "auto"
    assert config["bf16"]["enabled"] == "auto" and config["fp16"]["enabled"] == "auto"
    assert "optimizer" not in config and "scheduler" not in config  # the trainer's own AdamW and schedule
    assert find_ds_config(name).resolve() == CONFIGS / f"{name}.json"


def test_zero3_gathers_16bit_weights_when_accelerate_saves_a_model():
    zero = json.loads((CONFIGS / "zero3.json").read_text())["zero_optimization"]
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert {zero[k] for k in ("stage3_prefetch_bucket_size", "stage3_param_persistence_threshold")} == {"auto"}


@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_auto_values_are_filled_from_the_training_options(name):
    options = _options(per_device_batch_size=4, grad_accum=3, max_grad_norm=0.5, precision="bf16")
    config = resolve_ds_config(read_ds_config(find_ds_config(name)), options, world_size=8, hidden_size=64)
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 3
    assert config["train_batch_size"] == 4 * 3 * 8
    assert config["gradient_clipping"] == 0.5
    assert config["bf16"] == {"enabled": True} and config["fp16"] == {"enabled": False}
    assert config["zero_optimization"]["reduce_bucket_size"] == 64 * 64
    if name == "zero3":
        assert config["zero_optimization"]["stage3_prefetch_bucket_size"] == int(0.9 * 64 * 64)
        assert config["zero_optimization"]["stage3_param_persistence_threshold"] == 640
    assert "auto" not in json.dumps(config)


def test_fp32_turns_bf16_off_and_no_clipping_is_zero():
    config = resolve_ds_config(read_ds_config(find_ds_config("zero2")), _options(max_grad_norm=0.0), 1, 32)
    assert config["bf16"]["enabled"] is False and config["gradient_clipping"] == 0.0


def test_accelerate_reads_the_filled_config():
    from accelerate.utils import DeepSpeedPlugin

    options = _options(per_device_batch_size=2, grad_accum=4, max_grad_norm=1.0, precision="bf16")
    config = resolve_ds_config(read_ds_config(find_ds_config("zero3")), options, world_size=2, hidden_size=32)
    plugin = DeepSpeedPlugin(hf_ds_config=config, zero3_init_flag=False)
    assert (plugin.zero_stage, plugin.gradient_accumulation_steps, plugin.gradient_clipping) == (3, 4, 1.0)
    assert plugin.hf_ds_config.is_zero3()
    keys = ["train_micro_batch_size_per_gpu", "train_batch_size", "gradient_clipping", "bf16.enabled",
            "zero_optimization.reduce_bucket_size", "zero_optimization.stage3_prefetch_bucket_size"]
    assert not [key for key in keys if plugin.is_auto(key)]  # nothing left for accelerate to guess
    assert plugin.get_value("train_micro_batch_size_per_gpu") == 2


def test_values_written_in_the_file_must_agree_with_the_options(tmp_path):
    raw = {"train_micro_batch_size_per_gpu": 16, "zero_optimization": {"stage": 2}}
    with pytest.raises(VinstructError, match=r"train_micro_batch_size_per_gpu is 16 but this run needs 4 "
                                             r"\(from per_device_batch_size\)"):
        resolve_ds_config(raw, _options(per_device_batch_size=4), 1, 32, "ds.json")
    agreeing = dict(raw, train_micro_batch_size_per_gpu=4, bf16={"enabled": True})
    with pytest.raises(VinstructError, match=r"bf16.enabled is true but this run needs false \(from precision\)"):
        resolve_ds_config(agreeing, _options(per_device_batch_size=4, precision="fp32"), 1, 32)
    with pytest.raises(VinstructError, match="fp16.enabled is true .*fp16 is not supported, use bf16"):
        resolve_ds_config({"fp16": {"enabled": True}, "zero_optimization": {"stage": 2}}, _options(), 1, 32)
    with pytest.raises(VinstructError, match=r"train_batch_size is 64 but this run needs 32"):
        resolve_ds_config({"train_batch_size": 64, "zero_optimization": {"stage": 2}}, _options(), 4, 32)


@pytest.mark.parametrize("raw, message", [
    ({"optimizer": {"type": "AdamW"}, "zero_optimization": {"stage": 2}}, "remove the 'optimizer' section"),
    ({"scheduler": {"type": "WarmupLR"}, "zero_optimization": {"stage": 2}}, "remove the 'scheduler' section"),
    ({"zero_optimization": {"stage": 0}}, "stage must be 1, 2 or 3, got 0 .*use strategy ddp"),
    ({}, "stage must be 1, 2 or 3, got None"),
    ({"zero_optimization": {"stage": 2, "sub_group_size": "auto"}}, "zero_optimization.sub_group_size is \"auto\""),
])
def test_configs_the_trainer_cannot_run_are_refused(raw, message):
    with pytest.raises(VinstructError, match=message):
        resolve_ds_config(raw, _options(), 1, 32, "ds.json")


def test_unknown_auto_keys_wait_for_the_model_in_the_early_check():
    raw = {"zero_optimization": {"stage": 3, "stage3_prefetch_bucket_size": "auto"}}
    early = resolve_ds_config(raw, _options(), 1, None)
    assert early["zero_optimization"]["stage3_prefetch_bucket_size"] == "auto"


def test_bad_json_and_missing_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text('{\n  "zero_optimization": {"stage": 2},\n  "bf16": {enabled: true}\n}\n')
    with pytest.raises(VinstructError, match=rf"{bad}:3: invalid JSON"):
        read_ds_config(bad)
    with pytest.raises(VinstructError, match="zero9: DeepSpeed config not found"):
        find_ds_config("zero9")
    with pytest.raises(VinstructError, match="strategy deepspeed needs deepspeed_config"):
        find_ds_config(None, environ={})
    launched = {"ACCELERATE_DEEPSPEED_CONFIG_FILE": str(CONFIGS / "zero2.json")}
    assert find_ds_config(None, environ=launched) == CONFIGS / "zero2.json"


def test_strategy_auto_follows_a_deepspeed_request():
    assert effective_strategy(_options(deepspeed_config="zero3"), environ={}) == "deepspeed"
    assert effective_strategy(_options(), environ={"ACCELERATE_USE_DEEPSPEED": "true"}) == "deepspeed"
    assert effective_strategy(_options(), environ={}) == "auto"
    assert effective_strategy(_options(strategy="fsdp"), environ={"ACCELERATE_USE_DEEPSPEED": "true"}) == "fsdp"
    with pytest.raises(VinstructError, match="deepspeed_config goes with strategy deepspeed, not 'ddp'"):
        load_config(None, {"data": "d", "init_from": "c", "strategy": "ddp", "deepspeed_config": "zero2"})


# ---- without deepspeed / without GPUs ----------------------------------------------------------------
@pytest.mark.skipif(HAS_DEEPSPEED, reason="deepspeed is installed here")
def test_missing_deepspeed_is_a_one_line_error_with_the_install_command(train_config, capsys):
    config = train_config("pretrain", max_steps=1, strategy="deepspeed", deepspeed_config="zero2")
    with pytest.raises(VinstructError, match=r"needs the deepspeed package.*pip install deepspeed.*CUDA GPUs"):
        run_training(config)
    assert not Path(config["output_dir"]).exists()  # refused before anything was loaded or written
    args = ["train", "--stage", "pretrain", "--vision", config["vision"], "--llm", config["llm"],
            "--data", config["data"], f"--output_dir={config['output_dir']}", "--strategy=deepspeed",
            "--deepspeed_config=zero3"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install deepspeed" in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_without_gpus_deepspeed_refuses_unless_its_cpu_accelerator_is_chosen(monkeypatch):
    # The check that follows a successful import: pretend the package is there.
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "deepspeed" else real_find_spec(name, *a))
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    with pytest.raises(VinstructError, match="needs CUDA GPUs and none is visible"):
        require_deepspeed()
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    require_deepspeed()


# ---- the aligned step: the same graph whatever the micro-batch holds ----------------------------------
def _batches(model):
    ids = [7, 8, 9, 10, 11, 12]
    text = torch.tensor([ids])
    labels = torch.tensor([[-100, -100, 9, 10, 11, 12]])
    image_ids = torch.tensor([[model.image_token_id] * model.num_image_tokens + ids])
    image_labels = torch.cat([torch.full((1, model.num_image_tokens), -100), labels], dim=1)
    pixels = torch.rand(1, 3, model.vision_tower.config.image_size, model.vision_tower.config.image_size)
    return ({"input_ids": text, "attention_mask": torch.ones_like(text), "labels": labels},
            {"input_ids": image_ids, "attention_mask": torch.ones_like(image_ids), "labels": image_labels,
             "pixel_values": pixels})


def _trainable(model):
    model.vision_tower.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def _gradient_order(step, batch):
    """Parameters in the order backward finishes their gradients (the order ZeRO-2 buckets them)."""
    names = {id(p): n for n, p in step.named_parameters()}
    order, handles = [], []
    for param in step.parameters():
        if param.requires_grad:
            handles.append(param.register_post_accumulate_grad_hook(lambda p: order.append(names[id(p)])))
    loss, _ = step(**batch)
    loss.backward()
    for handle in handles:
        handle.remove()
    step.zero_grad(set_to_none=True)
    return order


def test_text_only_batches_backpropagate_in_the_same_order_as_image_batches(tiny_model):
    _trainable(tiny_model)
    aligned = AlignedTrainStep(tiny_model, cached_features=False)
    text, image = _batches(tiny_model)
    text_order = _gradient_order(aligned, text)
    assert text_order == _gradient_order(aligned, image)
    assert len(text_order) == len(_trainable(tiny_model))  # every trainable parameter, projector included


@pytest.mark.parametrize("cached", [False, True])
def test_the_blank_image_changes_nothing_but_the_graph(tiny_model, cached):
    _trainable(tiny_model)
    text, _ = _batches(tiny_model)
    calls = []
    hook = tiny_model.vision_tower.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        plain_loss, plain_tokens = TrainStep(tiny_model)(**text)
        aligned_loss, aligned_tokens = AlignedTrainStep(tiny_model, cached_features=cached)(**text)
    hook.remove()
    assert torch.equal(plain_loss, aligned_loss) and int(plain_tokens) == int(aligned_tokens) == 4
    assert len(calls) == (0 if cached else 1)  # the vision tower runs on every process unless features are cached


# ---- real DeepSpeed runs (two CPU processes, gloo) -----------------------------------------------------
needs_deepspeed = pytest.mark.skipif(not HAS_DEEPSPEED, reason="deepspeed is not installed (pip install deepspeed)")


def _train(config_path, output_dir, *extra, processes=1):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--standalone"]
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    done = subprocess.run([*launcher, "-m", "vinstruct", "train", "--config", str(config_path),
                           f"--output_dir={output_dir}", *extra], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return output_dir


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_weights(a_dir, b_dir, atol=1e-5):
    a, b = load_file(str(a_dir / "model/model.safetensors")), load_file(str(b_dir / "model/model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=atol, msg=key)


@pytest.fixture
def ds_config_file(train_config, tmp_path):
    # Mixed batches: image and text-only micro-batches meet in the same step on different processes.
    config = train_config("finetune", max_steps=4, per_device_batch_size=2, lr=1e-3, num_threads=1)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@needs_deepspeed
@pytest.mark.slow
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_two_process_zero_equals_one_process_with_double_accumulation(ds_config_file, tmp_path, zero):
    single = _train(ds_config_file, tmp_path / "single", "--grad_accum=2")
    ds = _train(ds_config_file, tmp_path / zero, "--strategy=deepspeed", f"--deepspeed_config={zero}",
                "--grad_accum=1", "--save_every=2", processes=2)
    _assert_same_weights(ds, single)
    assert _losses(ds) == pytest.approx(_losses(single), abs=1e-5)
    for rank in (0, 1):
        assert (ds / f"checkpoints/step-000004/optimizer-rank{rank}.safetensors").is_file()
    assert not (ds / "checkpoints/step-000004/optimizer.safetensors").exists()


@needs_deepspeed
@pytest.mark.slow
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(ds_config_file, tmp_path, zero):
    args = ("--strategy=deepspeed", f"--deepspeed_config={zero}", "--save_every=2", "--grad_accum=2")
    clean = _train(ds_config_file, tmp_path / "clean", *args, processes=2)
    crashed = tmp_path / "crashed"
    shutil.copytree(clean, crashed)
    # as if killed after step 2's checkpoint: later checkpoints and the final export never happened
    shutil.rmtree(crashed / "checkpoints/step-000004")
    shutil.rmtree(crashed / "model")
    _train(ds_config_file, crashed, *args, "--resume", processes=2)
    _assert_same_weights(crashed, clean, atol=0)
    assert _losses(crashed) == _losses(clean)
    with pytest.raises(AssertionError, match="partitions are for 2 processes, this run has 1"):
        _train(ds_config_file, crashed, *args, "--resume", "--grad_accum=4", processes=1)


@needs_deepspeed
@pytest.mark.slow
def test_lora_under_zero3_equals_one_process(ds_config_file, tmp_path):
    lora = ("--lora=true", "--lora_r=4", "--lora_alpha=8", "--lora_dropout=0.0", "--lora_merge=false")
    single = _train(ds_config_file, tmp_path / "single", *lora, "--grad_accum=2")
    ds = _train(ds_config_file, tmp_path / "zero3", *lora, "--strategy=deepspeed", "--deepspeed_config=zero3",
                processes=2)
    _assert_same_weights(ds, single)  # the base weights, unchanged
    a, b = (load_file(str(run / "adapter/adapter_model.safetensors")) for run in (ds, single))
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5)


@needs_deepspeed
@pytest.mark.slow
def test_bf16_zero3_saves_fp32_master_weights_that_load(ds_config_file, tmp_path, color_images):
    from vinstruct.model.io import load_model

    fp32 = _train(ds_config_file, tmp_path / "fp32", "--grad_accum=2")
    bf16 = _train(ds_config_file, tmp_path / "bf16", "--strategy=deepspeed", "--deepspeed_config=zero3",
                  "--precision=bf16", processes=2)
    assert _losses(bf16) == pytest.approx(_losses(fp32), abs=0.05)
    weights = load_file(str(bf16 / "model/model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}

    def bf16_exact(tensor):
        return torch.equal(tensor, tensor.to(torch.bfloat16).float())

    assert not bf16_exact(weights["projector.0.weight"])  # trained: the fp32 master copy, not the bf16 one
    assert bf16_exact(weights["vision_tower.encoder.layers.0.mlp.fc1.weight"])  # frozen: as held
    model = load_model(bf16 / "model")
    pixels = model.image_processor.load([color_images / "red.png"])
    prompt = torch.tensor([[model.image_token_id] * model.num_image_tokens + [5, 6, 7]])
    with torch.no_grad():
        assert torch.isfinite(model(prompt, pixel_values=pixels).logits).all()


def _eval_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "eval"]


@needs_deepspeed
@pytest.mark.slow
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_held_out_loss_matches_one_process_and_exact_qa_runs_where_weights_are_whole(
        ds_config_file, tiny_llava_data, tmp_path, zero):
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "image": "red_circle.png", "text": "What color is it?",
                                     "answer": "red."}) + "\n")
    # finetune.json as held-out data: image and text-only batches, unevenly over the two processes
    evaluation = (f"--val_data={tiny_llava_data / 'finetune.json'}", "--eval_every=2",
                  f"--eval_questions={questions}", f"--image_dir={tiny_llava_data}", "--gradient_checkpointing=true")
    single = _train(ds_config_file, tmp_path / "single", *evaluation, "--grad_accum=2")
    ds = _train(ds_config_file, tmp_path / zero, *evaluation, "--strategy=deepspeed", f"--deepspeed_config={zero}",
                processes=2)
    expected, rows = _eval_rows(single), _eval_rows(ds)
    assert [r["step"] for r in rows] == [2, 4]
    assert [r["eval_loss"] for r in rows] == pytest.approx([r["eval_loss"] for r in expected], abs=1e-5)
    if zero == "zero2":
        assert [r["exact_qa_n"] for r in rows] == [1, 1]
    else:  # ZeRO-3: no process holds the whole model, as under FSDP
        assert all("exact_qa" not in r for r in rows)


@needs_deepspeed
@pytest.mark.slow
def test_accelerate_launch_with_deepspeed_needs_no_strategy_option(ds_config_file, tmp_path):
    out = tmp_path / "launched"
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2",
                           "--num_machines", "1", "--use_deepspeed", "--deepspeed_config_file",
                           str(CONFIGS / "zero2.json"), "-m", "vinstruct", "train", "--config", str(ds_config_file),
                           f"--output_dir={out}"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    state = json.loads((out / "checkpoints/step-000004/trainer_state.json").read_text())
    assert (state["strategy"], state["world_size"]) == ("deepspeed", 2)
    assert (out / "checkpoints/step-000004/optimizer-rank1.safetensors").is_file()
