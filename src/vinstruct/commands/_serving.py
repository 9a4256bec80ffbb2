"""Options shared by `vinstruct chat`, `serve` and `ui`: the engine and the sampling defaults."""

from __future__ import annotations

from vinstruct.errors import VinstructError


def add_engine_options(parser) -> None:
    group = parser.add_argument_group("engine")
    group.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory (vinstruct format)")
    group.add_argument("--max-batch-size", type=int, default=8, metavar="N",
                       help="sequences decoded together in one step (default: %(default)s)")
    group.add_argument("--prefix-cache-tokens", type=int, default=8192, metavar="N",
                       help="tokens of finished conversations kept to reuse on their next turn, in blocks of 16; "
                            "their keys/values are reserved whole at the first finished reply; 0 turns reuse off "
                            "(default: %(default)s)")
    group.add_argument("--kv-tokens", type=int, default=None, metavar="N",
                       help="key/value cache budget in token slots (rows x longest request); requests that do "
                            "not fit wait, one that never could is refused (default: max batch x context)")
    group.add_argument("--threads", type=int, default=None, metavar="N",
                       help="CPU threads for torch (default: every CPU this process may use)")


def add_sampling_options(parser, temperature: float = 0.2) -> None:
    group = parser.add_argument_group("sampling")
    group.add_argument("--temperature", type=float, default=temperature,
                       help="0 for greedy decoding (default: %(default)s)")
    group.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: %(default)s)")
    group.add_argument("--max-tokens", type=int, default=256, metavar="N",
                       help="longest reply in tokens (default: %(default)s)")
    group.add_argument("--seed", type=int, default=None, help="seed for sampling (default: unseeded)")
    group.add_argument("--system", default=None, help="system prompt (default: the chat template's)")


def sampling_from_args(args):
    from vinstruct.model.generation import SamplingParams

    if not args.temperature >= 0 or args.temperature == float("inf"):  # also refuses nan
        raise VinstructError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    if not 0 <= args.top_p <= 1:
        raise VinstructError(f"--top-p must be between 0 and 1, got {args.top_p}")
    if args.max_tokens < 1:
        raise VinstructError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    return SamplingParams(max_new_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                          seed=args.seed)


def assistant_from_args(args, name: str | None = None):
    from vinstruct.serve.assistant import Assistant

    if args.max_batch_size < 1:
        raise VinstructError(f"--max-batch-size must be at least 1, got {args.max_batch_size}")
    if args.prefix_cache_tokens < 0:
        raise VinstructError(f"--prefix-cache-tokens must be >= 0, got {args.prefix_cache_tokens}")
    if args.threads is not None and args.threads < 1:
        raise VinstructError(f"--threads must be at least 1, got {args.threads}")
    if args.kv_tokens is not None and args.kv_tokens < 1:
        raise VinstructError(f"--kv-tokens must be at least 1, got {args.kv_tokens}")
    return Assistant.load(args.model, max_batch_size=args.max_batch_size,
                          prefix_cache_tokens=args.prefix_cache_tokens, threads=args.threads, name=name,
                          kv_tokens=args.kv_tokens)
