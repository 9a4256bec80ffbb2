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

from vinstruct.errors import VinstructError
from vinstruct.demo.settings import DemoSettings, eval_hint, resolved_precision
from vinstruct.demo.steps import StepLog
from vinstruct.generate.prompts import TEACHER_TYPES



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
    def vqa_data(self) -> Path:
        return self.data / "stage2_vqa.json"

    @property
    def packaged_lm(self) -> Path:
        return self.base / "packaged_llm"

    @property
    def warm_projector(self) -> Path:
        return self.base / "warm_projector" / "mm_projector.safetensors"

    @property
    def stage2_mix(self) -> Path:
        """What stage 2 trains on: the instruction data plus the ScienceQA-format problems."""
        return self.data / "stage2_train.json"


# ---- steps -------------------------------------------------------------------------------------
def make_world(paths: DemoPaths, s: DemoSettings) -> dict:
    from vinstruct.world import generate_world

    manifest = generate_world(paths.world, images=s.images, seed=s.seed, size=s.image_size, overwrite=True)
    return {"splits": manifest["splits"], "held_out": manifest["held_out"]}


def llm_dir(paths: DemoPaths, kind: str) -> Path:
    return paths.packaged_lm if kind == "packaged" else paths.base / "llm"


def make_packaged_lm(paths: DemoPaths, say) -> dict:
    from vinstruct.bootstrap.packaged_lm import write_packaged_lm
    from vinstruct.bootstrap.text_qa import text_qa_score

    note = write_packaged_lm(paths.packaged_lm, say=say)
    qa = text_qa_score(paths.packaged_lm, paths.world, "val")
    return {"source": note, "text_qa_val": qa}


def make_warm_projector(paths: DemoPaths, s: DemoSettings, say) -> dict:
    """Fit the projector to the LM's words for each region's contents (packaged LM only), save it alone."""
    from vinstruct.bootstrap.projector_init import warm_start_projector
    from vinstruct.model.build import build_model
    from vinstruct.train.model_init import save_projector_file

    model = build_model(str(paths.base / "vision"), str(paths.packaged_lm), vision_feature_pool=s.pool,
                        projector_tokens=s.projector_tokens, template="chatml")
    figures = warm_start_projector(model, paths.world, "train", steps=s.warm_start_steps, seed=s.seed, say=say)
    save_projector_file(model, paths.warm_projector)
    return figures


def needs_scratch_lm(s: DemoSettings) -> bool:
    """Whether any model of this demo is built on the from-scratch LM (its base, or the ablation)."""
    return s.llm == "scratch" or "scratch_lm" in s.ablations


def make_base_models(paths: DemoPaths, s: DemoSettings, say) -> dict:
    import dataclasses

    import shutil

    from vinstruct.bootstrap.run import LOG_NAME as BOOTSTRAP_LOG, BootstrapSettings, run_bootstrap

    # The from-scratch LM (about a minute) is trained only when a model of this run is built on it.
    settings = BootstrapSettings(seed=s.seed, train_lm=needs_scratch_lm(s), probe_pool=s.pool)
    settings.clip = dataclasses.replace(settings.clip, steps=s.clip_steps)
    settings.lm = dataclasses.replace(settings.lm, steps=s.lm_steps)
    # run_bootstrap replaces the directory it writes, and base/ also holds the converted pretrained LM and
    # the warm-started projector (a later `--ablations scratch_lm` re-runs this step): it writes beside
    # base/, and only its own entries are moved in, its log last (the step's mark of completion).
    staging = paths.out / ".bootstrap"
    report = run_bootstrap(paths.world, staging, settings, overwrite=True, say=say)
    paths.base.mkdir(parents=True, exist_ok=True)
    for name in ("vision", "llm", BOOTSTRAP_LOG):
        target = paths.base / name
        if target.is_dir():
            shutil.rmtree(target)
        if (staging / name).exists():
            os.replace(staging / name, target)
    shutil.rmtree(staging, ignore_errors=True)
    vision, llm = report["vision"], report["llm"]
    return {"vision": {"retrieval": vision["retrieval"], "probe": vision["probe"]},
            "llm": llm and {"perplexity_val": llm["perplexity_val"], "text_qa_val": llm.get("text_qa_val")},
            "wall_seconds": report["wall_seconds"]}


