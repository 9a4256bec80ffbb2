"""`vinstruct convert` end to end: the formats a user brings, the errors a user sees."""

import json
import subprocess
import sys

import pytest
import torch
from official_layout import write_official_checkpoint
from transformers import LlavaForConditionalGeneration

import vinstruct
from vinstruct.cli import main
from vinstruct.model.build import build_model
from vinstruct.model.io import save_model


def test_help_lists_formats_and_options(capsys):
    with pytest.raises(SystemExit) as done:
        main(["convert", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for word in ("official", "llava-hf", "--vision", "--base", "--lora", "--pad-vocab-to", "--strict"):
        assert word in out
    main(["--help"])
    assert "convert" in capsys.readouterr().out


def test_official_to_llava_hf_on_the_command_line(tiny_parts, tmp_path, capsys):
    vision_dir, llm_dir = tiny_parts
    official = write_official_checkpoint(tmp_path / "llava-v1.5-tiny", vision_dir, llm_dir, vision_name="clip-tiny")
    code = main(["convert", "--from", "official", "--vision", str(vision_dir), "--to", "llava-hf",
                 str(official), str(tmp_path / "served")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "note: llava-hf tokenizes a prompt as one string" in captured.err
    assert "wrote llava-hf checkpoint" in captured.out
    hf = LlavaForConditionalGeneration.from_pretrained(str(tmp_path / "served"))
    model = vinstruct.load(official, vision=vision_dir)
    assert torch.equal(hf.model.multi_modal_projector.linear_2.weight, model.projector[2].weight)


def test_dtype_option_casts_the_weights(tiny_checkpoint, tmp_path):
    assert main(["convert", "--dtype", "bfloat16", str(tiny_checkpoint), str(tmp_path / "bf16")]) == 0
    assert main(["convert", str(tmp_path / "bf16"), str(tmp_path / "still")]) == 0  # auto keeps bf16
    assert vinstruct.load(tmp_path / "still", dtype=None).dtype == torch.float32  # loading widens by default
    config = json.loads((tmp_path / "still" / "config.json").read_text())
    assert config["model_type"] == "vinstruct_llava"
    from safetensors import safe_open

    with safe_open(str(tmp_path / "still" / "model.safetensors"), framework="pt") as handle:
        assert handle.get_slice("llm.lm_head.weight").get_dtype() == "BF16"


def test_errors_are_one_line_and_exit_1(tiny_parts, tiny_checkpoint, tmp_path, capsys):
    vision_dir, llm_dir = tiny_parts
    save_model(build_model(str(vision_dir), str(llm_dir), projector="linear"), tmp_path / "linear")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    cases = [
        (["--to", "llava-hf", str(tmp_path / "linear"), str(tmp_path / "x")], "projector is 'linear'"),
        ([str(tmp_path / "bert"), str(tmp_path / "x")], "unknown checkpoint format (model_type 'bert')"),
        ([str(tmp_path / "nowhere"), str(tmp_path / "x")], "nowhere: not a directory"),
        (["--pad-vocab-to", "64", str(tiny_checkpoint), str(tmp_path / "x")], "llava-hf exports only"),
        (["--vision", str(vision_dir), str(tiny_checkpoint), str(tmp_path / "x")], "official LLaVA sources only"),
        (["--lora", str(tmp_path), str(tiny_checkpoint), str(tmp_path / "x")], "adapter_config.json: not found"),
        (["--template", "nope", str(tiny_checkpoint), str(tmp_path / "x")], "unknown chat template 'nope'"),
    ]
    for args, message in cases:
        assert main(["convert", *args]) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "x").exists()


def test_info_reads_foreign_formats_directly(tiny_parts, tmp_path):
    vision_dir, llm_dir = tiny_parts
    official = write_official_checkpoint(tmp_path / "llava-tiny", vision_dir, llm_dir)
    out = subprocess.run([sys.executable, "-m", "vinstruct", "info", "--json", str(official)],
                         capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    assert (info["format"], info["tokenization"], info["projector"]) == ("official", "chunks", "mlp2x_gelu")
