"""`vinstruct train` end to end: presets, --key=value overrides, outputs, one-line errors."""

import json

import pytest
import yaml

from vinstruct.cli import main
from vinstruct.train.config import load_config, parse_overrides, resolve_config_path

PRESETS = ["llava_pretrain", "llava_finetune", "llava_finetune_lora", "world_pretrain", "world_finetune"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_validates(name):
    path = resolve_config_path(name)
    config = load_config(path, {"data": "x.json", "vision": "v", "llm": "l"})
    assert config.stage in name.replace("finetune_lora", "finetune").replace("world_", "").replace("llava_", "")


def test_paper_presets_hold_the_paper_hyper_parameters():
    stage1 = load_config("llava_pretrain", {"data": "x", "vision": "v", "llm": "l"})
    assert (stage1.lr, stage1.weight_decay, stage1.warmup_ratio, stage1.lr_scheduler) == (2e-3, 0.0, 0.03, "cosine")
    stage2 = load_config("llava_finetune", {"data": "x", "init_from": "c"})
    assert (stage2.lr, stage2.epochs) == (2e-5, 3)
    lora = load_config("llava_finetune_lora", {"data": "x", "init_from": "c"})
    assert (lora.lora_r, lora.lora_alpha, lora.lr, lora.projector_lr) == (128, 256, 2e-4, 2e-5)


def test_overrides_parse_as_yaml_values():
    assert parse_overrides(["--lr=1e-4", "--epochs=2", "--lora=true", "--eval-hook=pkg.mod:fn"]) == {
        "lr": 1e-4, "epochs": 2, "lora": True, "eval_hook": "pkg.mod:fn"}


def test_cli_trains_stage1_then_stage2_from_the_projector_file(tiny_parts, tiny_llava_data, tmp_path, capsys):
    vision, llm = map(str, tiny_parts)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"per_device_batch_size": 4, "progress": False, "peak_flops": 1e11,
                                      "num_threads": 1}))
    assert main(["train", "--stage", "pretrain", "--config", str(config), "--vision", vision, "--llm", llm,
                 "--data", str(tiny_llava_data / "pretrain.json"), "--output_dir", str(tmp_path / "s1"),
                 "--max_steps=2", "--lr=2e-3"]) == 0
    out = capsys.readouterr().out
    assert f"projector: {tmp_path / 's1' / 'mm_projector.safetensors'}" in out
    assert (tmp_path / "s1" / "loss_curve.png").stat().st_size > 1000
    assert main(["train", "--stage", "finetune", "--config", str(config), "--vision", vision, "--llm", llm,
                 "--projector", str(tmp_path / "s1" / "mm_projector.safetensors"),
                 "--data", str(tiny_llava_data / "finetune.json"), "--output_dir", str(tmp_path / "s2"),
                 "--max_steps=2", "--val_data=" + str(tiny_llava_data / "val.json"), "--eval_every=2"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "s2" / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["train", "train", "eval"]
    assert {"loss", "lr", "samples_per_s", "tokens_per_s", "mfu", "grad_norm"} <= rows[0].keys()
    assert rows[-1]["eval_loss"] > 0
    assert json.loads((tmp_path / "s2" / "train_config.json").read_text())["stage"] == "finetune"


def test_print_config_shows_resolved_options(capsys):
    assert main(["train", "--config", "world_finetune", "--data", "d.json", "--init_from", "ckpt",
                 "--lr=1e-4", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["lr"] == 1e-4 and printed["cache_vision_features"] is True


@pytest.mark.parametrize("argv, message", [
    (["--config", "no_such_preset"], "no_such_preset: config file not found"),
    (["--data", "d.json", "--init_from", "c", "--bogus=1"], "overrides: unknown option 'bogus'"),
    (["--data", "d.json", "--init_from", "c", "--epochs=many"], "overrides: epochs must be a number"),
    (["--data", "d.json"], "give 'init_from' (a checkpoint) or both 'vision' and 'llm'"),
    (["--data", "missing.json", "--init_from", "nowhere"], "nowhere: not a directory"),
])
def test_bad_options_are_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_a_yaml_error_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 1e-3\nepochs: [1\n")
    assert main(["train", "--config", str(bad)]) == 1
    assert f"{bad}:" in capsys.readouterr().err


def test_stray_arguments_are_refused(capsys):
    assert main(["train", "--config", "world_pretrain", "stray"]) == 1
    assert "override 'stray': expected --key=value" in capsys.readouterr().err
