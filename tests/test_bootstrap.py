"""Bootstrapped base models: standard transformers directories that the model core loads like
CLIP and Vicuna, a report with retrieval, probes and perplexity, and clear errors."""

from __future__ import annotations

import dataclasses

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPImageProcessor, CLIPVisionModel

from vinstruct.bootstrap.clip import ClipSettings, build_clip, encode_texts, family_batches
from vinstruct.bootstrap.lm import LmSettings
from vinstruct.bootstrap.probe import fit_probe
from vinstruct.bootstrap.run import LOG_NAME, BootstrapSettings, format_report, run_bootstrap
from vinstruct.model.tokenizer import train_bpe_tokenizer
from vinstruct.cli import main
from vinstruct.errors import VinstructError
from vinstruct.world import generate_world

TINY = BootstrapSettings(
    clip=ClipSettings(hidden=32, layers=2, heads=2, text_hidden=32, text_layers=1, embed_dim=32, steps=4,
                      batch_size=8, warmup=2),
    lm=LmSettings(hidden=32, layers=1, heads=2, intermediate=64, block=64, steps=4, batch_size=4, warmup=2),
    vocab_size=400,
    probe_images=40,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bworld") / "world"
    generate_world(out, images=60, seed=1, size=32, progress=False)
    return out


@pytest.fixture(scope="module")
def base(world, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("base") / "base"
    torch.manual_seed(0)
    report = run_bootstrap(world, out, TINY, progress=False, say=lambda _: None)
    return out, report


def test_outputs_are_standard_transformers_directories(base):
    out, _ = base
    vision = CLIPVisionModel.from_pretrained(str(out / "vision"))
    processor = CLIPImageProcessor.from_pretrained(str(out / "vision"))
    assert vision.config.image_size == 32 and processor.crop_size["height"] == 32
    llm = AutoModelForCausalLM.from_pretrained(str(out / "llm"))
    tokenizer = AutoTokenizer.from_pretrained(str(out / "llm"))
    assert llm.config.model_type == "llama" and llm.config.eos_token_id == tokenizer.eos_token_id
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "How many circles are there?"}],
                                           tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("USER: How many circles are there? ASSISTANT:")


def test_model_core_builds_and_runs_on_the_bootstrapped_parts(base, world):
    from vinstruct.data.encoding import EncodingSpec, encode_prompt
    from vinstruct.model.build import build_model

    out, _ = base
    model = build_model(str(out / "vision"), str(out / "llm"), vision_feature_pool=2)
    assert model.num_image_tokens == 4  # 32 px / patch 8 = 4x4 patches, pooled 2x2
    pixels = model.image_processor.load([next((world / "images" / "val").glob("*.png"))])
    spec = EncodingSpec.for_model(model)
    ids = torch.tensor([encode_prompt(spec, [("human", "<image>\nWhat shape is the red object?")])])
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels).logits
    assert logits.shape == (1, ids.shape[1], len(model.tokenizer)) and torch.isfinite(logits).all()


def test_report_and_log_hold_the_quality_figures(base):
    out, report = base
    log = json.loads((out / LOG_NAME).read_text())
    assert len(log["losses"]["clip"]) == 4 and len(log["losses"]["lm"]) == 4
    vision = log["vision"]
    assert vision["retrieval"]["candidates"] == 6  # the whole (tiny) val split
    assert set(vision["probe"]) == {"shape", "color", "size", "horizontal", "vertical", "count"}
    assert all(0 <= v <= 100 for v in vision["probe"].values())
    assert set(vision["probe_untrained"]) == set(vision["probe"])
    assert log["llm"]["perplexity_val"] > 1 and len(log["llm"]["samples"]) == 3
    text = format_report(report)
    assert "top-1" in text and "perplexity" in text and "shape" in text


def test_same_seed_gives_the_same_models(base, world, tmp_path):
    out, _ = base
    run_bootstrap(world, tmp_path / "again", TINY, progress=False, say=lambda _: None)
    for part, cls in (("vision", CLIPVisionModel), ("llm", AutoModelForCausalLM)):
        first = cls.from_pretrained(str(out / part)).state_dict()
        second = cls.from_pretrained(str(tmp_path / "again" / part)).state_dict()
        assert all(torch.equal(first[k], second[k]) for k in first)


def test_vision_only_bootstrap_writes_the_same_encoder_and_no_lm(base, world, tmp_path):
    out, _ = base
    report = run_bootstrap(world, tmp_path / "vision_only", replace(TINY, train_lm=False),
                           progress=False, say=lambda _: None)
    assert report["llm"] is None and not (tmp_path / "vision_only" / "llm").exists()
    first = CLIPVisionModel.from_pretrained(str(out / "vision")).state_dict()
    second = CLIPVisionModel.from_pretrained(str(tmp_path / "vision_only" / "vision")).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert "llm" not in format_report(report)


def test_clip_text_tower_pools_at_its_own_end_token():
    tokenizer = train_bpe_tokenizer(["a red circle to the left of a blue star"] * 20, vocab_size=300)
    model = build_clip(tokenizer, 32, replace(TINY.clip), max_text_len=16).eval()
    ids, mask = encode_texts(tokenizer, ["a red circle", "a blue star to the left of a red circle"], 16)
    ends = mask.sum(1) - 1
    assert (ids[torch.arange(2), ends] == len(tokenizer)).all()
    out = model.text_model(input_ids=ids, attention_mask=mask)
    assert torch.allclose(out.pooler_output, out.last_hidden_state[torch.arange(2), ends])


def test_family_batches_keep_families_together():
    families = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, -1, -1]
    batches = family_batches(families, 8, torch.Generator().manual_seed(0))
    assert sorted(i for b in batches for i in b) == list(range(14))
    for batch in batches:
        for family in (0, 1, 2):
            members = [i for i in batch if families[i] == family]
            assert len(members) in (0, 4)


def test_linear_probe_separates_what_is_separable_and_not_noise():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (400,), generator=g)
    centers = torch.randn(3, 16, generator=g) * 3
    x = centers[labels] + torch.randn(400, 16, generator=g)
    assert fit_probe(x[:300], labels[:300], x[300:], labels[300:], 3) > 95
    noise = torch.randn(400, 16, generator=g)
    assert fit_probe(noise[:300], labels[:300], noise[300:], labels[300:], 3) < 55


def test_cli_bootstrap_errors(world, tmp_path, capsys):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    assert main(["bootstrap", "--world", str(world), "--out", str(occupied)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert (occupied / "keep.txt").read_text() == "mine"
    assert main(["bootstrap", "--world", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 1
    assert "not a directory" in capsys.readouterr().err
    assert main(["bootstrap", "--world", str(world), "--out", str(tmp_path / "o"), "--clip-steps", "0"]) == 1
    assert "--clip-steps must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_world_missing_a_file_is_named(world, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(world, broken)
    (broken / "annotations" / "instances_train.json").unlink()
    with pytest.raises(VinstructError, match="instances_train.json: not found"):
        run_bootstrap(broken, tmp_path / "out", TINY, progress=False, say=lambda _: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_bootstrap_end_to_end(world, tmp_path, capsys):
    args = ["bootstrap", "--world", str(world), "--out", str(tmp_path / "base"), "--quiet", "--clip-steps", "3",
            "--lm-steps", "3", "--vision-hidden", "32", "--vision-layers", "1", "--lm-hidden", "32",
            "--lm-layers", "1", "--clip-batch", "8", "--lm-batch", "2", "--vocab-size", "300"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "retrieval" in printed and "perplexity" in printed and "linear probes" in printed
    assert (tmp_path / "base" / "vision" / "config.json").is_file()
