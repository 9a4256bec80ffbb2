"""Prompt files -> chat messages for the teacher.

A prompt folder holds one sub-folder per task type (conversation, detail, complex,
answer) with `system.txt` and seed examples `example_<n>_input.txt` /
`example_<n>_output.txt`, plus `detail/questions.txt` and
`caption/instructions.txt`. The package ships one (generate/prompts/); `--prompts DIR`
points to another, and types missing there fall back to the package's.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vinstruct.data.symbolic import parse_symbolic, render_symbolic
from vinstruct.errors import VinstructError

TEACHER_TYPES = ("conversation", "detail", "complex")
ALL_TYPES = TEACHER_TYPES + ("caption",)
PROMPT_TYPES = TEACHER_TYPES + ("answer",)
QUESTION_MARKER = "Question:"
_EXAMPLE = re.compile(r"^example_(\d+)_input\.txt$")


def default_prompts_dir() -> Path:
    return Path(str(resources.files("vinstruct.generate") / "prompts"))


@dataclass
class Example:
    input: str
    output: str


@dataclass
class TypePrompt:
    type: str
    system: str
    examples: list[Example]
    source: Path


def _read(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise VinstructError(f"{path}: prompt file not found") from None
    except UnicodeDecodeError as err:
        raise VinstructError(f"{path}: not UTF-8 text ({err.reason})") from None
    if not text:
        raise VinstructError(f"{path}: prompt file is empty")
    return text


def read_lines(path: Path) -> list[str]:
    """A list file: one entry per line, blank lines and '#' comments ignored."""
    lines = [line.strip() for line in _read(path).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def load_type_prompt(folder: Path, task: str) -> TypePrompt:
    examples = []
    numbered = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _EXAMPLE.match(p.name)))
    for number, input_path in numbered:
        output_path = folder / f"example_{number}_output.txt"
        if not output_path.is_file():
            raise VinstructError(f"{input_path}: seed example has no matching {output_path.name}")
        examples.append(Example(_read(input_path), _read(output_path)))
    return TypePrompt(task, _read(folder / "system.txt"), examples, folder)


def strip_boxes(symbolic: str) -> str:
    """Symbolic text with the box lines left out (captions only)."""
    question = ""
    head, marker, tail = symbolic.rpartition("\n" + QUESTION_MARKER)
    if marker:
        symbolic, question = head, f"\n\n{QUESTION_MARKER}{tail}"
    return render_symbolic(parse_symbolic(symbolic).captions) + question


def answer_input(symbolic: str, question: str) -> str:
    """The user message of an `answer` request: the symbolic text, a blank line, 'Question: ...'."""
    return f"{symbolic.rstrip()}\n\n{QUESTION_MARKER} {question.strip()}"


class PromptSet:
    """Prompts for the task types a run needs, read once."""

    def __init__(self, root: str | Path | None = None, types=PROMPT_TYPES + ("caption",)):
        self.root = Path(root) if root else default_prompts_dir()
        if not self.root.is_dir():
            raise VinstructError(f"{self.root}: prompts directory not found")
        self.types: dict[str, TypePrompt] = {}
        for task in types:
            if task == "caption":
                continue
            if task not in PROMPT_TYPES:
                raise VinstructError(f"unknown prompt type {task!r}; expected one of {', '.join(PROMPT_TYPES)}")
            self.types[task] = load_type_prompt(self._folder(task), task)
        self.detail_questions = read_lines(self._folder("detail") / "questions.txt") if "detail" in types else []
        self.caption_instructions = read_lines(self._folder("caption") / "instructions.txt") if "caption" in types else []

    def _folder(self, task: str) -> Path:
        folder = self.root / task
        return folder if folder.is_dir() else default_prompts_dir() / task

    def messages(self, task: str, user_text: str, with_boxes: bool = True) -> list[dict]:
        """System message, seed examples as user/assistant turns, then the real input."""
        prompt = self.types[task]
        messages = [{"role": "system", "content": prompt.system}]
        for example in prompt.examples:
            example_input = example.input if with_boxes else strip_boxes(example.input)
            messages += [{"role": "user", "content": example_input}, {"role": "assistant", "content": example.output}]
        messages.append({"role": "user", "content": user_text})
        return messages


def prompt_hash(messages: list[dict], params: dict | None = None) -> str:
    """A short fingerprint of everything that shapes a request (messages and sampling parameters)."""
    blob = json.dumps([messages, params or {}], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
