"""`vinstruct teacher`: the offline scripted teacher as an OpenAI-compatible endpoint."""

from __future__ import annotations

from pathlib import Path

from vinstruct.errors import VinstructError

DESCRIPTION = """Serve the offline scripted teacher at http://HOST:PORT/v1 (chat completions and models).

It reads only the symbolic text (captions, boxes) in the last user message and writes
conversations, detailed descriptions, complex-reasoning Q&A and answers to free questions,
in the format the prompt files teach, with definite, correct content. It also answers the
evaluation judge's requests (LLaVA-Bench reviews, ScienceQA solving and arbitration), so
`vinstruct eval --judge-url http://HOST:PORT/v1` can use it too. Point
`vinstruct generate --teacher-url http://HOST:PORT/v1` at it, or any OpenAI client.

--latency-ms and --faults make it a test bench for clients, e.g.
  vinstruct teacher --port 8000 --latency-ms 100 --faults 429=0.05,500=0.05,timeout=0.01

It serves the Batch API too (/v1/files, /v1/batches): uploaded JSONL requests answered by the
same teacher, with the service's life cycle and result files. --batch-* options inject faults:
  vinstruct teacher --port 8000 --batch-fail-rows 0.1 --batch-expire 1 --batch-delay 5 --state-dir teacher-state
Each created batch is logged on stdout ("batch created: batch_... requests=N").

--plant-errors makes it a test bench for the data audit: a fraction of the assistant turns
state one fact wrong (a count, a colour, an absent shape, left/right), each logged, e.g.
  vinstruct teacher --port 8000 --plant-errors 0.2 --plant-log planted.jsonl
  vinstruct audit data.json --coco-dir world --split train --planted planted.jsonl"""


def configure(parser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the wording (with the request's own 'seed')")
    parser.add_argument("--model-name", default=None, help="model id listed at /v1/models (default: vinstruct-scripted)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="wait this long before every reply")
    parser.add_argument("--faults", default="", metavar="KIND=RATE,...",
                        help="inject faults: 429, 500, timeout, malformed, truncated, slow (rates 0-1)")
    parser.add_argument("--hang-s", type=float, default=30.0, help="how long a 'timeout' fault holds a request")
    parser.add_argument("--retry-after-s", type=float, default=1.0, help="Retry-After sent with a '429' fault")
    parser.add_argument("--batch-fail-rows", type=float, default=0.0, metavar="RATE",
                        help="Batch API: this share of rows gets HTTP 500 in the error file (drawn from the seed)")
    parser.add_argument("--batch-expire", default="", metavar="N,...",
                        help="Batch API: these batches (1 = the first created) expire with part of their rows answered")
    parser.add_argument("--batch-expire-after", type=float, default=0.5, metavar="SHARE",
                        help="Batch API: the share of an expiring batch's rows answered first (default: 0.5)")
    parser.add_argument("--batch-delay", type=float, default=0.0, metavar="SECONDS",
                        help="Batch API: how long a batch stays in_progress (default: 0)")
    parser.add_argument("--batch-max-requests", type=int, default=50_000, help="Batch API: requests per input file")
    parser.add_argument("--batch-max-bytes", type=int, default=200 * 1024 * 1024, help="Batch API: bytes per input file")
    parser.add_argument("--state-dir", type=Path,
                        help="keep uploaded files and batches here, so a restarted server still knows them")
    parser.add_argument("--plant-errors", type=float, default=0.0, metavar="RATE",
                        help="corrupt this fraction of assistant turns (one fact each), for measuring an audit")
    parser.add_argument("--plant-log", type=Path, help="append what was corrupted to this JSONL file")
    parser.add_argument("--plant-kinds", default="count,color,absent,side",
                        help="kinds of planted errors (default: count,color,absent,side)")


def parse_batch_numbers(spec: str) -> tuple[int, ...]:
    """'1,3' -> (1, 3): batch numbers for --batch-expire."""
    numbers = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if not part.isdigit() or int(part) < 1:
            raise VinstructError(f"--batch-expire: expected batch numbers from 1 like '1,3', got {part!r}")
        numbers.append(int(part))
    return tuple(numbers)


def log_batches_to_stdout() -> None:
    """One line per created and finished batch on stdout (a test counts submissions with it)."""
    import logging
    import sys

    log = logging.getLogger("vinstruct.teacher")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)


def run(args) -> int:
    import uvicorn

    from vinstruct.eval.endpoints import scripted_responders
    from vinstruct.generate.faults import FaultPlan, parse_fault_rates
    from vinstruct.generate.scripted import DEFAULT_MODEL_NAME, create_app
    from vinstruct.generate.scripted.batches import BatchOptions

    plan = FaultPlan(latency_ms=args.latency_ms, rates=parse_fault_rates(args.faults), hang_s=args.hang_s,
                     retry_after_s=args.retry_after_s, seed=args.seed)
    plant = None
    if args.plant_errors:
        from vinstruct.generate.scripted.planted import PlantPlan, parse_kinds

        if args.plant_log is None:
            raise VinstructError("--plant-errors needs --plant-log FILE (where the planted errors are recorded)")
        plant = PlantPlan(args.plant_errors, seed=args.seed, log=args.plant_log, kinds=parse_kinds(args.plant_kinds))
    batch = BatchOptions(fail_rows=args.batch_fail_rows, expire=parse_batch_numbers(args.batch_expire),
                         expire_after=args.batch_expire_after, delay_s=args.batch_delay, seed=args.seed,
                         max_requests=args.batch_max_requests, max_bytes=args.batch_max_bytes, state_dir=args.state_dir)
    log_batches_to_stdout()
    app = create_app(scripted_responders(plant), seed=args.seed, model_name=args.model_name or DEFAULT_MODEL_NAME,
                     faults=plan, batch=batch)
    print(f"scripted teacher on http://{args.host}:{args.port}/v1 (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
