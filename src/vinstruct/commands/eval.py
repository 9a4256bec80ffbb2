"""`vinstruct eval`: run an evaluation suite, compare runs, or just build a suite's questions."""

from __future__ import annotations

from pathlib import Path

from vinstruct.data.templates import HINT_POSITIONS
from vinstruct.errors import VinstructError
from vinstruct.eval.suites import SUITES, build_questions


def _suites_help() -> str:
    width = max(len(name) for name in SUITES)
    lines = []
    for suite in SUITES.values():
        first, *rest = suite.help.splitlines()
        lines.append(f"  {suite.name.ljust(width)}  {first}")
        lines += [f"  {' ' * width}  {line}" for line in rest]
    return "\n".join(lines)


def _description() -> str:
    return f"""Evaluate a model and write results.json, results.md (a markdown table) and results.png.

suites:
{_suites_help()}

The judge and the teacher are any OpenAI-compatible endpoint (--judge-url, --teacher-url);
without one, the offline scripted judge and teacher are served on 127.0.0.1.

examples:
  vinstruct eval --model runs/demo/stage2 --suite world --world runs/demo/world --out runs/eval/world
  vinstruct eval --model M --suite llava-bench --world W --judge-url http://localhost:8000/v1 --judge-model gpt-4o
  vinstruct eval --model M --suite llava-bench --world W --judge-url URL --judge-model gpt-4o --judge-batch
  vinstruct eval --out runs/eval/M/llava-bench --judge-url URL --judge-batch-status
  vinstruct eval --model M --suite scienceqa --problems sqa/problems.json --pid-splits sqa/pid_splits.json \\
      --image-root sqa/images/test --judge-url URL
  vinstruct eval compare runs/eval/base runs/eval/lora
  vinstruct eval build-questions --world W --suite pope --out questions/pope"""


def __getattr__(name: str):
    # Built when asked for, so that a suite registered after this module was imported is listed too.
    if name == "DESCRIPTION":
        return _description()
    raise AttributeError(name)


def _common(parser) -> None:
    parser.add_argument("--world", default=None, help="world / COCO-format directory (annotations/, images/, world.json)")
    parser.add_argument("--split", default="test", help="split to evaluate on (default: test)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images (or problems)")
    parser.add_argument("--seed", type=int, default=0, help="seed for question sampling (default 0)")
    parser.add_argument("--answer-hint", default="",
                        help='world, pope: a line added to each question (under it unless --answer-hint-position before), '
                             'e.g. "Answer the question using '
                             'a single word or phrase." (LLaVA-1.5\'s short-answer prompt)')
    parser.add_argument("--answer-hint-position", choices=HINT_POSITIONS, default="after",
                        help="where the --answer-hint line goes: after the question (default, LLaVA-1.5) or "
                             "before it (for a model trained that way, e.g. a demo run with hint_position before)")


def configure(parser) -> None:
    parser.add_argument("--model", help="checkpoint directory to evaluate")
    parser.add_argument("--suite", choices=list(SUITES), help="which evaluation to run")
    parser.add_argument("--out", default=None, help="output directory (default: runs/eval/<model>/<suite>)")
    _common(parser)
    parser.add_argument("--batch-size", type=int, default=16, help="generation batch size (default 16)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="answer length limit (default per suite: "
                        + ", ".join(f"{s.name} {s.max_new_tokens}" for s in SUITES.values()) + ")")
    parser.add_argument("--conv-mode", default=None, help="chat template (default: the model's own)")
    parser.add_argument("--no-blind", action="store_true", help="world: skip the image-blind baseline")
    parser.add_argument("--judge-url", default=None, help="OpenAI-compatible base URL of the judge (…/v1)")
    parser.add_argument("--judge-model", default=None, help="judge model name")
    parser.add_argument("--judge-key", default=None, help="API key (default: $OPENAI_API_KEY)")
    parser.add_argument("--judge-price-in", type=float, default=0.0, help="judge price per 1M prompt tokens, for the cost")
    parser.add_argument("--judge-price-out", type=float, default=0.0, help="judge price per 1M completion tokens")
    batch = parser.add_argument_group("judge through the Batch API (half price, answered within 24 h)")
    batch.add_argument("--judge-batch", action="store_true",
                       help="send the judge requests the journal lacks through the Batch API, the rest online; "
                            "run the same command again to resume")
    batch.add_argument("--judge-batch-dir", type=Path, default=None,
                       help="the batch runs' files and state (default: judge_journal.batch beside the journal)")
    batch.add_argument("--judge-batch-discount", type=float, default=0.5,
                       help="batch price as a share of --judge-price-in/--judge-price-out (default 0.5)")
    batch.add_argument("--judge-batch-retries", type=int, default=2,
                       help="new batches for rows that failed on the server's side or expired (default 2); "
                            "what is left then is asked online")
    batch.add_argument("--judge-batch-poll", type=float, default=5.0,
                       help="seconds before the first poll; grows while nothing changes (default 5)")
    batch.add_argument("--judge-batch-max-requests", type=int, default=50_000,
                       help="requests per input file (default 50,000, the API's limit)")
    batch.add_argument("--judge-batch-status", action="store_true",
                       help="print the judge batches of this output's runs and stop")
    batch.add_argument("--judge-batch-cancel", action="store_true",
                       help="cancel the judge batches of this output's runs and stop")
    parser.add_argument("--teacher-url", default=None, help="llava-bench: endpoint for reference answers (default: the judge's)")
    parser.add_argument("--teacher-model", default=None, help="llava-bench: teacher model name")
    parser.add_argument("--teacher-key", default=None, help="llava-bench: teacher API key (default: the judge's)")
    parser.add_argument("--no-judge", action="store_true", help="scienceqa: skip the judge ensemble")
    parser.add_argument("--problems", default=None, help="scienceqa: problems.json (ScienceQA schema)")
    parser.add_argument("--pid-splits", default=None, help="scienceqa: pid_splits.json")
    parser.add_argument("--image-root", default=None, help="scienceqa: folder of <pid>/<image> (default: next to problems.json, images/<split>)")
    parser.add_argument("--option-text", action="store_true",
                        help="scienceqa: also accept a reply that is exactly one option's text")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="action", metavar="{compare,build-questions}")
    compare = sub.add_parser("compare", help="one table across evaluation runs")
    compare.add_argument("runs", nargs="+", help="run directories (a suite's output, or a folder of them)")
    compare.add_argument("--out", dest="compare_out", default=None, help="also write the table to this markdown file")
    build = sub.add_parser("build-questions", help="write a suite's question files from a world, without a model")
    build.add_argument("--suite", dest="build_suite", required=True, choices=list(SUITES))
    build.add_argument("--out", dest="build_out", required=True, help="output directory")
    _common(build)


