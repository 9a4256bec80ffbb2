"""Teacher text -> question/answer turns. Never raises anything but ParseError.

conversation  "User: ..." / "Assistant: ..." lines (the format the prompts teach); also
              accepts Human/GPT/Question/Answer/Q/A labels, markdown bold, list markers,
              numbering and separator lines that hosted models like to add
detail        the description itself, minus a heading a model may put first
complex       "Question: ..." then "Answer: ..."
"""

from __future__ import annotations

import re

_ASK = {"user", "human", "question", "q", "person"}
_REPLY = {"assistant", "gpt", "answer", "a", "ai"}
_LABEL = re.compile(
    r"^\s*(?:[-*>•]\s*|\d+[.)]\s*|#+\s*)*(?:\*\*|__|\*)?\s*"
    r"(?P<label>user|human|question|q|person|assistant|gpt|answer|a|ai)(?:\s*\d+)?\s*"
    r"(?:\*\*|__|\*)?\s*[:：]\s*(?:\*\*|__|\*)?\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
_SEPARATOR = re.compile(r"^\s*(?:={3,}|-{3,}|\*{3,}|_{3,}|`{3}\w*)\s*$")
_HEADING = re.compile(r"^\s*(?:#+\s*|\*\*)?(?:detailed\s+)?(?:image\s+)?description\s*(?:\*\*)?\s*[:：]?\s*(?:\*\*)?\s*$",
                      re.IGNORECASE)


class ParseError(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def _labelled_turns(text: str) -> list[tuple[str, str]]:
    """[(role, text)] with role 'human' or 'gpt'; unlabelled lines continue the current turn."""
    turns: list[list] = []
    for line in text.splitlines():
        if _SEPARATOR.match(line):
            continue
        match = _LABEL.match(line)
        if match:
            role = "human" if match.group("label").lower() in _ASK else "gpt"
            rest = match.group("rest").strip()
            if turns and turns[-1][0] == role:
                turns[-1][1].append(rest)
            else:
                turns.append([role, [rest]])
        elif turns and line.strip():
            turns[-1][1].append(line.strip())
    return [(role, "\n".join(p for p in parts if p).strip()) for role, parts in turns]


def parse_conversation(text: str) -> list[tuple[str, str]]:
    """(question, answer) pairs in order; an unanswered last question is dropped."""
    if not isinstance(text, str) or not text.strip():
        raise ParseError("empty", "the teacher returned no text")
    turns = _labelled_turns(text)
    while turns and turns[0][0] != "human":
        turns.pop(0)
    pairs = []
    for (role_q, question), (role_a, answer) in zip(turns[0::2], turns[1::2]):
        if role_q != "human" or role_a != "gpt":
            break
        if question and answer:
            pairs.append((question, answer))
    if not pairs:
        raise ParseError("unparsable", "no 'User:' line followed by an 'Assistant:' line")
    return pairs


def parse_detail(text: str) -> str:
    if not isinstance(text, str):
        raise ParseError("empty", "the teacher returned no text")
    lines = [line for line in text.strip().splitlines() if not _SEPARATOR.match(line)]
    while lines and (_HEADING.match(lines[0]) or not lines[0].strip()):
        lines.pop(0)
    description = "\n".join(lines).strip()
    description = re.sub(r"^(?:detailed\s+)?description\s*[:：]\s*", "", description, flags=re.IGNORECASE)
    if not description:
        raise ParseError("empty", "the teacher returned no description")
    return description


def parse_complex(text: str) -> tuple[str, str]:
    if not isinstance(text, str) or not text.strip():
        raise ParseError("empty", "the teacher returned no text")
    turns = _labelled_turns(text)
    for (role_q, question), (role_a, answer) in zip(turns, turns[1:]):
        if role_q == "human" and role_a == "gpt" and question and answer:
            return question, answer
    raise ParseError("unparsable", "no 'Question:' followed by an 'Answer:'")


def parse_reply(task: str, text: str) -> list[tuple[str | None, str]]:
    """Turn pairs for a task; a detail reply has no question of its own (None)."""
    if task == "conversation":
        return parse_conversation(text)
    if task == "complex":
        return [parse_complex(text)]
    if task == "detail":
        return [(None, parse_detail(text))]
    raise ParseError("unparsable", f"unknown task type {task!r}")
