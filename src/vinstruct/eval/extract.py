"""Reading decisions out of free text: option letters, yes/no, judge scores.

Every reader returns None when the text does not commit to one answer; callers count
those as failed instead of guessing.
"""

from __future__ import annotations

import re

# ---- multiple-choice letters (ScienceQA) ------------------------------------------------------------
_ANSWER_IS = re.compile(r"[Aa]nswer is:?\s*\(?([A-Z])\)?(?![A-Za-z])")
_LEADING = re.compile(r"^\(?([A-Z])(?:[.):]|$|\s*$)")
_HEDGE = re.compile(r"[Aa]nswer is:?\s*\(?[A-Z]\)?\s*(?:or|and|/|,)\s*\(?[A-Z](?![A-Za-z])")


def option_letters(count: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(count)]


def extract_letter(text: str, num_options: int) -> str | None:
    """The option letter a reply commits to, or None.

    Accepted, in this order: the reply is just the letter ("B", "(B)"); the reply starts
    with the letter and a period, parenthesis or colon ("B. sunny", "B) sunny"); the reply
    says "The answer is B" anywhere (several different letters that way is a hedge: None).
    Letters beyond the options are rejected.
    """
    valid = set(option_letters(num_options))
    stripped = text.strip()
    lead = _LEADING.match(stripped)
    if lead and lead.group(1) in valid:
        return lead.group(1)
    if _HEDGE.search(stripped):
        return None
    said = set(_ANSWER_IS.findall(stripped))
    if len(said) == 1:
        letter = said.pop()
        return letter if letter in valid else None
    return None


def match_option_text(text: str, choices: list[str]) -> str | None:
    """The letter of the one option whose text the reply equals (case and end punctuation aside)."""
    said = text.strip().strip(".!").strip().lower()
    hits = [letter for letter, choice in zip(option_letters(len(choices)), choices)
            if choice.strip().strip(".").lower() == said]
    return hits[0] if len(hits) == 1 else None


# ---- yes / no (POPE) ---------------------------------------------------------------------------------
_WORDS = re.compile(r"[a-z']+")
_NEGATIONS = {"no", "not", "none", "isn't", "aren't", "nothing"}


def extract_yes_no(text: str) -> str | None:
    """'yes', 'no' or None: the first yes/no word decides; a negation without one means no."""
    words = _WORDS.findall(text.lower())
    for word in words:
        if word == "yes":
            return "yes"
        if word in _NEGATIONS:
            return "no"
    return None


# ---- judge scores (LLaVA-Bench) ----------------------------------------------------------------------
_NUMBER = r"(10(?:\.0+)?|[1-9](?:\.\d+)?)(?!\d|\.\d)"
_PAIR = re.compile(rf"^\s*\**\s*(?:scores?\s*:?\s*)?{_NUMBER}\s*(?:/\s*10)?\s*(?:,|\s|and|;|\|)\s*{_NUMBER}\s*(?:/\s*10)?\s*\**\s*\.?\s*$",
                   re.IGNORECASE)
_LABELLED = re.compile(rf"assistant\s*([12])\s*(?:score)?\s*[:=\-]\s*\**\s*{_NUMBER}\s*(?:/\s*10)?", re.IGNORECASE)


def parse_scores(review: str) -> tuple[float, float] | None:
    """Two scores in 1-10 from a judge review, or None if they cannot be read unambiguously.

    Accepted: a first line with two numbers ("8 6", "8, 6", "8/10 and 6/10"), or each
    assistant labelled ("Assistant 1: 8", "Assistant 2 score = 6") anywhere; anything else,
    numbers outside 1-10, or two different labelled scores for one assistant, is malformed.
    """
    lines = [line for line in review.strip().splitlines() if line.strip()]
    if lines:
        pair = _PAIR.match(lines[0])
        if pair:
            return float(pair.group(1)), float(pair.group(2))
    labelled: dict[str, set[float]] = {"1": set(), "2": set()}
    for which, value in _LABELLED.findall(review):
        labelled[which].add(float(value))
    if len(labelled["1"]) == 1 and len(labelled["2"]) == 1:
        return labelled["1"].pop(), labelled["2"].pop()
    return None
