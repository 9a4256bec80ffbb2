"""Command-line entry point.

Each subcommand lives in its own module exposing `configure(parser)` and
`run(args) -> int` (and, where argparse alone cannot say it, `parse_args(parser, argv)`). Modules are imported only when their command is used, so
`vinstruct --help` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from vinstruct import __version__
from vinstruct.errors import VinstructError

# name -> (module, one-line summary). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "world": ("vinstruct.commands.world", "generate the shapes world (COCO-format images, boxes, captions)"),
    "bootstrap": ("vinstruct.commands.bootstrap", "train small base models (vision encoder + LM) on a world"),
    "base-lm": ("vinstruct.commands.base_lm", "write a packaged pretrained chat LM (SmolLM2-135M-Instruct) as an --llm directory"),
    "teacher": ("vinstruct.commands.teacher", "serve the offline scripted teacher (OpenAI-compatible endpoint)"),
    "generate": ("vinstruct.commands.generate", "generate LLaVA instruction data with a teacher LLM"),
    "audit": ("vinstruct.commands.audit", "audit instruction data against its annotations: grounding, diversity"),
    "train": ("vinstruct.commands.train", "train a stage: feature alignment (pretrain) or end-to-end (finetune)"),
    "predict": ("vinstruct.commands.predict", "batched answers to a question file (resumable)"),
    "eval": ("vinstruct.commands.eval", "evaluate a model: world exact QA, POPE, LLaVA-Bench, ScienceQA; compare runs"),
    "chat": ("vinstruct.commands.chat", "chat with a model in the terminal (streaming, images, /save)"),
    "serve": ("vinstruct.commands.serve", "serve a model over an OpenAI-compatible HTTP API (batched)"),
    "ui": ("vinstruct.commands.ui", "chat with a model in a web page (Gradio)"),
    "convert": ("vinstruct.commands.convert", "convert checkpoints: official LLaVA / llava-hf in, llava-hf out, LoRA merge"),
    "demo": ("vinstruct.commands.demo", "run the whole method offline on the shapes world and write a report"),
    "info": ("vinstruct.commands.info", "show a checkpoint's configuration and parameter counts"),
}


def _top_level_help() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        f"vinstruct {__version__} — Visual Instruction Tuning (LLaVA) you can run",
        "",
        "usage: vinstruct <command> [options]      (vinstruct <command> --help for details)",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def build_parser(command: str) -> argparse.ArgumentParser:
    module_name, summary = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"vinstruct {command}",
        description=getattr(module, "DESCRIPTION", summary),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.configure(parser)
    parser.set_defaults(_run=module.run)
    return parser


def parse_command_line(command: str, argv: list[str]) -> argparse.Namespace:
    """A command's arguments; a module with its own `parse_args(parser, argv)` parses them itself."""
    parser = build_parser(command)
    own = getattr(importlib.import_module(COMMANDS[command][0]), "parse_args", None)
    return own(parser, argv) if own is not None else parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_top_level_help())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"vinstruct {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"vinstruct: unknown command {command!r}; choose from: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    args = parse_command_line(command, rest)
    try:
        return int(args._run(args) or 0)
    except VinstructError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # A full disk is the machine's state, not a bug: one line, and the writes are atomic, so a re-run
        # (with space freed) resumes where this one stopped.
        print(f"error: {err.filename or 'writing'}: {err.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
