"""Normalized matching of short answers (exact QA), and accuracy tables.

The rule, applied to the model's answer A and the gold short answer G:
1. normalize both: Unicode NFKC, lower-case, every character that is not a letter or a
   digit becomes a space, number words "zero".."twenty" become digits, the articles
   "a", "an", "the" are dropped; for count questions "no"/"none" also become "0";
2. A is correct when its first tokens are G's tokens, in order (a token also matches its
   plural: "circles" for "circle", "crosses" for "cross");
3. and none of A's remaining tokens is another answer of the same question type (another
   colour, shape, number, position, or the opposite of yes/no), so hedges such as
   "yes and no" or "red or blue" are wrong, while "red circle" or "3 circles" are right.
An empty answer is wrong.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
ARTICLES = {"a", "an", "the"}
_NON_WORD = re.compile(r"[^0-9a-z]+")

QUESTION_TYPES = ("count", "color", "shape", "position", "existence")
POSITION_WORDS = ("left", "right", "top", "bottom", "middle", "center", "centre")


def normalize_tokens(text: str, question_type: str | None = None) -> list[str]:
    text = unicodedata.normalize("NFKC", str(text)).lower()
    tokens = []
    for token in _NON_WORD.sub(" ", text).split():
        if token in ARTICLES:
            continue
        token = NUMBER_WORDS.get(token, token)
        if question_type == "count" and token in ("no", "none"):
            token = "0"
        tokens.append(token)
    return tokens


def normalize(text: str, question_type: str | None = None) -> str:
    return " ".join(normalize_tokens(text, question_type))


def _same_word(answer_token: str, gold_token: str) -> bool:
    return answer_token in (gold_token, gold_token + "s", gold_token + "es")


def _singular(token: str) -> set[str]:
    forms = {token}
    if token.endswith("es"):
        forms.add(token[:-2])
    if token.endswith("s"):
        forms.add(token[:-1])
    return forms


def alternatives(question_type: str, vocabulary: dict[str, Iterable[str]] | None = None) -> set[str]:
    """Answers of the same type, used to reject hedges."""
    vocabulary = vocabulary or {}
    if question_type == "existence":
        return {"yes", "no"}
    if question_type == "count":
        return {str(n) for n in range(0, 101)}
    if question_type == "position":
        return set(POSITION_WORDS)
    words = set()
    for answer in vocabulary.get(question_type, ()):
        words.update(normalize_tokens(answer))
    return words


def is_correct(answer: str, gold: str, question_type: str | None = None,
               vocabulary: dict[str, Iterable[str]] | None = None) -> bool:
    """Whether `answer` gives the gold short answer (see the module docstring for the rule)."""
    said = normalize_tokens(answer, question_type)
    wanted = normalize_tokens(gold, question_type)
    if not said or not wanted or len(said) < len(wanted):
        return False
    if not all(_same_word(a, g) for a, g in zip(said, wanted)):
        return False
    others = alternatives(question_type, vocabulary) - set(wanted) if question_type else set()
    # yes/no: "no" after "yes" is a hedge, but so is "not" ("yes, it is not").
    if question_type == "existence":
        others |= {"not"} if wanted == ["yes"] else set()
    return not any(_singular(token) & others for token in said[len(wanted):])


def accuracy_table(records: list[dict], key: str) -> dict[str, dict]:
    """{group: {"correct", "total", "accuracy"}} over records with a boolean "correct" and `key`."""
    table: dict[str, dict] = {}
    for record in records:
        group = table.setdefault(str(record[key]), {"correct": 0, "total": 0})
        group["total"] += 1
        group["correct"] += int(bool(record["correct"]))
    for group in table.values():
        group["accuracy"] = 100.0 * group["correct"] / group["total"]
    return dict(sorted(table.items()))


def overall(records: list[dict]) -> dict:
    correct = sum(int(bool(r["correct"])) for r in records)
    return {"correct": correct, "total": len(records),
            "accuracy": 100.0 * correct / len(records) if records else 0.0}
