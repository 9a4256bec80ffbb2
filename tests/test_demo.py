"""`vinstruct demo` end to end at the tiny size: every step runs for real (world, bootstrap, scripted
teacher over HTTP, both stages, every evaluation suite, ablations), REPORT.md and its figures exist,
the report's numbers are read from the evaluation outputs, and a second run resumes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

STEPS = ["world", "bootstrap", "data", "train_full", "eval_full", "chat", "train_same_budget", "eval_same_budget",
         "train_no_stage1", "eval_no_stage1",
         "train_caption_only", "eval_caption_only", "train_linear_projector", "eval_linear_projector",
         "train_last_layer", "eval_last_layer"]


def _demo(out: Path) -> subprocess.CompletedProcess:
    # Ablations at half the budget, so that the same-budget reference is trained too; bf16 as the
    # default and quick sizes run on a CPU with AMX (the tiny size's own setting is fp32).
    return subprocess.run([sys.executable, "-m", "vinstruct", "demo", "--quick", "--size", "tiny", "--out", str(out),
                           "--ablations", "--ablation-scale", "0.5", "--precision", "bf16"],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo") / "run"
    done = _demo(out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def _row(report: str, label: str) -> list[str]:
    line = next(line for line in report.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_every_step_ran_and_the_teacher_stopped(demo):
    out, done = demo
    log = json.loads((out / "demo_log.json").read_text())
    assert [name for name in STEPS if log["steps"].get(name, {}).get("status") == "done"] == STEPS
    for name in STEPS:
        assert f"[{name}]" in done.stdout
    url = re.search(r"serving at (http://127\.0\.0\.1:\d+)", done.stdout).group(1)
    import httpx

    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/v1/models", timeout=2)


def test_report_sections_and_figures_exist(demo):
    out, _ = demo
    report = (out / "REPORT.md").read_text()
    for heading in ("## Targets", "## Setup and timing", "## Base encoders", "## Data", "## Training curves",
                    "### World exact QA", "### POPE-style", "### LLaVA-Bench-style", "### ScienceQA-format",
                    "## Ablations", "## Examples", "## Reproduce", "CLIP ViT-L/14 and Vicuna", "Arithmetic: bf16"):
        assert heading in report, heading
    assert json.loads((out / "runs" / "full" / "stage2" / "train_config.json").read_text())["precision"] == "bf16"
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert any(f.endswith("loss_curve.png") for f in figures) and any("example_" in f for f in figures)
    for figure in figures:
        path = out / figure
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure


def test_short_answer_prompt_stands_where_the_settings_say_in_training_and_evaluation(demo):
    """The VQA data and the exact questions agree on where the prompt stands; the report's examples
    table shows the questions themselves and says the prompt once."""
    from vinstruct.data.templates import with_hint
    from vinstruct.world.vqa import SHORT_ANSWER_PROMPT

    out, _ = demo
    position = json.loads((out / "demo_log.json").read_text())["meta"]["settings"]["hint_position"]
    vqa = json.loads((out / "data" / "stage2_vqa.json").read_text())
    humans = [t["value"].removeprefix("<image>\n") for s in vqa for t in s["conversations"] if t["from"] == "human"]
    assert humans and all(h == with_hint(h.replace(SHORT_ANSWER_PROMPT, "").strip(), SHORT_ANSWER_PROMPT, position)
                          for h in humans)
    questions = [json.loads(line) for line in (out / "eval" / "full" / "world" / "questions.jsonl").open()]
    assert all(q["text"] == with_hint(q["text"].replace(SHORT_ANSWER_PROMPT, "").strip(), SHORT_ANSWER_PROMPT,
                                      position) for q in questions)
    report = (out / "REPORT.md").read_text()
    where = "above" if position == "before" else "under"
    assert f"asked with this line {where} it: *{SHORT_ANSWER_PROMPT}*" in report
    examples = report.split("## Examples", 1)[1]
    rows = [line for line in examples.splitlines() if line.startswith("| ") and not line.startswith("| question")]
    assert rows and not any(SHORT_ANSWER_PROMPT in row for row in rows)


def test_report_numbers_come_from_the_eval_outputs(demo):
    out, _ = demo
    world = out / "eval" / "full" / "world" / "results.json"
    results = json.loads(world.read_text())
    # Plant distinctive numbers in the evaluation outputs: a re-run skips every step and rewrites the
    # report, which must then show exactly these.
    results["scores"]["overall"]["accuracy"] = 87.6
    results["scores"]["by_type"] = {k: {**v, "accuracy": 11.1 + i} for i, (k, v)
                                    in enumerate(sorted(results["scores"]["by_type"].items()))}
    results["image_blind"]["overall"]["accuracy"] = 33.3
    world.write_text(json.dumps(results))
    for name, value in (("no_stage1", 42.4), ("same_budget", 55.5)):
        ablation = out / "eval" / name / "results.json"
        planted = json.loads(ablation.read_text())
        planted["scores"]["overall"]["accuracy"] = value
        ablation.write_text(json.dumps(planted))

    again = _demo(out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped") >= len(STEPS), again.stdout
    report = (out / "REPORT.md").read_text()
    assert _row(report, "**all**")[2:] == ["87.6", "33.3"]
    first_type = sorted(results["scores"]["by_type"])[0]
    assert _row(report, first_type)[2] == "11.1"
    assert _row(report, "(a) no stage 1")[1] == "42.4"
    assert "Held-out exact QA ≥ 85 %: **87.6 %** — met" in report
    # ablations are compared with the full recipe trained on their (same) budget
    assert "Full recipe (same stage-2 budget) beats (a) no stage 1: 55.5 vs 42.4 % — yes" in report


def test_resuming_with_another_seed_is_refused_and_changes_nothing(demo):
    out, _ = demo
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    done = subprocess.run([sys.executable, "-m", "vinstruct", "demo", "--size", "tiny", "--out", str(out),
                           "--precision", "bf16", "--seed", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "seed: 0 -> 1" in done.stderr and "another --out" in done.stderr, done.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_stage2_batch_is_split_into_accumulated_micro_batches():
    import dataclasses

    from vinstruct.demo.pipeline import stage2_batching
    from vinstruct.demo.settings import preset

    assert stage2_batching(preset("default")) == {"per_device_batch_size": 8, "grad_accum": 2}
    assert stage2_batching(preset("tiny")) == {"per_device_batch_size": 8, "grad_accum": 1}
    uneven = dataclasses.replace(preset("default"), stage2_batch=12, stage2_micro_batch=8)
    assert stage2_batching(uneven) == {"per_device_batch_size": 12, "grad_accum": 1}
    whole = dataclasses.replace(preset("default"), stage2_micro_batch=0)
    assert stage2_batching(whole) == {"per_device_batch_size": 16, "grad_accum": 1}


def _recipe_configs(recipe, settings, tmp_path, monkeypatch):
    """The training configs train_recipe would run (training itself replaced by a recorder)."""
    import vinstruct.train
    from vinstruct.demo.pipeline import DemoPaths, train_recipe

    runs = []

    class Done:
        checkpoint, metrics, loss_curve, steps, final_loss, timings = tmp_path / "model", "m", None, 1, 0.0, {}

    def record(config):
        runs.append(config)
        return Done()

    monkeypatch.setattr(vinstruct.train, "run_training", record)
    train_recipe(recipe, DemoPaths(tmp_path), settings, None)
    return runs


def test_default_recipe_two_tokens_lora_and_a_gentle_stage1_from_the_warm_start(tmp_path, monkeypatch):
    from vinstruct.demo.pipeline import ABLATIONS, COLD_STAGE1_LR, Recipe
    from vinstruct.demo.settings import preset

    s = preset("default")
    stage1, stage2 = _recipe_configs(Recipe("full"), s, tmp_path, monkeypatch)
    assert stage1.projector_tokens == 2 and stage1.projector_file and stage1.lr == s.stage1_lr < COLD_STAGE1_LR
    assert stage2.lora and stage2.lora_r == 32 and stage2.lora_target_modules == "all-linear"
    assert stage2.lora_merge and not stage2.train_projector and stage2.lr == s.stage2_lr
    # A projector that starts random (no warm start) gets the paper's stage-1 learning rate.
    cold, _ = _recipe_configs(ABLATIONS["no_warm_start"](1.0), s, tmp_path, monkeypatch)
    assert cold.projector_file is None and cold.lr == COLD_STAGE1_LR
    # The from-scratch LM brings its own recipe: one token per feature, everything tuned, no LoRA.
    scratch1, scratch2 = _recipe_configs(ABLATIONS["scratch_lm"](1.0), s, tmp_path, monkeypatch)
    assert scratch1.projector_tokens == 1 and not scratch2.lora and scratch2.llm_train_layers == 0


def test_ablations_option_takes_all_or_a_named_choice_and_names_a_wrong_one(tmp_path, capsys):
    from vinstruct.cli import main
    from vinstruct.commands.demo import chosen_ablations
    from vinstruct.demo.settings import ALL_ABLATIONS

    assert chosen_ablations("all") == ALL_ABLATIONS
    assert chosen_ablations("scratch_lm, no_stage1") == ("no_stage1", "scratch_lm")  # the report's order
    assert main(["demo", "--size", "tiny", "--out", str(tmp_path / "d"), "--ablations", "no_stage1,stage3"]) == 1
    err = capsys.readouterr().err
    assert "unknown ablation 'stage3'" in err and "no_stage1, caption_only" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()  # refused before anything was written



def test_bootstrapping_again_keeps_the_converted_lm_and_the_warm_projector(tmp_path, monkeypatch):
    """Adding the from-scratch-LM ablation to a finished demo re-runs the bootstrap step: it replaces the
    encoders it trains and nothing else of base/ (the converted pretrained LM, the warm-started projector)."""
    import dataclasses

    import vinstruct.bootstrap.run
    from vinstruct.demo.pipeline import DemoPaths, make_base_models
    from vinstruct.demo.settings import preset

    paths = DemoPaths(tmp_path)
    for kept in (paths.packaged_lm / "config.json", paths.warm_projector):
        kept.parent.mkdir(parents=True)
        kept.write_text("kept")
    (paths.base / "vision").mkdir()
    (paths.base / "vision" / "old.bin").write_text("old")

    def fake_bootstrap(world, out, settings, overwrite, say):
        assert settings.train_lm
        for name in ("vision", "llm"):
            (Path(out) / name).mkdir(parents=True)
            (Path(out) / name / "config.json").write_text(name)
        (Path(out) / "bootstrap_log.json").write_text("{}")
        return {"vision": {"retrieval": {}, "probe": {}}, "llm": {"perplexity_val": 1.0}, "wall_seconds": 1.0}

    monkeypatch.setattr(vinstruct.bootstrap.run, "run_bootstrap", fake_bootstrap)
    settings = dataclasses.replace(preset("default"), ablations=("scratch_lm",))
    make_base_models(paths, settings, say=lambda _: None)
    assert (paths.packaged_lm / "config.json").read_text() == "kept" and paths.warm_projector.read_text() == "kept"
    assert (paths.base / "vision" / "config.json").read_text() == "vision" and not (paths.base / "vision" / "old.bin").exists()
    assert (paths.base / "llm" / "config.json").is_file() and (paths.base / "bootstrap_log.json").is_file()
    assert not (tmp_path / ".bootstrap").exists()
