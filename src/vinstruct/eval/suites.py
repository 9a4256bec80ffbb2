"""The evaluation suites by name: one registry entry each, one call per suite, or all into one directory.

    from vinstruct.eval.suites import run_all
    results = run_all("runs/demo/stage2", "runs/demo/world", "runs/demo/eval", limit=50)
    # runs/demo/eval/<suite>/results.{json,md,png} and runs/demo/eval/summary.md

A suite is a module that defines

    evaluate_suite(model, out: Path, request: SuiteRequest) -> dict   # results, also written to out
    suite_questions(out: Path, request: SuiteRequest) -> list[Path]    # `vinstruct eval build-questions`

plus one entry in SUITES below; `vinstruct eval` takes its choices, help and dispatch from there.
This module stays light (no torch): the CLI reads it to build `--help`.

Suites that need a judge or a teacher use the endpoints given, or else the scripted ones,
served on 127.0.0.1 for the duration of the call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from vinstruct.atomic import atomic_write_text
from vinstruct.errors import VinstructError


@dataclass(frozen=True)
class Suite:
    name: str
    module: str  # defines evaluate_suite and suite_questions
    max_new_tokens: int  # default answer length limit
    help: str  # for `vinstruct eval --help`
    needs_world: bool = True  # False: the module checks its own inputs (and says which are missing)
    judge: str = ""  # "required", or "optional" (used unless --no-judge); a scripted one when none is given
    teacher: bool = False  # needs a teacher (a scripted one when none is given)


SUITES: dict[str, Suite] = {}


def register(suite: Suite) -> Suite:
    """Add a suite (or replace one of the same name)."""
    SUITES[suite.name] = suite
    return suite


for _suite in (
    Suite("world", "vinstruct.eval.world_qa", 8, "exact QA on the world's held-out split (count, color, shape, position,\n"
          "existence), with the image-blind baseline and the unseen-combination subset"),
    Suite("pope", "vinstruct.eval.pope", 6, "yes/no object existence with random, popular and adversarial negatives"),
    Suite("llava-bench", "vinstruct.eval.llava_bench", 128, "teacher references vs model answers, scored 1-10 by a judge; "
          "relative score", judge="required", teacher=True),
    Suite("scienceqa", "vinstruct.eval.sqa_world", 16, "multiple choice by subject/context/grade, plus the judge ensemble\n"
          "(from --problems/--pid-splits, or generated from --world)", needs_world=False, judge="optional"),
):
    register(_suite)


@dataclass
class SuiteRequest:
    """What a suite is asked to do; each suite reads the fields it knows."""
    world_dir: str | os.PathLike | None = None
    split: str = "test"
    limit: int | None = None
    batch_size: int = 16
    max_new_tokens: int | None = None
    conv_mode: str | None = None
    seed: int = 0
    judge: object = None  # a Judge
    judge_batch: object = None  # BatchSettings for the scripted judge made when `judge` is None (--judge-batch)
    teacher: object = None  # a EndpointConfig
    use_judge: bool = True
    problems: str | os.PathLike | None = None
    pid_splits: str | os.PathLike | None = None
    image_root: str | os.PathLike | None = None
    option_text: bool = False
    blind: bool = True
    answer_hint: str = ""
    hint_position: str = "after"  # the hint's line: "after" the question (LLaVA-1.5) or "before" it
    progress: bool = True

    def generation_options(self) -> dict:
        """The keyword arguments every suite's `evaluate` takes for answering."""
        return {"batch_size": self.batch_size, "conv_mode": self.conv_mode, "progress": self.progress,
                "max_new_tokens": self.max_new_tokens}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise VinstructError(f"unknown suite {name!r}; expected one of {', '.join(SUITES)}") from None


def suite_module(suite: Suite):
    return importlib.import_module(suite.module)


def _needs(suite: Suite, request: SuiteRequest) -> tuple[bool, bool]:
    """(needs a judge, needs a teacher)."""
    judge = suite.judge == "required" or (suite.judge == "optional" and request.use_judge)
    return judge, suite.teacher


@contextlib.contextmanager
def _endpoints(judge, teacher, need_judge: bool, need_teacher: bool, journal_dir: Path, judge_batch=None):
    """The given judge/teacher, or scripted ones for those missing and needed (judge_batch: the scripted
    judge's BatchSettings, when it should use the Batch API)."""
    if (need_judge and judge is None) or (need_teacher and teacher is None):
        from vinstruct.eval.endpoints import make_judge, make_teacher, scripted_server

        with scripted_server() as url:
            if need_judge and judge is None:
                judge = make_judge(url, journal=journal_dir / "judge_journal.jsonl", batch=judge_batch)
            if need_teacher and teacher is None:
                teacher = make_teacher(url)
            yield judge, teacher
    else:
        yield judge, teacher


def run_suite(name: str, model, out_dir: str | os.PathLike, **options) -> dict:
    """Run one suite (see `SUITES`) and return its results dictionary (also written to out_dir).

    model: a loaded LlavaModel or a checkpoint directory; options: the fields of SuiteRequest
    (judge: a `Judge`; teacher: a `EndpointConfig`; scripted ones when None and needed;
    use_judge=False skips an optional judge).
    """
    from vinstruct.eval.predict import resolve_model

    suite = get_suite(name)
    request = SuiteRequest(**options)
    if suite.needs_world and request.world_dir is None:
        raise VinstructError(f"suite {name!r} needs --world DIR (a world or COCO-format directory)")
    out = Path(out_dir)
    model, _ = resolve_model(model)
    request.max_new_tokens = request.max_new_tokens or suite.max_new_tokens
    needs = _needs(suite, request)
    with _endpoints(request.judge, request.teacher, *needs, out, request.judge_batch) as (judge, teacher):
        request = dataclasses.replace(request, judge=judge, teacher=teacher)
        return suite_module(suite).evaluate_suite(model, out, request)


def build_questions(name: str, out_dir: str | os.PathLike, **options) -> list[Path]:
    """A suite's question files, without a model."""
    suite = get_suite(name)
    return suite_module(suite).suite_questions(Path(out_dir), SuiteRequest(**options))


def run_all(model, world_dir, out_dir: str | os.PathLike, suites=None, **options) -> dict[str, dict]:
    """Every suite into out_dir/<suite>/ (one scripted server shared), plus out_dir/summary.md."""
    from vinstruct.eval import report
    from vinstruct.eval.predict import resolve_model

    suites = list(SUITES) if suites is None else suites
    model, _ = resolve_model(model)
    out = Path(out_dir)
    results = {}
    needs = [_needs(get_suite(s), SuiteRequest(use_judge=options.get("use_judge", True))) for s in suites]
    with _endpoints(options.pop("judge", None), options.pop("teacher", None), any(j for j, _ in needs),
                    any(t for _, t in needs), out, options.get("judge_batch")) as (judge, teacher):
        for suite in suites:
            results[suite] = run_suite(suite, model, out / suite, world_dir=world_dir, judge=judge, teacher=teacher,
                                       **options)
    atomic_write_text(out / "summary.md", report.compare([out]))
    return results
