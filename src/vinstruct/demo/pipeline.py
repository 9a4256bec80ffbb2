"""The end-to-end demo: world -> base encoders -> teacher -> data -> stage 1 -> stage 2 -> eval -> ablations -> report.

Every step is resumable (see steps.py). The scripted teacher and judge run on a
free loopback port for the data and evaluation steps and stop when the demo
ends, on an error or on Ctrl-C alike.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vinstruct.demo.settings import DemoSettings
from vinstruct.demo.steps import StepLog

TEACHER_TYPES = ("conversation", "detail", "complex")


class DemoPaths:
    def __init__(self, out: Path):
        self.out = out
        self.world = out / "world"
        self.base = out / "base"
        self.data = out / "data"
        self.runs = out / "runs"
        self.eval = out / "eval"
        self.report = out / "REPORT.md"

    @property
    def stage1_data(self) -> Path:
        return self.data / "stage1_captions.json"

    @property
    def stage2_data(self) -> Path:
        return self.data / "stage2_instruct.json"

    @property
    def caption_only_data(self) -> Path:
        return self.data / "stage2_captions_only.json"

    @property
    def sqa_data(self) -> Path:
        return self.data / "stage2_scienceqa.json"

    @property
    def stage2_mix(self) -> Path:
        """What stage 2 trains on: the instruction data plus the ScienceQA-format problems."""
        return self.data / "stage2_train.json"


# ---- steps -------------------------------------------------------------------------------------
def make_world(paths: DemoPaths, s: DemoSettings) -> dict:
    from vinstruct.world import generate_world

    manifest = generate_world(paths.world, images=s.images, seed=s.seed, size=s.image_size, overwrite=True)
    return {"splits": manifest["splits"], "held_out": manifest["held_out"]}


def make_base_models(paths: DemoPaths, s: DemoSettings, say) -> dict:
    import dataclasses

    from vinstruct.bootstrap.run import BootstrapSettings, run_bootstrap

    settings = BootstrapSettings(seed=s.seed)
    settings.clip = dataclasses.replace(settings.clip, steps=s.clip_steps)
    settings.lm = dataclasses.replace(settings.lm, steps=s.lm_steps)
    report = run_bootstrap(paths.world, paths.base, settings, overwrite=True, say=say)
    vision, llm = report["vision"], report["llm"]
    return {"vision": {"retrieval": vision["retrieval"], "probe": vision["probe"]},
            "llm": {"perplexity_val": llm["perplexity_val"], "text_qa_val": llm.get("text_qa_val")},
            "wall_seconds": report["wall_seconds"]}


def make_data(paths: DemoPaths, s: DemoSettings, teacher_url: str) -> dict:
    from vinstruct.generate.client import TeacherConfig
    from vinstruct.generate.pipeline import GenerateOptions, generate

    teacher = TeacherConfig(base_url=teacher_url, model="vinstruct-scripted", api_key="none", concurrency=16)
    stats = {}
    common = {"coco_dir": paths.world, "split": "train", "seed": s.seed, "progress": True,
              "image_root": paths.world}
    stats["stage1"] = generate(GenerateOptions(out=paths.stage1_data, types=("caption",),
                                               per_image={"caption": s.captions_per_image}, **common)).as_dict()
    # The shapes world's captions, like COCO's, leave objects out: give the teacher the boxes for every
    # type so that counts, positions and absences are stated with certainty.
    stats["stage2"] = generate(GenerateOptions(out=paths.stage2_data, types=TEACHER_TYPES, teacher=teacher,
                                               boxes_for=frozenset(TEACHER_TYPES), pack=True, **common)).as_dict()
    # The paper fine-tunes its ScienceQA model on ScienceQA's train split; here, problems in the same
    # format about the train scenes, mixed into stage 2 so that one model answers both.
    from vinstruct.data.formats import read_json, write_json
    from vinstruct.eval.sqa_world import training_samples

    sqa = training_samples(paths.world, "train", seed=s.seed, per_image=s.sqa_per_image)
    write_json(paths.sqa_data, sqa)
    write_json(paths.stage2_mix, read_json(paths.stage2_data) + sqa)
    stats["scienceqa"] = {"samples": len(sqa), "with_image": sum("image" in x for x in sqa)}
    # Ablation data: the same images, caption expansion only (no instruction data).
    stats["caption_only"] = generate(GenerateOptions(out=paths.caption_only_data, types=("caption",),
                                                     per_image={"caption": 1}, **{**common, "seed": s.seed + 1})
                                     ).as_dict()
    return stats


class Recipe:
    """One model to train: the full recipe or an ablation of it."""

    def __init__(self, name: str, *, stage1: bool = True, projector: str = "mlp2x_gelu", layer: int = -2,
                 stage2_data: str = "instruct", scale: float = 1.0, note: str = ""):
        self.name, self.stage1, self.projector, self.layer = name, stage1, projector, layer
        self.stage2_data, self.scale, self.note = stage2_data, scale, note


def train_recipe(recipe: Recipe, paths: DemoPaths, s: DemoSettings, stage1_dir: Path | None) -> dict:
    """Stage 1 (unless skipped or shared) then stage 2; returns paths and timings."""
    from vinstruct.train import run_training
    from vinstruct.train.config import load_config

    run_dir = paths.runs / recipe.name
    shared = {"vision": str(paths.base / "vision"), "llm": str(paths.base / "llm"), "projector_type": recipe.projector,
              "vision_feature_layer": recipe.layer, "vision_feature_pool": s.pool, "num_threads": s.threads,
              "image_dir": str(paths.world), "seed": s.seed}
    timings, result = {}, {}
    if recipe.stage1 and stage1_dir is None:
        config = load_config("world_pretrain", {**shared, "data": str(paths.stage1_data),
                                                "output_dir": str(run_dir / "stage1"),
                                                "epochs": s.stage1_epochs * recipe.scale})
        stage1 = run_training(config)
        stage1_dir = stage1.checkpoint
        timings["stage1"] = stage1.timings
        result["stage1_metrics"] = str(stage1.metrics)
        result["stage1_curve"] = str(stage1.loss_curve) if stage1.loss_curve else None
    data = paths.stage2_mix if recipe.stage2_data == "instruct" else paths.caption_only_data
    overrides = {"data": str(data), "output_dir": str(run_dir / "stage2"), "epochs": s.stage2_epochs * recipe.scale,
                 "lr": s.stage2_lr, "per_device_batch_size": s.stage2_batch, "num_threads": s.threads,
                 "image_dir": str(paths.world), "seed": s.seed, "eval_every": 0}
    if stage1_dir is not None:
        overrides["init_from"] = str(stage1_dir)
    else:  # no stage 1: a fresh (untrained) projector on the base encoders
        overrides.update({k: shared[k] for k in ("vision", "llm", "projector_type", "vision_feature_layer",
                                                 "vision_feature_pool")})
    stage2 = run_training(load_config("world_finetune", overrides))
    timings["stage2"] = stage2.timings
    result.update({"model": str(stage2.checkpoint), "stage2_metrics": str(stage2.metrics),
                   "stage2_curve": str(stage2.loss_curve) if stage2.loss_curve else None,
                   "stage1_model": str(stage1_dir) if stage1_dir else None,
                   "stage2_steps": stage2.steps, "final_loss": stage2.final_loss, "timings": timings})
    return result


def full_evaluation(model_dir: str, paths: DemoPaths, s: DemoSettings, url: str) -> dict:
    from vinstruct.eval.endpoints import make_judge, make_teacher
    from vinstruct.eval.suites import run_all

    judge = make_judge(url, journal=paths.eval / "full" / "judge_journal.jsonl")
    results = run_all(model_dir, paths.world, paths.eval / "full", limit=s.eval_images, judge=judge,
                      teacher=make_teacher(url), progress=True)
    return {suite: r.get("metrics", {}) for suite, r in results.items()}


# ---- the whole demo ------------------------------------------------------------------------------
ABLATIONS = {
    "same_budget": lambda scale: Recipe("same_budget", scale=scale,
                                        note="the full recipe on the ablations' stage-2 budget (their reference)"),
    "no_stage1": lambda scale: Recipe("no_stage1", stage1=False, scale=scale,
                                      note="stage 2 straight from the base encoders (projector untrained)"),
    "caption_only": lambda scale: Recipe("caption_only", stage2_data="captions", scale=scale,
                                         note="stage 2 on caption-expansion pairs instead of instruction data"),
    "linear_projector": lambda scale: Recipe("linear_projector", projector="linear", scale=scale,
                                             note="one linear layer (the paper) instead of mlp2x_gelu"),
    "last_layer": lambda scale: Recipe("last_layer", layer=-1, scale=scale,
                                       note="vision features from the last layer instead of the second-to-last"),
}


def run_demo(out: str | os.PathLike, settings: DemoSettings, say: Callable[[str], None] = print) -> Path:
    from vinstruct.demo.report import write_report
    from vinstruct.eval.endpoints import scripted_server
    from vinstruct.eval.suites import run_suite

    paths = DemoPaths(Path(out))
    paths.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(settings.threads)
    log = StepLog(paths.out, say)
    now = time.strftime("%Y-%m-%d %H:%M")
    # "started" is the first run's start: a resumed demo keeps it (and records its own as last_run).
    log.set_meta(settings=settings.to_dict(), machine=machine_description(),
                 started=log.data.get("meta", {}).get("started", now), last_run=now)
    log.run("world", f"generate a {settings.images}-image shapes world (COCO format)", [paths.world / "world.json"],
            lambda: make_world(paths, settings))
    log.run("bootstrap", "train the base vision encoder (CLIP-style) and the base LM from scratch",
            [paths.base / "bootstrap_log.json"], lambda: make_base_models(paths, settings, say))
    with scripted_server() as url:  # stopped when the block ends: normally, on errors and on Ctrl-C
        say(f"scripted teacher and judge serving at {url}")
        log.run("data", "generate stage-1 (caption expansion) and stage-2 (instruction) data through the teacher",
                [paths.stage1_data, paths.stage2_data, paths.stage2_mix, paths.caption_only_data],
                lambda: make_data(paths, settings, url))
        full = log.run("train_full", "stage 1 (feature alignment) then stage 2 (end-to-end instruction tuning)",
                       [paths.runs / "full" / "stage2" / "model"],
                       lambda: train_recipe(Recipe("full"), paths, settings, None))
        log.run("eval_full", "evaluate: world exact QA, POPE, LLaVA-Bench-style, ScienceQA-format",
                [paths.eval / "full" / "summary.md"], lambda: full_evaluation(full["model"], paths, settings, url))
        for name in settings.ablations:
            recipe = ABLATIONS[name](settings.ablation_scale)
            shared_stage1 = Path(full["stage1_model"]) if name in ("caption_only", "same_budget") else None
            trained = log.run(f"train_{name}", f"ablation: {recipe.note}", [paths.runs / name / "stage2" / "model"],
                              lambda r=recipe, s1=shared_stage1: train_recipe(r, paths, settings, s1))
            log.run(f"eval_{name}", f"evaluate ablation {name} (world exact QA)",
                    [paths.eval / name / "results.json"],
                    lambda t=trained, n=name: run_suite("world", t["model"], paths.eval / n, world_dir=paths.world,
                                                        limit=settings.eval_images, blind=False)["metrics"])
    # The report is cheap and always rewritten, so it reflects every step's current output.
    started = time.perf_counter()
    write_report(paths, settings, log)
    say(f"[report] {paths.report} written in {time.perf_counter() - started:.1f} s")
    return paths.report


def machine_description() -> str:
    from vinstruct.machine import cpu_name

    threads = torch.get_num_threads()
    return f"{cpu_name()}, {os.cpu_count()} logical CPUs ({threads} torch threads), torch {torch.__version__}"
