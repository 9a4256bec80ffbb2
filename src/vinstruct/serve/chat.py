"""The terminal chat: a read-reply loop that streams the assistant's words as they come.

Commands start with a slash (see HELP); anything else is a message. Images
added with `--image` or `/image` are sent with the next message. The engine
keeps the conversation's cache between turns, so the image and earlier turns
are not recomputed when you ask the next question.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from vinstruct.data.formats import write_json
from vinstruct.data.images import open_image
from vinstruct.errors import VinstructError
from vinstruct.model.generation import SamplingParams
from vinstruct.serve.assistant import Assistant
from vinstruct.serve.conversation import Conversation

PROMPT = "you> "
REPLY = "assistant> "
HELP = """commands:
  /image PATH   send an image with your next message
  /reset        start a new conversation
  /save FILE    save the conversation as LLaVA JSON
  /help         show this list
  /quit         leave (Ctrl-D works too)"""


class TerminalChat:
    """The chat's state and commands, independent of where lines come from."""

    def __init__(self, assistant: Assistant, params: SamplingParams, system: str | None = None,
                 write: Callable[[str], None] | None = None):
        self.assistant = assistant
        self.params = params
        self.conversation = Conversation(system=system)
        self.pending_images: list = []
        self.pending_names: list[str] = []
        self.write = write or (lambda text: (sys.stdout.write(text), sys.stdout.flush()))

    def add_image(self, path: str) -> None:
        image = open_image(path)
        self.pending_images.append(image)
        self.pending_names.append(str(Path(path).resolve()))
        self.write(f"(image {path} will be sent with your next message)\n")

    def command(self, line: str) -> bool:
        """Run a slash command; return False when the chat should end."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        if name in ("/quit", "/exit"):
            return False
        if name == "/help":
            self.write(HELP + "\n")
        elif name == "/reset":
            self.conversation.reset()
            self.pending_images, self.pending_names = [], []
            self.write("(conversation cleared)\n")
        elif name == "/image" and arg:
            self.add_image(arg)
        elif name == "/save" and arg:
            write_json(arg, [self.conversation.to_llava()])
            self.write(f"(saved {len(self.conversation.turns)} turns to {arg})\n")
        else:
            self.write(f"unknown command or missing argument: {line.strip()} (try /help)\n")
        return True

    def ask(self, text: str) -> str:
        """Send one message, stream the reply to the output, and return it."""
        conversation = self.conversation
        conversation.add_user(text, self.pending_images, self.pending_names)
        self.pending_images, self.pending_names = [], []
        try:
            ids, dropped = conversation.prompt(self.assistant.spec, self.params.max_new_tokens,
                                               self.assistant.context_length)
        except VinstructError:
            conversation.undo_user()
            raise
        if dropped:
            self.write(f"(dropped the {dropped} oldest exchange(s) to fit the context)\n")
        handle = self.assistant.submit(ids, conversation.images or None, self.params)
        self.write(REPLY)
        try:
            for delta in handle:
                self.write(delta)
        except KeyboardInterrupt:
            handle.cancel()
            self.write(" [stopped]")
        reply = handle.result().text
        self.write("\n")
        conversation.add_reply(reply)
        return reply


def run_chat(chat: TerminalChat, read: Callable[[str], str] = input) -> None:
    """Read lines until /quit or end of input."""
    chat.write(f"vinstruct chat: model {chat.assistant.name!r}, context {chat.assistant.context_length} "
                  "tokens. Type /help for commands.\n")
    while True:
        try:
            line = read(PROMPT)
        except EOFError:
            chat.write("\n")
            return
        except KeyboardInterrupt:
            chat.write("\n")
            continue
        if not line.strip():
            continue
        try:
            if line.lstrip().startswith("/"):
                if not chat.command(line):
                    return
            else:
                chat.ask(line)
        except VinstructError as err:
            chat.write(f"error: {err}\n")
