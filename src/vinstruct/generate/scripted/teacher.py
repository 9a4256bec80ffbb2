"""The scripted teacher as a responder: reads only the symbolic text of the last user message.

The task comes from the system message (phrases in generate/prompts/README.txt); the
few-shot examples before the last user message are ignored, exactly as a hosted model
would treat them as format demonstrations.
"""

from __future__ import annotations

import random

from vinstruct.generate.prompts import QUESTION_MARKER
from vinstruct.generate.scripted.answer import answer_question
from vinstruct.generate.scripted.conversation import write_conversation
from vinstruct.generate.scripted.describe import write_complex, write_detail
from vinstruct.generate.scripted.scene import scene_from_symbolic

# Checked in order: the answer prompt may speak of reasoning, the complex prompt of answering.
TASK_PHRASES = (
    ("answer the question about the image", "answer"),
    ("complex reasoning", "complex"),
    ("detailed description", "detail"),
    ("conversation", "conversation"),
)


def classify_task(system: str) -> str | None:
    text = " ".join(system.lower().split())
    return next((task for phrase, task in TASK_PHRASES if phrase in text), None)


def split_question(text: str) -> tuple[str, str]:
    """'<symbolic text>\\n\\nQuestion: ...' -> (symbolic text, question)."""
    head, marker, question = text.rpartition(QUESTION_MARKER)
    if not marker:
        return text, ""
    return head.rstrip(), question.strip()


class TeacherResponder:
    """Writes conversation / detail / complex / answer replies from the symbolic text alone."""

    def __call__(self, messages: list[dict], rng: random.Random) -> str | None:
        system = "\n".join(m["content"] for m in messages if m["role"] in ("system", "developer"))
        task = classify_task(system)
        users = [m["content"] for m in messages if m["role"] == "user"]
        if task is None or not users:
            return None
        text = users[-1]
        if task == "answer":
            symbolic, question = split_question(text)
            return answer_question(scene_from_symbolic(symbolic), question, rng)
        scene = scene_from_symbolic(text)
        writer = {"conversation": write_conversation, "detail": write_detail, "complex": write_complex}[task]
        return writer(scene, rng)
