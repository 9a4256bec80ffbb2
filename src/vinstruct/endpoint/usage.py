"""Token counts and money: what a run asked for, what it got, what it cost."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: words and punctuation marks (close to BPE counts for English)."""
    return len(_TOKEN.findall(text))


def messages_tokens(messages: list[dict]) -> int:
    return sum(estimate_tokens(message_text(m)) + 4 for m in messages)


def message_text(message: dict) -> str:
    """The text of a chat message whose content is a string or a list of {"type": "text"} parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


@dataclass
class Usage:
    """Running totals for requests sent to a teacher (all attempts, retries included)."""

    price_in: float = 0.0  # per 1M prompt tokens
    price_out: float = 0.0  # per 1M completion tokens
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def cost(self) -> float:
        return cost_of(self.prompt_tokens, self.completion_tokens, self.price_in, self.price_out)

    def add_tokens(self, prompt: int, completion: int) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion

    def count(self, table: dict[str, int], reason: str) -> None:
        table[reason] = table.get(reason, 0) + 1

    def as_dict(self) -> dict:
        return {"requests": self.requests, "succeeded": self.succeeded, "failed": self.failed,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost": round(self.cost, 6), "retries": dict(sorted(self.retries.items())),
                "failures": dict(sorted(self.failures.items()))}


def cost_of(prompt_tokens: int, completion_tokens: int, price_in: float, price_out: float) -> float:
    return prompt_tokens * price_in / 1e6 + completion_tokens * price_out / 1e6