def _build(args) -> int:
    if not args.world:
        raise VinstructError("build-questions needs --world DIR")
    for path in build_questions(args.build_suite, args.build_out, world_dir=args.world, split=args.split,
                                seed=args.seed, limit=args.limit, answer_hint=args.answer_hint,
                                hint_position=args.answer_hint_position):
        print(path)
    return 0


def _judge_batch(args):
    """The judge's BatchSettings (--judge-batch-*), or None without --judge-batch; directory None: beside the journal."""
    from vinstruct.generate.batch_mode import BatchSettings

    if not (args.judge_batch or args.judge_batch_status or args.judge_batch_cancel):
        return None
    return BatchSettings(args.judge_batch_dir, discount=args.judge_batch_discount, retries=args.judge_batch_retries,
                         poll_s=args.judge_batch_poll, max_requests=args.judge_batch_max_requests, fallback="online")


def _endpoint_clients(args, out: Path):
    """(judge, teacher) for the URLs given on the command line; None where the scripted one is wanted."""
    from vinstruct.eval.endpoints import SCRIPTED_MODEL, make_judge, make_teacher

    judge = teacher = None
    if args.judge_url:
        judge = make_judge(args.judge_url, args.judge_model or SCRIPTED_MODEL, args.judge_key,
                           journal=out / "judge_journal.jsonl", batch=_judge_batch(args),
                           price_in=args.judge_price_in, price_out=args.judge_price_out)
    teacher_url = args.teacher_url or args.judge_url
    if teacher_url:
        teacher = make_teacher(teacher_url, args.teacher_model or args.judge_model or SCRIPTED_MODEL,
                               args.teacher_key or args.judge_key)
    return judge, teacher


def _out_dir(args) -> Path:
    return Path(args.out or Path("runs") / "eval" / Path(args.model).name / args.suite)


def _evaluate(args) -> dict:
    from vinstruct.eval.suites import run_suite

    if not args.model or not args.suite:
        raise VinstructError("vinstruct eval needs --model DIR and --suite (or the compare / build-questions actions)")
    out = _out_dir(args)
    judge, teacher = _endpoint_clients(args, out)
    return run_suite(args.suite, args.model, out, world_dir=args.world, split=args.split, limit=args.limit,
                     batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, conv_mode=args.conv_mode,
                     seed=args.seed, judge=judge, teacher=teacher, use_judge=not args.no_judge,
                     judge_batch=_judge_batch(args),
                     problems=args.problems, pid_splits=args.pid_splits, image_root=args.image_root,
                     option_text=args.option_text, blind=not args.no_blind, answer_hint=args.answer_hint,
                     hint_position=args.answer_hint_position,
                     progress=not args.quiet)


def _judge_batch_command(args) -> int:
    from vinstruct.eval.endpoints import SCRIPTED_MODEL, endpoint_config
    from vinstruct.eval.judge_batch import judge_batch_status

    if not args.judge_url:
        raise VinstructError("--judge-batch-status and --judge-batch-cancel ask the judge: give --judge-url")
    if not args.judge_batch_dir and not (args.out or (args.model and args.suite)):
        raise VinstructError("--judge-batch-status and --judge-batch-cancel need --out DIR (the evaluation's output) "
                             "or --judge-batch-dir DIR")
    root = args.judge_batch_dir or _out_dir(args) / "judge_journal.batch"
    config = endpoint_config(args.judge_url, args.judge_model or SCRIPTED_MODEL, args.judge_key)
    print(judge_batch_status(config, root, cancel=args.judge_batch_cancel))
    return 0


def run(args) -> int:
    from vinstruct.eval import report

    if args.action == "compare":
        table = report.compare(args.runs)
        print(table, end="")
        if args.compare_out:
            from vinstruct.atomic import atomic_write_text

            atomic_write_text(args.compare_out, table)
        return 0
    if args.action == "build-questions":
        return _build(args)
    if args.judge_batch_status or args.judge_batch_cancel:
        return _judge_batch_command(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results = _evaluate(args)
    out = _out_dir(args)
    print((out / report.TABLE_NAME).read_text(), end="")
    print(f"results: {out / report.RESULTS_NAME}")
    if not results.get("complete", True):
        print(f"warning: incomplete run: {results.get('incomplete_reason', '')}")
    return 0
