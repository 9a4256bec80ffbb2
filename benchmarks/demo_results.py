"""The demo's section of docs/RESULTS.md: time per stage and the quality table of finished demo runs.

    make demo && make demo-quick
    python benchmarks/demo_results.py runs/demo runs/demo-quick     # -> docs/results/demo.md, train_world.md
    python benchmarks/run_all.py <names>                            # (or make bench) reassembles RESULTS.md

Every number is read from the run directories (demo_log.json and the evaluation results.json files).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ABLATIONS = ["same_budget", "no_stage1", "caption_only", "scratch_lm", "no_warm_start", "linear_projector", "last_layer"]


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(value) -> str:
    return "—" if value is None else (f"{value:.1f}" if isinstance(value, float) else str(value))


def _locate(run: Path, recorded: str) -> Path:
    """A path the demo recorded (relative to where it ran) found inside the run directory `run`."""
    path = Path(recorded)
    if path.exists() or run.name not in path.parts:
        return path
    parts = path.parts
    return run.joinpath(*parts[len(parts) - parts[::-1].index(run.name):])


def run_summary(run: Path) -> dict:
    log = _read(run / "demo_log.json")
    if log is None:
        raise SystemExit(f"{run}: no demo_log.json (run `vinstruct demo --out {run}` first)")
    steps = {name: rec.get("seconds") for name, rec in log["steps"].items() if rec.get("status") == "done"}
    metrics = {}
    for suite in ("world", "pope", "llava-bench", "scienceqa"):
        result = _read(run / "eval" / "full" / suite / "results.json")
        metrics[suite] = result["metrics"] if result else {}
    for name in ABLATIONS:
        result = _read(run / "eval" / name / "results.json")
        metrics[name] = result["metrics"] if result else {}
    return {"name": run.name, "size": log["meta"]["settings"]["name"],
            "ablation_scale": log["meta"]["settings"]["ablation_scale"], "machine": log["meta"].get("machine"),
            "started": log["meta"].get("started"), "steps": steps, "metrics": metrics}


def section(runs: list[dict]) -> str:
    lines = ["## Demo (`make demo`, `make demo-quick`)", ""]
    for r in runs:
        lines.append(f"- `{r['name']}` (size `{r['size']}`), started {r['started']} on {r['machine']}: "
                     f"**{sum(r['steps'].values()) / 60:.1f} minutes** of step wall time.")
    if any(r["metrics"][name] for r in runs for name in ABLATIONS):
        lines.append("- Ablations train a fraction of the full recipe's stage-2 epochs (`--ablation-scale`; `same_budget` is "
                     "the full recipe trained as long, their reference): "
                     + ", ".join(f"`{r['name']}` {r['ablation_scale']:.2g}" for r in runs) + ".")
    names = sorted({step for r in runs for step in r["steps"]}, key=lambda s: min(
        list(r["steps"]).index(s) if s in r["steps"] else 99 for r in runs))
    lines += ["", "Seconds per step:", "", "| step | " + " | ".join(r["name"] for r in runs) + " |",
              "|---|" + "---|" * len(runs)]
    lines += [f"| {s} | " + " | ".join(_fmt(r["steps"].get(s)) for r in runs) + " |" for s in names]
    lines += ["| **total** | " + " | ".join(f"{sum(r['steps'].values()):.0f}" for r in runs) + " |"]
    rows = [
        ("world exact QA, all (held-out test split) %", "world", "accuracy"),
        ("· image-blind (same questions, no image) %", "world", "image-blind accuracy"),
        ("· unseen shape-colour pairs %", "world", "unseen accuracy"),
        ("· count / color / shape %", "world", ("count accuracy", "color accuracy", "shape accuracy")),
        ("· position / existence %", "world", ("position accuracy", "existence accuracy")),
        ("POPE accuracy random / popular / adversarial %", "pope",
         ("random accuracy", "popular accuracy", "adversarial accuracy")),
        ("LLaVA-Bench-style relative score (scripted judge) %", "llava-bench", "relative score"),
        ("· conversation / detail / complex %", "llava-bench",
         ("conversation relative", "detail relative", "complex relative")),
        ("ScienceQA-format: model / judge ensemble %", "scienceqa", ("accuracy", "ensemble accuracy")),
    ] + [(f"ablation {name}: world exact QA %", name, "accuracy") for name in ABLATIONS]
    lines += ["", "Quality:", "", "| measure | " + " | ".join(r["name"] for r in runs) + " |",
              "|---|" + "---|" * len(runs)]
    for label, suite, keys in rows:
        keys = keys if isinstance(keys, tuple) else (keys,)
        cells = [" / ".join(_fmt(r["metrics"][suite].get(k)) for k in keys) for r in runs]
        if suite in ABLATIONS and not any(r["metrics"][suite] for r in runs):
            continue  # no run trained this ablation
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def training_section(run: Path) -> str:
    """Stage 1 and stage 2 of the demo's full recipe with the world presets: steps, time, loss, speed, curves."""
    import shutil
    import statistics

    log = _read(run / "demo_log.json")
    result = log["steps"]["train_full"]["result"]
    rows = []
    for stage, title in (("stage1", "1: projector only (`world_pretrain`)"), ("stage2", "2: instruction tuning (`world_finetune`)")):
        metrics = [json.loads(line) for line in _locate(run, result[f"{stage}_metrics"]).read_text().splitlines() if line]
        train = [m for m in metrics if m.get("kind") == "train"]
        timing = result["timings"][stage]
        rows.append(f"| {title} | {train[-1]['step']} | {train[-1]['epoch']:.1f} | {timing['total_s']:.0f} s | "
                    f"{train[0]['loss']:.2f} → {train[-1]['loss']:.2f} | "
                    f"{statistics.median(m['tokens_per_s'] for m in train):,.0f} | "
                    f"{100 * statistics.median(m['mfu'] for m in train):.0f} % |")
        curve = _locate(run, result[f"{stage}_curve"])
        if curve.is_file():
            shutil.copyfile(curve, ROOT / "docs" / "results" / f"train_world_{stage}_loss.png")
    return "\n".join([
        "## Training presets on the shapes world",
        "",
        f"The full recipe of the `{log['meta']['settings']['name']}` demo run ({run.name}, started "
        f"{log['meta'].get('started')}, {log['meta'].get('machine')}): the `world_pretrain` and "
        "`world_finetune` presets on the bootstrapped base encoders, stage-2 data from the scripted teacher "
        "plus ScienceQA-format problems. Tokens/s and MFU are medians of the logged intervals (MFU against "
        "the matmul peak measured at the start of each run).",
        "",
        "| stage | steps | epochs | time | loss first → last logged | tokens/s | MFU |",
        "|---|---:|---:|---:|---|---:|---:|",
        *rows,
        "",
        "![stage-1 loss](train_world_stage1_loss.png)",
        "![stage-2 loss](train_world_stage2_loss.png)",
        "",
    ])


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    text = section([run_summary(Path(a)) for a in argv])
    out = ROOT / "docs" / "results" / "demo.md"
    out.write_text(text)
    (ROOT / "docs" / "results" / "train_world.md").write_text(training_section(Path(argv[0])))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
