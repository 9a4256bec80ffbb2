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
    parser.add_argument("--plant-errors", type=float, default=0.0, metavar="RATE",
                        help="corrupt this fraction of assistant turns (one fact each), for measuring an audit")
    parser.add_argument("--plant-log", type=Path, help="append what was corrupted to this JSONL file")
    parser.add_argument("--plant-kinds", default="count,color,absent,side",
                        help="kinds of planted errors (default: count,color,absent,side)")


def run(args) -> int:
    import uvicorn

    from vinstruct.eval.endpoints import scripted_responders
    from vinstruct.generate.faults import FaultPlan, parse_fault_rates
    from vinstruct.generate.scripted import DEFAULT_MODEL_NAME, create_app

    plan = FaultPlan(latency_ms=args.latency_ms, rates=parse_fault_rates(args.faults), hang_s=args.hang_s,
                     retry_after_s=args.retry_after_s, seed=args.seed)
    plant = None
    if args.plant_errors:
        from vinstruct.generate.scripted.planted import PlantPlan, parse_kinds

        if args.plant_log is None:
            raise VinstructError("--plant-errors needs --plant-log FILE (where the planted errors are recorded)")
        plant = PlantPlan(args.plant_errors, seed=args.seed, log=args.plant_log, kinds=parse_kinds(args.plant_kinds))
    app = create_app(scripted_responders(plant), seed=args.seed, model_name=args.model_name or DEFAULT_MODEL_NAME, faults=plan)
    print(f"scripted teacher on http://{args.host}:{args.port}/v1 (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
