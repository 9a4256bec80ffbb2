"""Quality filters: each parsed sample is kept or dropped for one named reason.

Reasons (checked in this order):
  empty               a question or an answer is blank
  refusal             the teacher declined or spoke of being unable to see the image
  leak                the answer gives away the symbolic input: captions, boxes, coordinates
  duplicate_question  the same question twice in one conversation, or the same questions again for one image
  too_short           fewer answer words than the type's minimum
  too_long            more answer words than the type's maximum
(`unparsable` and `empty` also come from the parser, before these filters run.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LEAK = [
    ("caption", re.compile(r"\bcaption(?:s|ed)?\b", re.IGNORECASE)),
    ("bounding box", re.compile(r"\bbounding[- ]?box(?:es)?\b|\bbbox(?:es)?\b", re.IGNORECASE)),
    ("coordinates", re.compile(r"\bcoordinates?\b|\[\s*-?\d*\.?\d+\s*,\s*-?\d*\.?\d+|\b0\.\d{2,3}\b", re.IGNORECASE)),
    ("symbolic input", re.compile(r"\bsymbolic\b|\baccording to the (?:given |provided )?(?:description|text|data|list)"
                                  r"|\bthe (?:given|provided) (?:description|text|information|list)", re.IGNORECASE)),
]
_REFUSAL = re.compile(
    r"\bas an ai\b|\bi(?:'m| am) sorry\b|\bi apologi[sz]e\b"
    r"|\bi (?:cannot|can ?not|can't|am unable to|'m unable to|am not able to) (?:see|view|access|look at|analy[sz]e) "
    r"(?:the |this |that |any |your )?(?:image|picture|photo)"
    r"|\bi (?:cannot|can't|am unable to|'m unable to) (?:help|assist|answer|comply)"
    r"|\bi do(?: not|n't) have (?:access to|the ability to see) (?:the |this )?(?:image|picture)",
    re.IGNORECASE,
)


@dataclass
class FilterConfig:
    # Answer words per sample (all answers of a conversation together).
    min_words: dict[str, int] = field(default_factory=lambda: {"conversation": 4, "detail": 20, "complex": 12})
    max_words: dict[str, int] = field(default_factory=lambda: {"conversation": 800, "detail": 600, "complex": 600})
    check_leaks: bool = True
    check_refusals: bool = True


def words(text: str) -> int:
    return len(text.split())


def normalize_question(question: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", question.lower()).split())


def leak_kind(text: str) -> str | None:
    return next((kind for kind, pattern in _LEAK if pattern.search(text)), None)


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.search(text))


def check_sample(task: str, pairs: list[tuple[str | None, str]], config: FilterConfig,
                 seen_questions: set[str] | None = None) -> str | None:
    """The reason to drop a parsed sample, or None to keep it.

    seen_questions: question signatures already kept for this image; updated when kept.
    """
    if any((q is not None and not q.strip()) or not a.strip() for q, a in pairs):
        return "empty"
    answers = [a for _, a in pairs]
    asked = [q for q, _ in pairs if q is not None]
    if config.check_refusals and any(is_refusal(a) for a in answers):
        return "refusal"
    if config.check_leaks and any(leak_kind(t) for t in answers + (asked if task == "complex" else [])):
        return "leak"
    normalized = [normalize_question(q) for q in asked]
    # Across samples of one image, a conversation repeats only if it asks the very same questions
    # (several conversations may well share a question); a complex sample is its question.
    signature = " | ".join(normalized)
    if len(set(normalized)) < len(normalized) or (seen_questions and signature in seen_questions):
        return "duplicate_question"
    total = sum(words(a) for a in answers)
    if total < config.min_words.get(task, 1):
        return "too_short"
    if total > config.max_words.get(task, 10**9):
        return "too_long"
    if seen_questions is not None and signature:
        seen_questions.add(signature)
    return None