def make_data(paths: DemoPaths, s: DemoSettings, teacher_url: str) -> dict:
    from vinstruct.endpoint.client import EndpointConfig
    from vinstruct.generate.pipeline import GenerateOptions, generate

    teacher = EndpointConfig(base_url=teacher_url, model="vinstruct-scripted", api_key="none", concurrency=16)
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
    stats["scienceqa"] = {"samples": len(sqa), "with_image": sum("image" in x for x in sqa)}
    # LLaVA-1.5 adds short-answer VQA written by a program from scene graphs (GQA); here, from the
    # world's annotations. With the teacher's conversations it is most of what stage 2 reads.
    from vinstruct.world.vqa import vqa_samples

    vqa = vqa_samples(paths.world, "train", seed=s.seed, max_turns=s.vqa_turns, prompt_position=s.hint_position)
    write_json(paths.vqa_data, vqa)
    stats["vqa"] = {"samples": len(vqa), "questions": sum(len(x["conversations"]) // 2 for x in vqa)}
    # The mix: every VQA sample, a seeded share of the teacher's samples and of the ScienceQA problems
    # (stage 2 runs a fixed number of steps; the rest would never be reached).
    import random

    rng = random.Random(s.seed)
    instruct = read_json(paths.stage2_data)
    chosen = (rng.sample(instruct, min(s.stage2_instruct, len(instruct)))
              + rng.sample(sqa, min(s.stage2_sqa, len(sqa))))
    write_json(paths.stage2_mix, vqa + chosen)
    stats["mix"] = {"vqa": len(vqa), "teacher": min(s.stage2_instruct, len(instruct)),
                    "scienceqa": min(s.stage2_sqa, len(sqa))}
    # Ablation data: the same images, caption expansion only (no instruction data).
    stats["caption_only"] = generate(GenerateOptions(out=paths.caption_only_data, types=("caption",),
                                                     per_image={"caption": 1}, **{**common, "seed": s.seed + 1})
                                     ).as_dict()
    return stats


# Stage 1 of a projector that starts random (no warm start: the ablations) runs at the paper's learning rate;
# the default's gentle one is for keeping a warm start's word-like tokens.
COLD_STAGE1_LR = 2e-3


class Recipe:
    """One model to train: the full recipe or an ablation of it."""

    def __init__(self, name: str, *, stage1: bool = True, projector: str = "mlp2x_gelu", layer: int = -2,
                 stage2_data: str = "instruct", scale: float = 1.0, llm: str | None = None,
                 warm_start: bool | None = None, note: str = ""):
        self.name, self.stage1, self.projector, self.layer = name, stage1, projector, layer
        self.stage2_data, self.scale, self.note = stage2_data, scale, note
        self.llm, self.warm_start = llm, warm_start

    def settings(self, s: DemoSettings) -> DemoSettings:
        """The demo settings this recipe trains with (the from-scratch LM brings its own recipe)."""
        import dataclasses

        from vinstruct.demo.settings import SCRATCH_LM_RECIPE

        llm = self.llm or s.llm
        out = dataclasses.replace(s, llm=llm, **(SCRATCH_LM_RECIPE if llm == "scratch" and s.llm != "scratch" else {}))
        if self.warm_start is not None:
            out = dataclasses.replace(out, projector_warm_start=self.warm_start)
        if llm == "scratch":
            out = dataclasses.replace(out, projector_warm_start=False)
        return out


def _steps(steps: int, scale: float) -> int:
    return max(1, round(steps * scale))


def stage2_batching(s: DemoSettings) -> dict:
    """Micro-batch size and accumulation steps that make up stage 2's batch of `s.stage2_batch` samples."""
    micro = max(1, min(s.stage2_micro_batch or s.stage2_batch, s.stage2_batch))
    if s.stage2_batch % micro:
        micro = s.stage2_batch  # an uneven split would change the batch; keep it whole
    return {"per_device_batch_size": micro, "grad_accum": s.stage2_batch // micro}


def train_recipe(recipe: Recipe, paths: DemoPaths, s: DemoSettings, stage1_dir: Path | None) -> dict:
    """Stage 1 (unless skipped or shared) then stage 2; returns paths and timings."""
    from vinstruct.data.templates import DEFAULT_TEMPLATE
    from vinstruct.train import run_training
    from vinstruct.train.config import load_config

    s = recipe.settings(s)
    run_dir = paths.runs / recipe.name
    template = "chatml" if s.llm == "packaged" else DEFAULT_TEMPLATE
    shared = {"vision": str(paths.base / "vision"), "llm": str(llm_dir(paths, s.llm)), "projector_type": recipe.projector,
              "vision_feature_layer": recipe.layer, "vision_feature_pool": s.pool,
              "projector_tokens": s.projector_tokens, "num_threads": s.threads,
              "image_dir": str(paths.world), "seed": s.seed, "template": template,
              "precision": resolved_precision(s), "release_memory_every": s.release_memory_every}
    warm = s.projector_warm_start and recipe.projector == "mlp2x_gelu" and recipe.layer == -2
    if warm:
        shared["projector_file"] = str(paths.warm_projector)
    timings, result = {}, {}
    if recipe.stage1 and stage1_dir is None:
        config = load_config("world_pretrain", {**shared, "data": str(paths.stage1_data),
                                                "output_dir": str(run_dir / "stage1"),
                                                "max_steps": _steps(s.stage1_steps, recipe.scale),
                                                "lr": s.stage1_lr if warm else max(s.stage1_lr, COLD_STAGE1_LR),
                                                "per_device_batch_size": s.stage1_batch})
        stage1 = run_training(config)
        stage1_dir = stage1.checkpoint
        timings["stage1"] = stage1.timings
        result["stage1_metrics"] = str(stage1.metrics)
        result["stage1_curve"] = str(stage1.loss_curve) if stage1.loss_curve else None
    data = paths.stage2_mix if recipe.stage2_data == "instruct" else paths.caption_only_data
    lora = bool(s.stage2_lora_r)
    # Partial tuning and LoRA keep the projector as stage 1 left it: partial tuning's backward pass then stops
    # at the lowest tuned layer (about twice the steps per minute of tuning everything).
    keep_projector = lora or s.stage2_llm_layers > 0
    overrides = {"data": str(data), "output_dir": str(run_dir / "stage2"),
                 "max_steps": _steps(s.stage2_steps, recipe.scale), "lr": s.stage2_lr,
                 "num_threads": s.threads, "image_dir": str(paths.world), **stage2_batching(s),
                 "seed": s.seed, "eval_every": 0, "llm_train_layers": 0 if lora else s.stage2_llm_layers,
                 "precision": shared["precision"], "release_memory_every": s.release_memory_every,
                 "train_projector": not keep_projector}
    if lora:  # adapters on every linear layer, merged into the saved model
        overrides.update({"lora": True, "lora_r": s.stage2_lora_r, "lora_alpha": 2 * s.stage2_lora_r,
                          "lora_dropout": 0.0, "lora_target_modules": "all-linear"})
    if keep_projector:
        overrides["projector_lr"] = None
    if stage1_dir is not None:
        overrides["init_from"] = str(stage1_dir)
    else:  # no stage 1: the projector as initialised (warm start or random) on the base encoders
        overrides.update({k: shared[k] for k in ("vision", "llm", "projector_type", "vision_feature_layer",
                                                 "vision_feature_pool", "projector_tokens", "template")})
        if "projector_file" in shared:
            overrides["projector_file"] = shared["projector_file"]
    stage2 = run_training(load_config("world_finetune", overrides))
    timings["stage2"] = stage2.timings
    result.update({"model": str(stage2.checkpoint), "stage2_metrics": str(stage2.metrics),
                   "stage2_curve": str(stage2.loss_curve) if stage2.loss_curve else None,
                   "stage1_model": str(stage1_dir) if stage1_dir else None,
                   "stage2_steps": stage2.steps, "final_loss": stage2.final_loss, "timings": timings})
    return result


def full_evaluation(model_dir: str, paths: DemoPaths, s: DemoSettings, url: str) -> dict:
    """Every suite, each sized for the time budget: free-form answers (LLaVA-Bench) cost far more per image."""
    from vinstruct.atomic import atomic_write_text
    from vinstruct.eval import report
    from vinstruct.eval.endpoints import make_judge, make_teacher
    from vinstruct.eval.suites import run_suite

    model = evaluation_model(model_dir, s)
    out = paths.eval / "full"
    judge = make_judge(url, journal=out / "judge_journal.jsonl")
    limits = {"world": s.eval_images, "pope": s.pope_images, "llava-bench": s.bench_images, "scienceqa": s.eval_images}
    results = {}
    for suite, limit in limits.items():
        results[suite] = run_suite(suite, model, out / suite, world_dir=paths.world, limit=limit, judge=judge,
                                   teacher=make_teacher(url), progress=True, answer_hint=eval_hint(s),
                                   hint_position=s.hint_position)
    atomic_write_text(out / "summary.md", report.compare([out]))
    return {suite: r.get("metrics", {}) for suite, r in results.items()}


def evaluation_model(model_dir: str, s: DemoSettings):
    """The trained model as the demo evaluates it: in bf16 where the machine runs bf16 natively (about
    1.4x faster answers here; the scores move within a point or two of fp32's), else as saved (fp32)."""
    from vinstruct.eval.predict import resolve_model

    model, _ = resolve_model(model_dir)
    return model.to(torch.bfloat16) if resolved_precision(s) == "bf16" else model


CHAT_QUESTIONS = ("What do you see in this picture?", "Which of these shapes is the largest, and what color is it?",
                  "Is anything on the right side of the image? Tell me about it.")


def chat_transcript(model_dir: str, paths: DemoPaths, s: DemoSettings) -> dict:
    """Three free-form turns about a held-out image through the terminal chat's own code path."""
    from vinstruct.data.coco import CocoSet
    from vinstruct.data.formats import write_json
    from vinstruct.model.generation import SamplingParams
    from vinstruct.serve.assistant import Assistant
    from vinstruct.serve.chat import TerminalChat

    images = CocoSet.load(paths.world, "test").images
    image = next((i for i in images if len(i.objects) >= 2), images[0])
    with Assistant.load(model_dir, max_batch_size=1, threads=s.threads) as assistant:
        chat = TerminalChat(assistant, SamplingParams(max_new_tokens=80), write=lambda _text: None)
        chat.add_image(str(image.path))
        turns = [{"user": q, "assistant": chat.ask(q).strip()} for q in CHAT_QUESTIONS]
    objects = ", ".join(f"{o.category} at {[round(v) for v in o.bbox]}" for o in image.objects)
    transcript = {"image": str(Path(image.path).resolve().relative_to(paths.world.resolve())), "objects": objects,
                  "turns": turns}
    write_json(paths.eval / "full" / "chat_transcript.json", transcript)
    return {"turns": len(turns)}


# ---- the whole demo ------------------------------------------------------------------------------
ABLATIONS = {
    "same_budget": lambda scale: Recipe("same_budget", scale=scale,
                                        note="the full recipe on the ablations' budget (their reference)"),
    "no_stage1": lambda scale: Recipe("no_stage1", stage1=False, scale=scale,
                                      note="stage 2 straight from the base encoders (no stage-1 alignment)"),
    "caption_only": lambda scale: Recipe("caption_only", stage2_data="captions", scale=scale,
                                         note="stage 2 on caption-expansion pairs instead of instruction data"),
    "scratch_lm": lambda scale: Recipe("scratch_lm", llm="scratch", scale=scale,
                                       note="the small LM bootstrapped from scratch instead of the pretrained one "
                                            "(its own recipe, same steps)"),
    "no_warm_start": lambda scale: Recipe("no_warm_start", warm_start=False, scale=scale,
                                          note="stage 1 from a random projector (no warm start)"),
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
    recorded = log.data.get("meta", {}).get("settings")
    conflicts = settings.resume_conflicts(recorded) if recorded else []
    if conflicts:  # resuming would mix two recipes' outputs (a world of one seed, a model of another)
        raise VinstructError(f"{paths.out}: a demo with other settings ran here ({'; '.join(conflicts)}); "
                             "give another --out, or delete the directory to start over")
    now = time.strftime("%Y-%m-%d %H:%M")
    # "started" is the first run's start: a resumed demo keeps it (and records its own as last_run).
    log.set_meta(settings=settings.to_dict(), machine=machine_description(),
                 started=log.data.get("meta", {}).get("started", now), last_run=now,
                 precision=resolved_precision(settings))
    log.run("world", f"generate a {settings.images}-image shapes world (COCO format)", [paths.world / "world.json"],
            lambda: make_world(paths, settings))
    scratch = needs_scratch_lm(settings)
    log.run("bootstrap", "train the base vision encoder (CLIP-style)" + (" and the small LM" if scratch else "")
            + " from scratch", [paths.base / "bootstrap_log.json"] + ([paths.base / "llm" / "config.json"] if scratch else []),
            lambda: make_base_models(paths, settings, say))
    # With the from-scratch LM as the base, the pretrained-LM ablations have nothing to compare.
    ablations = [a for a in settings.ablations if a in ABLATIONS
                 and not (settings.llm == "scratch" and a in ("scratch_lm", "no_warm_start"))]
    needs_packaged = settings.llm == "packaged"
    if needs_packaged:
        log.run("base_lm", "write the pretrained SmolLM2-135M-Instruct from its pip package as a transformers "
                "directory", [paths.packaged_lm / "config.json"], lambda: make_packaged_lm(paths, say))
        if settings.projector_warm_start:
            log.run("warm_start", "warm-start the projector on the LM's words for each region's contents",
                    [paths.warm_projector], lambda: make_warm_projector(paths, settings, say))
    with scripted_server() as url:  # stopped when the block ends: normally, on errors and on Ctrl-C
        say(f"scripted teacher and judge serving at {url}")
        log.run("data", "generate stage-1 (caption expansion) and stage-2 (instruction) data through the teacher",
                [paths.stage1_data, paths.stage2_data, paths.vqa_data, paths.stage2_mix, paths.caption_only_data],
                lambda: make_data(paths, settings, url))
        full = log.run("train_full", "stage 1 (feature alignment) then stage 2 (end-to-end instruction tuning)",
                       [paths.runs / "full" / "stage2" / "model"],
                       lambda: train_recipe(Recipe("full"), paths, settings, None))
        log.run("eval_full", "evaluate: world exact QA, POPE, LLaVA-Bench-style, ScienceQA-format",
                [paths.eval / "full" / "summary.md"], lambda: full_evaluation(full["model"], paths, settings, url))
        log.run("chat", "a three-turn chat about a held-out image", [paths.eval / "full" / "chat_transcript.json"],
                lambda: chat_transcript(full["model"], paths, settings))
        if ablations and settings.ablation_scale < 1:
            ablations = ["same_budget", *ablations]
        for name in ablations:
            recipe = ABLATIONS[name](settings.ablation_scale)
            shares_stage1 = name == "caption_only" or (name == "same_budget" and settings.ablation_scale == 1)
            shared_stage1 = Path(full["stage1_model"]) if shares_stage1 else None
            trained = log.run(f"train_{name}", f"ablation: {recipe.note}", [paths.runs / name / "stage2" / "model"],
                              lambda r=recipe, s1=shared_stage1: train_recipe(r, paths, settings, s1))
            log.run(f"eval_{name}", f"evaluate ablation {name} (world exact QA)",
                    [paths.eval / name / "results.json"],
                    lambda t=trained, n=name: run_suite("world", evaluation_model(t["model"], settings), paths.eval / n, world_dir=paths.world,
                                                        limit=settings.eval_images, blind=False,
                                                        answer_hint=eval_hint(settings),
                                                        hint_position=settings.hint_position)["metrics"])
        if ablations:
            log.set_meta(ablations_run=ablations)
    # The report is cheap and always rewritten, so it reflects every step's current output.
    started = time.perf_counter()
    write_report(paths, settings, log)
    say(f"[report] {paths.report} written in {time.perf_counter() - started:.1f} s")
    return paths.report


def machine_description() -> str:
    from vinstruct.machine import cpu_name

    threads = torch.get_num_threads()
    return f"{cpu_name()}, {os.cpu_count()} logical CPUs ({threads} torch threads), torch {torch.__version__}"
