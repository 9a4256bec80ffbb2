"""`vinstruct chat`: talk to a checkpoint in the terminal."""

from __future__ import annotations

from vinstruct.commands._serving import add_engine_options, add_sampling_options, assistant_from_args, sampling_from_args

DESCRIPTION = """Chat with a model in the terminal; replies stream as they are generated.

In the chat:
  /image PATH   send an image with your next message
  /reset        start a new conversation
  /save FILE    save the conversation as LLaVA JSON (one sample)
  /quit         leave (Ctrl-D works too; Ctrl-C stops a reply)

Old exchanges are dropped (whole, with their images) when the conversation
outgrows the model's context.

example:
  vinstruct chat --model runs/demo/stage2 --image shapes/images/test/000001.png"""


def configure(parser) -> None:
    add_engine_options(parser)
    parser.add_argument("--image", action="append", default=[], metavar="PATH",
                        help="an image to send with the first message (repeatable)")
    add_sampling_options(parser)


def run(args) -> int:
    from vinstruct.serve.chat import TerminalChat, run_chat

    params = sampling_from_args(args)
    with assistant_from_args(args) as assistant:
        chat = TerminalChat(assistant, params, system=args.system)
        for path in args.image:
            chat.add_image(path)
        run_chat(chat)
    return 0
