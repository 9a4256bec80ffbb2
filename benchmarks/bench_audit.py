"""Data audit: speed on the shapes world's data, and how well it finds planted errors.

1. A shapes world (`--images`, seed 0) and its train split's conversation / detail / complex data from
   the scripted teacher (in-process, real HTTP), as the demo writes it (boxes for every type).
2. Audit speed: `audit_samples` over that data, 3 runs with a fresh auditor each (median): samples/s
   of wall time and per CPU-second of the auditing process (goal: >= 2,000 samples/s, so that the
   paper's 158K samples take under two minutes).
3. Acceptance figures on the same images: the clean data's grounded share of checkable claims
   (goal >= 99 %), and precision / recall on data whose teacher planted errors in 20 % of its
   answers (goals >= 0.95 / >= 0.90).

Prints a markdown section and writes it to docs/results/audit.md.
    python benchmarks/bench_audit.py [--images 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from run_all import machine  # noqa: E402  (the same machine line as docs/RESULTS.md)

REPEATS = 3


def scripted_data(world: Path, out: Path, plant=None) -> Path:
    from vinstruct.eval.endpoints import scripted_responders
    from vinstruct.endpoint.client import EndpointConfig
    from vinstruct.generate.pipeline import GenerateOptions, generate
    from vinstruct.generate.prompts import TEACHER_TYPES
    from vinstruct.generate.scripted import DEFAULT_MODEL_NAME, create_app
    from vinstruct.generate.server import running_server

    with running_server(create_app(scripted_responders(plant))) as url:
        generate(GenerateOptions(coco_dir=world, out=out, split="train", types=TEACHER_TYPES,
                                 teacher=EndpointConfig(base_url=url, model=DEFAULT_MODEL_NAME, concurrency=16),
                                 boxes_for=frozenset(TEACHER_TYPES), progress=False))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="world size (80 %% train; default 2000, as the demo)")
    args = parser.parse_args()

    from vinstruct.audit.planted import score_planted
    from vinstruct.audit.run import audit_samples
    from vinstruct.data.coco import CocoSet
    from vinstruct.data.formats import load_llava_json
    from vinstruct.generate.scripted.planted import PlantPlan
    from vinstruct.world import generate_world

    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        world = work / "world"
        generate_world(world, images=args.images, seed=0, size=64, progress=False)
        coco = CocoSet.load(world, "train")
        clean = load_llava_json(scripted_data(world, work / "clean.json"))
        walls, cpus, result = [], [], None
        for _ in range(REPEATS):
            started, cpu = time.perf_counter(), time.process_time()
            result = audit_samples(clean, coco, "clean.json")
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
        log = work / "planted.jsonl"
        planted_data = scripted_data(world, work / "planted.json", PlantPlan(rate=0.2, seed=0, log=log))
        planted = score_planted(audit_samples(load_llava_json(planted_data), coco, "planted.json"), log, coco)

    wall, cpu = statistics.median(walls), statistics.median(cpus)
    stats, samples = result.stats, len(clean)
    claims = sum(stats["claims"].values())
    rate_wall, rate_cpu = samples / wall, samples / cpu
    kinds = ", ".join(f"{k} {v['recall']:.3f} ({v['planted']})" for k, v in planted["recall_by_kind"].items())
    lines = [
        "## Data audit (`benchmarks/bench_audit.py`)",
        "",
        f"`python benchmarks/bench_audit.py --images {args.images}` on {machine()}. Data: the scripted teacher's "
        f"conversation, detail and complex samples for the {len(coco.images):,} train images of a {args.images:,}-image "
        f"shapes world (boxes for every type, as the demo), {samples:,} samples, {sum(stats['turns'].values()):,} "
        f"answers, {claims:,} claims. Median of {REPEATS} runs, one process (one core), a fresh auditor each run.",
        "",
        "| measure | value | goal |",
        "|---|---:|---:|",
        f"| audit speed, wall clock | **{rate_wall:,.0f} samples/s** | >= 2,000 |",
        f"| audit speed, per CPU-second of the auditing process | {rate_cpu:,.0f} samples/s | |",
        f"| time for 158K samples at the wall-clock rate | {158_000 / rate_wall:.0f} s | < 120 s |",
        f"| clean data: grounded share of checkable claims | **{100 * stats['grounded_rate']:.2f} %** | >= 99 % |",
        f"| planted errors (20 % of answers): precision | **{planted['precision']:.3f}** | >= 0.95 |",
        f"| planted errors: recall | **{planted['recall']:.3f}** | >= 0.90 |",
        "",
        f"Planted answers in the data: {planted['planted_in_data']:,}; flagged answers: {planted['flagged']:,}; "
        f"recall by kind (planted): {kinds}.",
        f"Load average: {load_before} before, {' '.join(f'{x:.1f}' for x in os.getloadavg())} after (the machine is "
        "shared; the per-CPU-second rate is what one free core gives).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = ROOT / "docs" / "results" / "audit.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
