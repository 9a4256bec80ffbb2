"""`vinstruct ui`: a web page to chat with a checkpoint about images (Gradio)."""

from __future__ import annotations

import os

from vinstruct.commands._serving import add_engine_options, add_sampling_options, assistant_from_args, sampling_from_args

DESCRIPTION = """Chat with a model in the browser: upload an image (or pick an example), ask
questions, watch replies stream; sliders for temperature, top-p and length;
Regenerate and Clear buttons. Tabs open at once are batched together.

example:
  vinstruct ui --model runs/demo/stage2 --examples runs/demo/world
  (then open the printed http://127.0.0.1:PORT)"""


def configure(parser) -> None:
    add_engine_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860,
                        help="port (default: %(default)s; 0 picks a free one)")
    parser.add_argument("--examples", default=None, metavar="DIR",
                        help="example images: a world directory (its images/test) or a folder of images")
    add_sampling_options(parser)


def run(args) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from vinstruct.serve.api import bind_socket
    from vinstruct.serve.ui import build_ui, example_images, launch_ui

    params = sampling_from_args(args)
    examples = example_images(args.examples)
    port = args.port
    if port == 0:
        with bind_socket(args.host, 0) as sock:
            port = sock.getsockname()[1]
    with assistant_from_args(args) as assistant:
        demo = build_ui(assistant, examples, params, system=args.system)
        launch_ui(demo, args.host, port, banner=lambda url: print(f"vinstruct ui: {url}", flush=True))
    return 0
