"""Small English utilities for the scripted teacher: articles, plurals, lists, numbers."""

from __future__ import annotations

import random

_IRREGULAR_PLURALS = {
    "person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
    "foot": "feet", "tooth": "teeth", "sheep": "sheep", "fish": "fish", "knife": "knives",
    "leaf": "leaves", "scissors": "scissors", "skis": "skis",
}
_IRREGULAR_SINGULARS = {plural: single for single, plural in _IRREGULAR_PLURALS.items()}
_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve"]


def plural(noun: str) -> str:
    """'circle' -> 'circles', 'box' -> 'boxes', 'person' -> 'people' (last word of a phrase)."""
    head, _, last = noun.rpartition(" ")
    if last in _IRREGULAR_PLURALS:
        word = _IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        word = last + "es"
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def singular(word: str) -> str:
    """Best-effort inverse of `plural` for one word."""
    if word in _IRREGULAR_SINGULARS:
        return _IRREGULAR_SINGULARS[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def with_article(phrase: str) -> str:
    article = "an" if phrase[:1].lower() in "aeiou" else "a"
    return f"{article} {phrase}"


def counted(n: int, noun: str, digits: bool = True) -> str:
    """'3 circles', '1 circle' (or 'three circles' with digits=False)."""
    number = str(n) if digits or n >= len(_NUMBER_WORDS) else _NUMBER_WORDS[n]
    return f"{number} {noun if n == 1 else plural(noun)}"


def number_word(n: int) -> str:
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def join(items: list[str], conjunction: str = "and") -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def pick(rng: random.Random, options: list[str], **fields) -> str:
    """One of several phrasings, with {fields} filled in."""
    return rng.choice(options).format(**fields)
