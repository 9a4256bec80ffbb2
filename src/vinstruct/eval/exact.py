"""Normalized matching of short answers (exact QA), and accuracy tables.

The rule, applied to the model's reply R, the gold short answer G and the question Q:
1. normalize: Unicode NFKC, lower-case, every character that is not a letter or a digit
   becomes a space, number words "zero".."twenty" become digits, the articles "a", "an",
   "the" are dropped; for count questions "no"/"none" also become "0";
2. the candidate answers are the words of the question's type (colours, shapes, numbers,
   yes/no, positions); for a question that names its options ("on the left or on the
   right"), only those options;
3. the model's answer is the first candidate word of R (so "It is red." and "There are 3
   shapes." give red and 3, like the first-yes/no rule of POPE), counted only within R's
   first sentence that holds any candidate;
4. it is correct when it equals G (a plural counts: "circles" for "circle"), unless the
   reply hedges: another candidate follows it directly or after "or"/"and"/"nor"/"," ("red or
   blue", "3 or 4", "yes and no", "circle square"), another one comes up to two words after a
   later "or" ("left, or maybe right"), or, for a yes, "not"/"no" comes later in
   the same sentence ("Yes, it is not.").
An empty reply, or one with no candidate word, is wrong.
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
    """The normalized words that answer a question of this type."""
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


_SENTENCE_END = re.compile(r"[.!?;\n]+")
_CONNECTORS = {"or", "and", "nor"}


def _candidate_of(token: str, candidates: set[str]) -> str | None:
    for form in _singular(token):
        if form in candidates:
            return form
    return None


def first_answer(reply: str, question_type: str, candidates: set[str]) -> tuple[str | None, bool]:
    """(the first candidate word of the reply, whether the reply hedges around it)."""
    for sentence in _SENTENCE_END.split(str(reply)):
        tokens = normalize_tokens(sentence, question_type)
        for index, token in enumerate(tokens):
            found = _candidate_of(token, candidates)
            if found is None:
                continue
            rest = tokens[index + 1:]
            while rest and rest[0] in _CONNECTORS:
                rest = rest[1:]
            hedged = bool(rest) and _candidate_of(rest[0], candidates) not in (None, found)
            # "left, or maybe right": another answer offered after an "or" later in the sentence
            after = tokens[index + 1:]
            hedged = hedged or any(
                t == "or" and any(_candidate_of(u, candidates) not in (None, found) for u in after[i + 1:i + 3])
                for i, t in enumerate(after))
            if question_type == "existence" and found == "yes":
                hedged = hedged or any(t in ("not", "no") for t in tokens[index + 1:])
            return found, hedged
    return None, False


def options_named(question: str, candidates: set[str]) -> set[str]:
    """Candidates the question offers as its options ("left or right"), when it names two or more."""
    named = {t for t in normalize_tokens(question) if t in candidates}
    return named if len(named) >= 2 and " or " in f" {question.lower()} " else candidates


def is_correct(answer: str, gold: str, question_type: str | None = None,
               vocabulary: dict[str, Iterable[str]] | None = None, question: str | None = None) -> bool:
    """Whether `answer` gives the gold short answer (see the module docstring for the rule)."""
    wanted = normalize_tokens(gold, question_type)
    if not wanted:
        return False
    if question_type is None:  # no type: the reply must start with the gold answer
        said = normalize_tokens(answer)
        return said[:len(wanted)] == wanted
    candidates = alternatives(question_type, vocabulary) | {" ".join(wanted)}
    if question:
        candidates = options_named(question, candidates)
    found, hedged = first_answer(answer, question_type, candidates)
    return found == " ".join(wanted) and not hedged


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
