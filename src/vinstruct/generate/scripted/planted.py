"""Planted errors: the scripted teacher states some facts wrong, on purpose, and logs which.

    responder = PlantingResponder(TeacherResponder(), PlantPlan(rate=0.2, seed=0, log=Path("planted.jsonl")))

It measures an auditor: data with known errors gives its precision and recall. In
conversation, detail and complex replies, every assistant turn is corrupted with probability
`rate`, decided from a hash of the seed, the request's image text and the turn, so a request
is always corrupted the same way. One fact of a corrupted turn changes, of a kind drawn among
those the turn offers:

  count    a number of objects goes up by one       "2 red circles" -> "3 red circles"
  color    a colour word becomes one no object has  "the red circle" -> "the purple circle", "It is red." -> "It is purple."
  absent   a shape becomes one the image lacks      "a red circle" -> "a red hexagon"
  side     left and right swap in a where-phrase    "on the left" -> "on the right"

Sentences that deny something ("there is no red star") or speak hypothetically ("if ... would")
are left alone: changing them would not make them false. Which colours and shapes are absent
is read from the request's symbolic text. Every corruption is appended to the log (JSONL) with
the SHA-256 of that text, the task, the turn, the kind, the question (none for a detailed
description, whose question is drawn later) and both versions of the answer.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from vinstruct.errors import VinstructError
from vinstruct.generate.prompts import TEACHER_TYPES
from vinstruct.generate.scripted.teacher import classify_task
from vinstruct.world.spec import COLORS as WORLD_COLORS
from vinstruct.world.spec import SHAPES as WORLD_SHAPES

PLANT_KINDS = ("count", "color", "absent", "side")
_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"]
_SHAPE_FORMS = "|".join(sorted({f"{s}e?s?" for s in WORLD_SHAPES}, key=len, reverse=True))
_COLOR_WORDS = "|".join(WORLD_COLORS)
_COUNT = re.compile(rf"(?<!\bother )(?<!\bany )(?<!\bevery )\b(\d+|{'|'.join(_NUMBER_WORDS[:11])})((?:\s+(?:small|large|big|tiny))?(?:\s+(?:{_COLOR_WORDS}))?"
                    rf"\s+)({_SHAPE_FORMS}|shapes?|objects?|figures?)\b", re.IGNORECASE)
_COLOR = re.compile(rf"\b({_COLOR_WORDS})\b(?!\s+(?:background|backdrop|surface))", re.IGNORECASE)
_SHAPE = re.compile(rf"\b(an?\s+)?((?:(?:small|large|big|tiny|{_COLOR_WORDS})\s+)*)({_SHAPE_FORMS})\b", re.IGNORECASE)
_SIDE = re.compile(r"(?:(?<=\bthe )|(?<=\btop )|(?<=\bbottom )|(?<=\bupper )|(?<=\blower )|^)(left|right)\b"
                   r"(?!\s+(?:to|edge)\b)", re.IGNORECASE | re.MULTILINE)
_LEAVE_ALONE = re.compile(r"\b(?:no|not|none|never|nothing|n't|if|would|could|remove[ds]?|removing|leaves?|remain\w*)\b",
                          re.IGNORECASE)
_SENTENCE = re.compile(r"[^.!?;]+[.!?;]?")


@dataclass
class PlantPlan:
    rate: float
    seed: int = 0
    log: Path | None = None
    kinds: tuple[str, ...] = PLANT_KINDS

    def __post_init__(self):
        if not 0 <= self.rate <= 1:
            raise VinstructError(f"--plant-errors must be between 0 and 1, got {self.rate}")
        unknown = [k for k in self.kinds if k not in PLANT_KINDS]
        if unknown or not self.kinds:
            raise VinstructError(f"--plant-kinds: unknown kind(s) {', '.join(unknown) or '(none)'}; "
                                 f"expected some of {', '.join(PLANT_KINDS)}")


def parse_kinds(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


def _cased(template: str, word: str) -> str:
    return word.capitalize() if template[:1].isupper() else word


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x")) else "s")


def _shape_of(word: str) -> str:
    word = word.lower()
    return next((s for s in WORLD_SHAPES if word in (s, _plural(s))), word)


@dataclass
class _Truth:
    """What a corruption must avoid: the colours and shapes the image text names."""

    colors: list[str]  # colours no object has
    shapes: list[str]  # shapes the image lacks


def _truth(symbolic: str) -> _Truth:
    words = set(re.findall(r"[a-z]+", symbolic.lower()))
    shapes_there = {s for s in WORLD_SHAPES if s in words or _plural(s) in words}
    return _Truth([c for c in WORLD_COLORS if c not in words], [s for s in WORLD_SHAPES if s not in shapes_there])


def _spans(answer: str, pattern: re.Pattern) -> list[re.Match]:
    """Matches of pattern in the sentences that assert something about the image as it is."""
    found = []
    for sentence in _SENTENCE.finditer(answer):
        if _LEAVE_ALONE.search(sentence.group(0)):
            continue
        found += [m for m in pattern.finditer(answer, sentence.start(), sentence.end())]
    return found


def _count(answer: str, truth: _Truth, rng: random.Random):
    matches = _spans(answer, _COUNT)
    if not matches:
        return None
    m = rng.choice(matches)
    number = m.group(1)
    value = int(number) if number.isdigit() else _NUMBER_WORDS.index(number.lower())
    new = str(value + 1) if number.isdigit() else _cased(number, _NUMBER_WORDS[value + 1])
    noun = m.group(3)
    if noun.lower() in WORLD_SHAPES or noun.lower() in ("shape", "object", "figure"):
        noun = _plural(noun)  # "1 circle" -> "2 circles"
    text = answer[:m.start()] + new + m.group(2) + noun + answer[m.end():]
    return text, m.group(0), new + m.group(2) + noun


def _color(answer: str, truth: _Truth, rng: random.Random):
    matches = _spans(answer, _COLOR)
    if not matches or not truth.colors:
        return None
    m = rng.choice(matches)
    new = _cased(m.group(1), rng.choice(truth.colors))
    return answer[:m.start()] + new + answer[m.end():], m.group(0), new


def _absent(answer: str, truth: _Truth, rng: random.Random):
    matches = _spans(answer, _SHAPE)
    if not matches or not truth.shapes:
        return None
    m = rng.choice(matches)
    shape = rng.choice(truth.shapes)
    old = m.group(3)
    noun = _cased(old, _plural(shape) if old.lower() != _shape_of(old) else shape)
    article = m.group(1) or ""
    if article:
        first = (m.group(2) or noun)[:1].lower()
        article = _cased(article, "an " if first in "aeiou" else "a ")
    new = article + (m.group(2) or "") + noun
    return answer[:m.start()] + new + answer[m.end():], m.group(0), new


def _side(answer: str, truth: _Truth, rng: random.Random):
    matches = _spans(answer, _SIDE)
    if not matches:
        return None
    m = rng.choice(matches)
    new = _cased(m.group(1), "right" if m.group(1).lower() == "left" else "left")
    return answer[:m.start()] + new + answer[m.end():], m.group(0), new


_CORRUPTERS = {"count": _count, "color": _color, "absent": _absent, "side": _side}


def corrupt(answer: str, symbolic: str, rng: random.Random, kinds=PLANT_KINDS):
    """(kind, corrupted answer, old words, new words), or None when the answer offers none of `kinds`."""
    truth = _truth(symbolic)
    options = [k for k in kinds if _CORRUPTERS[k](answer, truth, random.Random(0)) is not None]
    if not options:
        return None
    kind = rng.choice(options)
    text, old, new = _CORRUPTERS[kind](answer, truth, rng)
    return kind, text, old, new


# The label that starts an answer line, per task (see generate/prompts/README.txt).
_ANSWER_LABELS = {"conversation": "Assistant:", "complex": "Answer:"}


class PlantingResponder:
    """Wraps the scripted teacher: its replies, with planted errors, and a log of them."""

    def __init__(self, teacher, plan: PlantPlan):
        self.teacher, self.plan = teacher, plan
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict], rng: random.Random) -> str | None:
        reply = self.teacher(messages, rng)
        system = "\n".join(m["content"] for m in messages if m["role"] in ("system", "developer"))
        task = classify_task(system)
        if reply is None or task not in TEACHER_TYPES or self.plan.rate <= 0:
            return reply
        symbolic = [m["content"] for m in messages if m["role"] == "user"][-1]
        digest = hashlib.sha256(symbolic.encode("utf-8")).hexdigest()
        if task == "detail":
            return self._maybe(reply, None, symbolic, digest, task, 0)
        label = _ANSWER_LABELS[task]
        lines, turn, question = reply.split("\n"), 0, None
        for i, line in enumerate(lines):
            if line.startswith(label):
                answer = line[len(label):].strip()
                lines[i] = f"{label} {self._maybe(answer, question, symbolic, digest, task, turn)}"
                turn += 1
            elif ":" in line:
                question = line.split(":", 1)[1].strip()  # "User: ..." / "Question: ..."
        return "\n".join(lines)

    def _maybe(self, answer: str, question: str | None, symbolic: str, digest: str, task: str, turn: int) -> str:
        key = json.dumps([self.plan.seed, digest, task, turn, answer])
        rng = random.Random(int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big"))
        if rng.random() >= self.plan.rate:
            return answer
        planted = corrupt(answer, symbolic, rng, self.plan.kinds)
        if planted is None:
            return answer
        kind, text, old, new = planted
        self._log({"image_text_sha256": digest, "task": task, "turn": turn, "kind": kind, "question": question,
                   "original": answer,
                   "corrupted": text, "before": old, "after": new})
        return text

    def _log(self, row: dict) -> None:
        if self.plan.log is None:
            return
        with self._lock, open(self.plan.log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
