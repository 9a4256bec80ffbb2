"""Reading a turn: tokens, sentences, clauses, and the object phrases ("mentions") in them.

A mention is a noun phrase that names objects: "two small red circles", "the blue shape",
"no orange star", "the largest one". It records what the phrase says about them (count,
colour, size, negation) and where it sits, so that claims.py can tie predicates to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vinstruct.audit.vocabulary import (COLLECTIVE, COLOR, COLOR_MOD, DET, NEG, NOUN, NUM, SIZE, SUPER, Lexicon)

_TOKEN = re.compile(r"\d+(?:\.\d+)?|[a-z]+|[.!?;:,()\n]")
_CONTRACTIONS = (("n't", " not"), ("'s", " is"), ("’s", " is"), ("n’t", " not"), ("'re", " are"), ("'m", " am"))
SENTENCE_END = frozenset(".!?\n")
CLAUSE_END = frozenset(";:")
# Words after a noun that make it a qualifier, not an object ("square units", "star shape").
_UNIT_WORDS = frozenset("unit units meter meters metre metres inch inches foot feet cm mm pixel pixels degree degrees "
                        "radius diameter area areas shaped".split())


def tokenize(text: str) -> list[str]:
    text = text.lower()
    if "'" in text or "’" in text:
        for short, full in _CONTRACTIONS:
            text = text.replace(short, full)
    return _TOKEN.findall(text)


def sentences(tokens: list[str]) -> list[list[str]]:
    """Token lists split at . ! ? and line breaks; a question inside an answer is kept (callers skip it)."""
    out, current = [], []
    for tok in tokens:
        if tok in SENTENCE_END:
            if current:
                current.append(tok)
                out.append(current)
                current = []
        else:
            current.append(tok)
    if current:
        out.append(current)
    return out


@dataclass(slots=True)
class Mention:
    start: int  # first token of the phrase (its determiner or count, if any)
    end: int  # one past the noun
    noun: str | None  # canonical noun (shape or COCO category); None for "shape", "object", "one"
    color: str | None = None
    size: str | None = None  # "small" / "large"
    count: int | None = None  # a number said right before the phrase
    negated: bool = False
    only: bool = False  # "the only circle"
    other: bool = False  # "two other shapes"
    region: tuple | None = None  # set when a where-phrase limits a count: (h, v, center)
    apposition: bool = False  # the where-phrase follows a comma: it says where they all are

    @property
    def names_something(self) -> bool:
        """Whether the phrase says which objects (a noun or a colour), not just 'a shape'."""
        return self.noun is not None or self.color is not None


def _number(tok: str, lex: Lexicon) -> int | None:
    if tok.isdigit():
        return int(tok)
    entry = lex.words.get(tok)
    return entry[1] if entry and entry[0] == NUM else None


def find_mentions(tokens: list[str], lex: Lexicon) -> list[Mention]:
    """Every object phrase in a sentence, left to right."""
    words = lex.words
    mentions: list[Mention] = []
    n = len(tokens)
    heads = lex.heads
    after = 0  # the end of the last phrase found: phrases do not overlap
    for i in [i for i, t in enumerate(tokens) if t in heads]:
        if i < after:
            continue
        tok = tokens[i]
        noun, end = None, i + 1
        if i + 1 < n and (tok, tokens[i + 1]) in lex.pairs:
            noun, end = lex.pairs[(tok, tokens[i + 1])], i + 2
            kind = NOUN
        else:
            entry = words.get(tok)
            kind = entry[0] if entry else None
            if kind == NOUN:
                noun = entry[1]
                if tok == "orange" and i + 1 < n and words.get(tokens[i + 1], (None,))[0] in (NOUN, COLLECTIVE):
                    kind = COLOR  # "an orange cat"
            elif kind == NUM and tok == "one":
                # "the red one", "the largest one", "each one": 'one' stands for the object itself.
                prev = words.get(tokens[i - 1], (None,))[0] if i else None
                following = words.get(tokens[i + 1], (None,))[0] if i + 1 < n else None
                if prev in (COLOR, SIZE, SUPER, DET) and tokens[i - 1] not in ("a", "an") and \
                        following not in (NOUN, COLLECTIVE, COLOR, SIZE, COLOR_MOD) and (i + 1 >= n or tokens[i + 1] != "of"):
                    kind = COLLECTIVE
        if kind not in (NOUN, COLLECTIVE) or end < n and tokens[end] in _UNIT_WORDS:
            continue  # "100 square units", "a circle radius": the noun qualifies another word
        mention = Mention(i, end, noun)
        _read_premodifiers(tokens, i, mention, lex)
        mentions.append(mention)
        after = end
    return mentions


def _read_premodifiers(tokens: list[str], head: int, m: Mention, lex: Lexicon) -> None:
    """Walk back from the noun over sizes, colours, superlatives, a count or determiner, a negation."""
    words = lex.words
    j = head - 1
    colors: list[str] = []
    while j >= 0:
        tok = tokens[j]
        kind = words.get(tok, (None, None))
        if kind[0] == COLOR:
            colors.insert(0, kind[1])
        elif kind[0] == SIZE:
            m.size = m.size or kind[1]
        elif kind[0] == COLOR_MOD or kind[0] == SUPER or tok in ("sized", "colored", "coloured", "shaped"):
            pass
        elif tok == "other":
            m.other = True
        elif tok == "only":
            m.only = True
        else:
            break
        j -= 1
    if colors:
        m.color = colors[-1]  # "light blue" -> blue; the head colour decides
    m.start = j + 1
    if j < 0:
        return
    tok = tokens[j]
    number = _number(tok, lex)
    before = tokens[j - 1] if j >= 1 else ""
    if number is not None and "." not in tok:
        m.start = j
        # "no two shapes", "any other two", "shared by 2 shapes", "one of the": not a count of the phrase.
        if before in ("no", "not", "any", "other", "every", "each", "by", "than", "of") or m.other and before == "the":
            m.count = None
            m.negated = before in ("no", "not")
            m.only = False
            if m.negated:
                m.noun, m.color = None, None  # a negated count says nothing checkable
            return
        m.count = number
        if before == "the" and m.only:
            m.count = 1
        return
    entry = words.get(tok, (None, None))
    if entry[0] == DET:
        m.start = j
        if tok in ("a", "an") and j >= 1 and tokens[j - 1] == "single":
            m.count = 1
        if m.only and tok == "the" and not (j >= 1 and tokens[j - 1] == "not"):
            m.count = 1
    elif entry[0] == NEG and tok in ("no", "without", "nor"):
        m.start = j
        m.negated = True
