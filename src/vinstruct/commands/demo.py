"""`vinstruct demo`: world -> base encoders -> teacher -> data -> stage 1 -> stage 2 -> eval -> ablations -> report."""

from __future__ import annotations

DESCRIPTION = """Run the whole Visual Instruction Tuning recipe offline, on the generated shapes world.

Steps: generate a COCO-format world; train a CLIP-style vision encoder and a small LM on it
from scratch; start the scripted teacher on a free loopback port; generate stage-1
(caption expansion) and stage-2 (conversation, detail, complex) data through it; train
stage 1 and stage 2; evaluate (world exact QA with an image-blind baseline, POPE,
LLaVA-Bench-style judged score, ScienceQA-format with the judge ensemble); train and
evaluate the ablations; write OUT/REPORT.md.

Re-running skips every step whose output exists, so an interrupted demo resumes.
Sizes: default (about 10 minutes on 2 CPU cores), quick (about 3 minutes), tiny (a smoke test)."""


def configure(parser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    parser.add_argument("--quick", action="store_true", help="the smaller demo (same as --size quick)")
    parser.add_argument("--size", choices=("default", "quick", "tiny"), default=None,
                        help="demo size (default: default, or quick with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 2)")
    parser.add_argument("--no-ablations", action="store_true", help="skip the ablation runs")
    parser.add_argument("--ablation-scale", type=float, default=None, metavar="F",
                        help="ablations train this fraction of the full recipe's stage-2 epochs (default: 0.2 for "
                             "the default size, to fit 10 minutes; 1 = as long as the full recipe)")


def run(args) -> int:
    import dataclasses

    from vinstruct.demo import preset, run_demo

    settings = preset(args.size or ("quick" if args.quick else "default"))
    if args.threads:
        settings = dataclasses.replace(settings, threads=args.threads)
    if args.ablation_scale is not None:
        if not 0 < args.ablation_scale <= 1:
            from vinstruct.errors import VinstructError

            raise VinstructError(f"--ablation-scale must be in (0, 1], got {args.ablation_scale}")
        settings = dataclasses.replace(settings, ablation_scale=args.ablation_scale)
    if args.no_ablations:
        settings = dataclasses.replace(settings, ablations=())
    report = run_demo(args.out, settings)
    print(f"report: {report}")
    return 0
