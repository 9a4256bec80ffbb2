"""`vinstruct generate`: instruction data from a COCO-format set and a teacher LLM."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

DESCRIPTION = """Generate LLaVA instruction data from a COCO-format image set (instances + captions).

Each image is shown to a text-only teacher as symbolic text (captions, and object boxes
for the types that use them); the teacher writes conversations, detailed descriptions or
complex-reasoning Q&A, which are parsed, filtered and written as LLaVA JSON. `caption`
samples (stage 1) need no teacher. Replies are cached: re-running resumes where a run
stopped, without duplicates.

examples:
  vinstruct teacher --port 8000 &               # offline scripted teacher
  vinstruct generate --coco-dir world --types conversation,detail,complex \\
      --teacher-url http://127.0.0.1:8000/v1 --out data/stage2.json
  vinstruct generate --coco-dir world --types caption --per-image caption=5 --out data/stage1.json
  vinstruct generate --coco-dir world --teacher-url http://127.0.0.1:8000/v1 --audit --out data/stage2.json
  OPENAI_API_KEY=... vinstruct generate --coco-dir coco2017 --split train2017 --teacher-url https://api.openai.com/v1 \\
      --model gpt-4o-mini --concurrency 32 --rpm 3000 --price-in 0.15 --price-out 0.6 --shard 0/4 --out shard0.json
  vinstruct generate --coco-dir world --teacher-url http://127.0.0.1:8000/v1 --batch --out data/stage2.json
  vinstruct generate --teacher-url http://127.0.0.1:8000/v1 --batch-status --out data/stage2.json
  vinstruct generate --merge shard0.json shard1.json shard2.json shard3.json --mix conversation=58,detail=23,complex=77 --out all.json"""


def configure(parser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--coco-dir", type=Path, help="COCO-format set: DIR/annotations/{instances,captions}_<split>.json")
    data.add_argument("--split", default="train", help="split name in the annotation file names (default: train)")
    data.add_argument("--image-dir", type=Path, help="where the images are (default: DIR/images/<split>, DIR/<split>, ...)")
    data.add_argument("--out", type=Path, required=True, help="output LLaVA JSON (stats go to <out stem>.stats.json)")
    data.add_argument("--types", default="conversation,detail,complex",
                      help="comma list of conversation, detail, complex, caption (default: the three teacher types)")
    data.add_argument("--per-image", default="1", metavar="N | TYPE=N,...",
                      help="samples per image and type: one number for all, or e.g. conversation=2,caption=5 (default 1)")
    data.add_argument("--boxes", default="detail,complex",
                      help="types whose symbolic text includes object boxes: a comma list, 'all' or 'none' "
                           "(default: detail,complex as in the paper; the shapes world needs 'all')")
    data.add_argument("--shard", help="I/N: process only the I-th of N equal parts of the images (0-based)")
    data.add_argument("--limit", type=int, help="use only the first N images (after sharding)")
    data.add_argument("--image-root", type=Path, help="write image paths relative to this folder (default: the output's)")
    data.add_argument("--skip-uncaptioned", action="store_true", help="skip images without captions instead of failing")
    data.add_argument("--on-bad-annotation", choices=("skip", "fail"), default="skip",
                      help="an unusable box annotation, image entry (size) or missing image file: skip it and count "
                           "it in the stats (default), or stop with a one-line error naming it")
    data.add_argument("--mix", metavar="TYPE=WEIGHT,...", help="keep types in these proportions, e.g. conversation=58,detail=23,complex=77")
    data.add_argument("--pack", action="store_true",
                      help="join each image's conversation/detail/complex samples into one multi-turn sample")
    data.add_argument("--seed", type=int, default=0, help="seed for instructions, <image> placement and request seeds")
    data.add_argument("--merge", nargs="+", type=Path, metavar="SHARD", help="merge these shard outputs into --out and stop")

    teacher = parser.add_argument_group("teacher")
    teacher.add_argument("--teacher-url", default=os.environ.get("OPENAI_BASE_URL"),
                         help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (default: $OPENAI_BASE_URL)")
    teacher.add_argument("--model", default=None, help="teacher model name (default: vinstruct-scripted)")
    teacher.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable with the API key")
    teacher.add_argument("--prompts", type=Path, help="prompt folder to use instead of the built-in one")
    teacher.add_argument("--concurrency", type=int, default=8, help="requests in flight at once (default: 8)")
    teacher.add_argument("--rpm", type=float, help="at most this many requests per minute")
    teacher.add_argument("--tpm", type=float, help="at most this many tokens per minute (estimated before, corrected after)")
    teacher.add_argument("--timeout", type=float, default=120.0, help="seconds per request before it counts as timed out")
    teacher.add_argument("--max-retries", type=int, default=6, help="retries per request (429, 5xx, timeouts, bad bodies)")
    teacher.add_argument("--temperature", type=float, help="sampling temperature (default: the server's)")
    teacher.add_argument("--max-tokens", type=int, default=1024, help="completion token limit per request")
    teacher.add_argument("--price-in", type=float, default=0.0, help="price per 1M prompt tokens, for the cost report")
    teacher.add_argument("--price-out", type=float, default=0.0, help="price per 1M completion tokens")
    teacher.add_argument("--cache", type=Path, help="reply cache (default: <out stem>.cache.jsonl beside --out)")
    teacher.add_argument("--max-words", type=int, help="drop samples whose answers exceed this many words")
    teacher.add_argument("--keep-truncated", action="store_true",
                         help="keep replies cut at --max-tokens (up to their last full sentence) instead of retrying "
                              "them; for small local models that rarely stop on their own")
    data.add_argument("--audit", action="store_true",
                      help="check every answer against the annotations (vinstruct audit) and drop the contradicted "
                           "ones; counted per type in the stats")

    batch = parser.add_argument_group("batch API (half price, answered within 24 h)")
    batch.add_argument("--batch", action="store_true",
                       help="send the teacher requests through the Batch API; run the same command again to resume")
    batch.add_argument("--batch-dir", type=Path, help="the batch run's files and state (default: <out stem>.batch)")
    batch.add_argument("--batch-discount", type=float, default=0.5,
                       help="batch price as a share of --price-in/--price-out, for the cost in the stats (default 0.5)")
    batch.add_argument("--batch-retries", type=int, default=2,
                       help="new batches for rows that failed on the server's side or expired (default 2)")
    batch.add_argument("--batch-poll", type=float, default=5.0,
                       help="seconds before the first poll; grows while nothing changes (default 5)")
    batch.add_argument("--batch-max-requests", type=int, default=50_000,
                       help="requests per input file (default 50,000, the API's limit; files also stay under 200 MB)")
    batch.add_argument("--batch-fallback", choices=("none", "online"), default="none",
                       help="rows still failing after --batch-retries rounds: send them online one by one (online), "
                            "or report them failed (none, the default)")
    batch.add_argument("--batch-status", action="store_true", help="print the batches of this output's run and stop")
    batch.add_argument("--batch-cancel", action="store_true", help="cancel the batches of this output's run and stop")

    parser.add_argument("--show-prompt", action="store_true", help="print the messages of the first request and stop")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _split_list(text: str, name: str, allowed) -> list[str]:
    from vinstruct.errors import VinstructError

    items = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in allowed]
    if unknown:
        raise VinstructError(f"{name}: unknown type(s) {', '.join(unknown)}; expected some of {', '.join(allowed)}")
    return items


def _per_image(text: str, types: list[str]) -> dict[str, int]:
    from vinstruct.errors import VinstructError

    if text.strip().isdigit():
        return {t: int(text) for t in types}
    counts = {}
    for part in (p for p in text.split(",") if p.strip()):
        name, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise VinstructError(f"--per-image: expected N or TYPE=N pairs like conversation=2,caption=5, got {part!r}")
        counts[name.strip()] = int(value)
    return counts


def _teacher_config(args, needs_teacher: bool):
    from vinstruct.endpoint.client import EndpointConfig, resolve_api_key
    from vinstruct.errors import VinstructError
    from vinstruct.generate.scripted import DEFAULT_MODEL_NAME

    if not needs_teacher:
        return None
    if not args.teacher_url:
        raise VinstructError("conversation, detail and complex need a teacher: give --teacher-url "
                             "(for the offline scripted teacher, run `vinstruct teacher` and use http://127.0.0.1:8000/v1)")
    return EndpointConfig(base_url=args.teacher_url, model=args.model or DEFAULT_MODEL_NAME,
                         api_key=resolve_api_key(args.teacher_url, env_name=args.api_key_env), concurrency=args.concurrency,
                         rpm=args.rpm, tpm=args.tpm, timeout=args.timeout, max_retries=args.max_retries,
                         temperature=args.temperature, max_tokens=args.max_tokens, price_in=args.price_in,
                         price_out=args.price_out, keep_truncated=args.keep_truncated)


def _options(args):
    from vinstruct.errors import VinstructError
    from vinstruct.generate.filters import FilterConfig
    from vinstruct.generate.mix import parse_ratios
    from vinstruct.generate.pipeline import GenerateOptions, parse_shard
    from vinstruct.generate.prompts import ALL_TYPES, TEACHER_TYPES

    if args.coco_dir is None:
        raise VinstructError("--coco-dir is required (or use --merge SHARD... to join shard outputs)")
    types = _split_list(args.types, "--types", ALL_TYPES)
    boxes = {"all": list(TEACHER_TYPES), "none": []}.get(args.boxes) or _split_list(args.boxes, "--boxes", TEACHER_TYPES)
    filters = FilterConfig()
    if args.max_words:
        filters.max_words = {t: args.max_words for t in TEACHER_TYPES}
    return GenerateOptions(
        coco_dir=args.coco_dir, out=args.out, split=args.split, types=tuple(types),
        per_image=_per_image(args.per_image, types), teacher=_teacher_config(args, any(t in TEACHER_TYPES for t in types)),
        prompts_dir=args.prompts, boxes_for=frozenset(boxes), seed=args.seed,
        shard=parse_shard(args.shard) if args.shard else None, limit=args.limit, image_dir=args.image_dir,
        image_root=args.image_root, cache=args.cache, mix=parse_ratios(args.mix) if args.mix else None,
        pack=args.pack, filters=filters, skip_uncaptioned=args.skip_uncaptioned,
        on_bad_annotation=args.on_bad_annotation, progress=not args.no_progress, audit=args.audit,
        batch=_batch_settings(args) if args.batch else None)


def _batch_settings(args):
    from vinstruct.generate.batch_mode import BatchSettings
    from vinstruct.generate.pipeline import companion

    return BatchSettings(args.batch_dir or companion(args.out, "batch"), discount=args.batch_discount,
                         retries=args.batch_retries, poll_s=args.batch_poll,
                         max_requests=args.batch_max_requests, fallback=args.batch_fallback)


def _show_prompt(options) -> int:
    from vinstruct.generate.pipeline import plan_run

    plan = plan_run(options)
    shown = set()
    for task in plan.tasks:
        if task.type in shown:
            continue
        shown.add(task.type)
        print(f"=== {task.type} (image {task.image.id}) ===")
        for message in task.messages:
            print(f"--- {message['role']}\n{message['content']}")
    if not plan.tasks:
        print("no teacher requests for these types")
        return 0
    from vinstruct.endpoint.usage import messages_tokens

    prompt_tokens = sum(messages_tokens(t.messages) for t in plan.tasks)
    teacher = options.teacher
    line = f"=== {len(plan.tasks)} requests, about {prompt_tokens:,} prompt tokens (estimated)"
    if teacher.price_in or teacher.price_out:
        worst = prompt_tokens * teacher.price_in / 1e6 + len(plan.tasks) * (teacher.max_tokens or 0) * teacher.price_out / 1e6
        line += f", at most ${worst:,.2f} with {teacher.max_tokens} completion tokens each"
    print(line)
    return 0


def _batch_command(args) -> int:
    from vinstruct.errors import VinstructError
    from vinstruct.generate.batch_mode import batch_cancel, batch_status

    if not args.teacher_url:
        raise VinstructError("--batch-status and --batch-cancel ask the teacher: give --teacher-url")
    config = _teacher_config(args, needs_teacher=True)
    settings = _batch_settings(args)
    print((batch_cancel if args.batch_cancel else batch_status)(config, settings.directory))
    return 0


def run(args) -> int:
    from vinstruct.generate.mix import merge_outputs, parse_ratios
    from vinstruct.generate.pipeline import generate
    from vinstruct.generate.stats import stats_table

    if args.merge:
        stats = merge_outputs(args.merge, args.out, parse_ratios(args.mix) if args.mix else None, args.seed)
        print(stats_table(stats) if stats.get("types") else f"{stats['samples']} samples")
        print(f"wrote {args.out}")
        return 0
    if args.batch_status or args.batch_cancel:
        return _batch_command(args)
    options = _options(args)
    if args.show_prompt:
        return _show_prompt(options)
    stats = generate(options)
    print(stats.table())
    if stats.mixed:
        print(f"mixed: {json.dumps(stats.mixed)}")
    print(f"wrote {args.out}", file=sys.stdout)
    return 0
