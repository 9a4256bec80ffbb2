"""Run the evaluation suites by name: one call per suite, or all of them into one directory.

    from vinstruct.eval.suites import run_all
    results = run_all("runs/demo/stage2", "runs/demo/world", "runs/demo/eval", limit=50)
    # runs/demo/eval/<suite>/results.{json,md,png} and runs/demo/eval/summary.md

Suites that need a judge or a teacher use the endpoints given, or else the scripted ones,
served on 127.0.0.1 for the duration of the call.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from vinstruct.data.formats import atomic_write_text
from vinstruct.errors import VinstructError

SUITES = ("world", "pope", "llava-bench", "scienceqa")
DEFAULT_MAX_NEW_TOKENS = {"world": 8, "pope": 6, "llava-bench": 128, "scienceqa": 16}


@contextlib.contextmanager
def _endpoints(judge, teacher, need_judge: bool, need_teacher: bool, journal_dir: Path):
    """The given judge/teacher, or scripted ones for those missing and needed."""
    if (need_judge and judge is None) or (need_teacher and teacher is None):
        from vinstruct.eval.endpoints import make_judge, make_teacher, scripted_server

        with scripted_server() as url:
            if need_judge and judge is None:
                judge = make_judge(url, journal=journal_dir / "judge_journal.jsonl")
            if need_teacher and teacher is None:
                teacher = make_teacher(url)
            yield judge, teacher
    else:
        yield judge, teacher


def run_suite(suite: str, model, out_dir: str | os.PathLike, *, world_dir=None, split: str = "test",
              limit: int | None = None, batch_size: int = 16, max_new_tokens: int | None = None,
              conv_mode: str | None = None, seed: int = 0, judge=None, teacher=None, use_judge: bool = True,
              problems=None, pid_splits=None, image_root=None, option_text: bool = False, blind: bool = True,
              answer_hint: str = "", progress: bool = True) -> dict:
    """Run one suite (see `SUITES`) and return its results dictionary (also written to out_dir).

    model: a loaded LlavaModel or a checkpoint directory. judge: a `Judge`; teacher: a
    `TeacherConfig` (scripted ones when None). use_judge=False skips the ScienceQA ensemble.
    """
    from vinstruct.eval import llava_bench, pope, scienceqa, sqa_world, world_qa
    from vinstruct.eval.predict import resolve_model

    if suite not in SUITES:
        raise VinstructError(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}")
    if suite != "scienceqa" and world_dir is None:
        raise VinstructError(f"suite {suite!r} needs --world DIR (a world or COCO-format directory)")
    if suite == "scienceqa" and problems is None and world_dir is None:
        raise VinstructError("suite 'scienceqa' needs --problems FILE (or --world DIR to generate problems)")
    out = Path(out_dir)
    model, _ = resolve_model(model)
    common = {"batch_size": batch_size, "conv_mode": conv_mode, "progress": progress,
              "max_new_tokens": max_new_tokens or DEFAULT_MAX_NEW_TOKENS[suite]}
    if suite == "world":
        return world_qa.evaluate(model, world_dir, out, split, limit_images=limit, blind=blind, seed=seed,
                                 answer_hint=answer_hint, **common)
    if suite == "pope":
        return pope.evaluate(model, world_dir, out, split, limit_images=limit, seed=seed, **common)
    if suite == "llava-bench":
        with _endpoints(judge, teacher, True, True, out) as (judge, teacher):
            return llava_bench.evaluate(model, world_dir, out, judge, teacher, split, limit_images=limit or 30,
                                        seed=seed, **common)
    problem_limit = limit
    if problems is None:
        problems, pid_splits = sqa_world.build_problems(world_dir, split, out / "problems", seed, limit)
        image_root = image_root or out / "problems" / "images" / split
        problem_limit = None
    with _endpoints(judge, None, use_judge, False, out) as (judge, _):
        return scienceqa.evaluate(model, problems, out, pid_splits=pid_splits, split=split, image_root=image_root,
                                  judge=judge if use_judge else None, limit=problem_limit,
                                  option_text=option_text, **common)


def run_all(model, world_dir, out_dir: str | os.PathLike, suites=SUITES, **options) -> dict[str, dict]:
    """Every suite into out_dir/<suite>/ (one scripted server shared), plus out_dir/summary.md."""
    from vinstruct.eval import report
    from vinstruct.eval.predict import resolve_model

    model, _ = resolve_model(model)
    out = Path(out_dir)
    results = {}
    needs = [s for s in suites if s in ("llava-bench", "scienceqa")]
    with _endpoints(options.pop("judge", None), options.pop("teacher", None), bool(needs),
                    "llava-bench" in suites, out) as (judge, teacher):
        for suite in suites:
            results[suite] = run_suite(suite, model, out / suite, world_dir=world_dir, judge=judge, teacher=teacher,
                                       **options)
    atomic_write_text(out / "summary.md", report.compare([out]))
    return results
