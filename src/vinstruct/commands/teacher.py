"""`vinstruct teacher`: the offline scripted teacher as an OpenAI-compatible endpoint."""

from __future__ import annotations

DESCRIPTION = """Serve the offline scripted teacher at http://HOST:PORT/v1 (chat completions and models).

It reads only the symbolic text (captions, boxes) in the last user message and writes
conversations, detailed descriptions, complex-reasoning Q&A and answers to free questions,
in the format the prompt files teach, with definite, correct content. Point
`vinstruct generate --teacher-url http://HOST:PORT/v1` at it, or any OpenAI client.

--latency-ms and --faults make it a test bench for clients, e.g.
  vinstruct teacher --port 8000 --latency-ms 100 --faults 429=0.05,500=0.05,timeout=0.01"""


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


def build_responders():
    """The responders, tried in order: put more specific ones (a judge) before the teacher."""
    from vinstruct.generate.scripted import TeacherResponder

    return [TeacherResponder()]


def run(args) -> int:
    import uvicorn

    from vinstruct.generate.faults import FaultPlan, parse_fault_rates
    from vinstruct.generate.scripted import DEFAULT_MODEL_NAME, create_app

    plan = FaultPlan(latency_ms=args.latency_ms, rates=parse_fault_rates(args.faults), hang_s=args.hang_s,
                     retry_after_s=args.retry_after_s, seed=args.seed)
    app = create_app(build_responders(), seed=args.seed, model_name=args.model_name or DEFAULT_MODEL_NAME, faults=plan)
    print(f"scripted teacher on http://{args.host}:{args.port}/v1 (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
