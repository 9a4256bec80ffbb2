"""`vinstruct serve`: an OpenAI-compatible HTTP API over a checkpoint."""

from __future__ import annotations

import os

from vinstruct.commands._serving import add_engine_options, assistant_from_args
from vinstruct.errors import VinstructError

DESCRIPTION = """Serve a checkpoint over an OpenAI-compatible HTTP API.

  POST /v1/chat/completions   text and image_url parts (data URLs), stream, n, seed, stop, usage
  GET  /v1/models             the one model served (its id is --model-name)
  GET  /health                liveness and current load

Concurrent requests are batched together. Images come as data URLs
(base64 PNG/JPEG/WebP); local paths are read only under --allow-dir, and
http(s) URLs only with --allow-remote-images.

example:
  vinstruct serve --model runs/demo/stage2 --port 8000
  curl localhost:8000/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model": "stage2", "messages": [{"role": "user", "content": "hello"}]}'"""


def configure(parser) -> None:
    add_engine_options(parser)
    net = parser.add_argument_group("server")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    net.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one (default: %(default)s)")
    net.add_argument("--model-name", default=None,
                     help="model id clients must send (default: the checkpoint directory's name)")
    net.add_argument("--api-key-env", default=None, metavar="VAR",
                     help="require 'Authorization: Bearer <key>' with the key read from this environment variable")
    net.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                     help="uvicorn log level (default: %(default)s)")
    images = parser.add_argument_group("images")
    images.add_argument("--allow-dir", action="append", default=[], metavar="DIR",
                        help="allow image_url to name local files under DIR (repeatable; default: none)")
    images.add_argument("--allow-remote-images", action="store_true",
                        help="let the server fetch http(s) image URLs (default: refused)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body (default: %(default)s)")
    limits.add_argument("--max-images", type=int, default=4, help="images per request (default: %(default)s)")
    limits.add_argument("--max-image-pixels", type=int, default=4096 * 4096,
                        help="pixels per image as processed, i.e. after padding to a square or resizing "
                             "(default: %(default)s)")
    limits.add_argument("--max-request-pixels", type=int, default=4 * 4096 * 4096,
                        help="pixels of all images of a request together, as processed (default: %(default)s)")
    limits.add_argument("--max-image-aspect", type=float, default=50.0, metavar="RATIO",
                        help="longest side / shortest side of an image (default: %(default)s)")
    limits.add_argument("--max-tokens-limit", type=int, default=1024, metavar="N",
                        help="largest max_tokens a request may ask for (default: %(default)s)")
    limits.add_argument("--default-max-tokens", type=int, default=256, metavar="N",
                        help="max_tokens when a request gives none (default: %(default)s)")
    limits.add_argument("--max-n", type=int, default=8, help="largest n (choices per request) (default: %(default)s)")
    limits.add_argument("--max-concurrent", type=int, default=64, metavar="N",
                        help="sequences running or queued; beyond it requests get 429 + Retry-After "
                             "(default: %(default)s)")


def _settings(args):
    from vinstruct.serve.api import ServerSettings
    from vinstruct.serve.images import ImagePolicy
    from vinstruct.serve.protocol import Limits

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise VinstructError(f"--api-key-env: environment variable {args.api_key_env} is not set or empty")
    for directory in args.allow_dir:
        if not os.path.isdir(directory):
            raise VinstructError(f"--allow-dir: {directory} is not a directory")
    for name in ("max_images", "max_image_pixels", "max_request_pixels", "max_tokens_limit", "default_max_tokens",
                 "max_n", "max_concurrent"):
        if getattr(args, name) < 1:
            raise VinstructError(f"--{name.replace('_', '-')} must be at least 1")
    if not args.max_image_aspect >= 1:  # also refuses nan
        raise VinstructError(f"--max-image-aspect must be at least 1, got {args.max_image_aspect}")
    return ServerSettings(
        api_key=api_key,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_concurrent=args.max_concurrent,
        max_request_pixels=args.max_request_pixels,
        limits=Limits(max_tokens=args.max_tokens_limit,
                      default_max_tokens=min(args.default_max_tokens, args.max_tokens_limit),
                      max_n=args.max_n, max_images=args.max_images),
        images=ImagePolicy(allow_dirs=args.allow_dir, allow_remote=args.allow_remote_images,
                           max_pixels=args.max_image_pixels, max_aspect=args.max_image_aspect),
    )


def run(args) -> int:
    from vinstruct.serve.api import create_app, run_server

    settings = _settings(args)
    with assistant_from_args(args, name=args.model_name) as assistant:
        app = create_app(assistant, settings)
        run_server(app, args.host, args.port, args.log_level,
                   banner=lambda url: print(f"vinstruct serve: model {assistant.name!r} at {url}/v1\n"
                                            f"vinstruct serve: {assistant.describe()}", flush=True))
    return 0
