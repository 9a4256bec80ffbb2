"""What a question asks, and about which object: the context an answer is read in.

"What color is the star?" makes "It is red." a colour claim about the star; "How many
circles are there?" makes "Two." a count of circles; "Is there a green heart?" makes
"No." a claim that there is none. The same classification gives the question-type mix of
the diversity report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vinstruct.audit.text import Mention, find_mentions, tokenize
from vinstruct.audit.vocabulary import SUPERLATIVES, Lexicon

QUESTION_TYPES = ("count", "color", "shape", "exists", "side", "level", "relation", "where", "superlative",
                  "compare", "describe", "reason", "other")

_RULES = [
    ("reason", re.compile(r"\bif\b.*\bwould\b|\bwhy\b|\bhow come\b|\bin what order\b")),
    ("count", re.compile(r"\bhow many\b|\bcount\b|\bnumber of\b")),
    ("color", re.compile(r"\b(?:what|which) colou?rs?\b|\bcolou?r of\b|\bwhat colou?r\b")),
    ("superlative", re.compile(r"\b(?:largest|biggest|smallest|tiniest)\b")),
    ("shape", re.compile(r"\b(?:what|which) (?:kind of |type of )?shapes?\b|\bshape of\b")),
    ("compare", re.compile(r"\bmore\b.*\bthan\b|\bfewer\b|\bless\b.*\bthan\b|\bas many\b")),
    ("relation", re.compile(r"\b(?:left|right|above|below) (?:or (?:to )?(?:the )?(?:left|right|above|below) )?of\b"
                            r"|\bclosest\b|\bnearest\b|\bfarthest\b")),
    ("side", re.compile(r"\bleft or (?:the )?right\b|\bright or (?:the )?left\b|\bwhich side\b")),
    ("level", re.compile(r"\btop or (?:the )?bottom\b|\bbottom or (?:the )?top\b|\bupper or lower\b|\blower or upper\b")),
    ("describe", re.compile(r"\bdescri|\btell me about\b|\bwhat do you see\b|\bwhat is (?:in|shown|happening)\b"
                            r"|\bwhat does (?:the|this) (?:image|picture|photo) (?:show|contain)\b|\bwalk me through\b"
                            r"|\baccount of\b|\bwhat can you see\b|\bwhat (?:this|the) (?:image|picture|photo) shows\b")),
    ("exists", re.compile(r"^(?:is|are) there\b|\b(?:do|can) you (?:see|spot|find|notice)\b"
                          r"|\bdoes (?:the|this) (?:image|picture|photo) (?:contain|show|have|include)\b")),
    ("where", re.compile(r"^where\b|\bwhere (?:is|are)\b|\bin which part\b")),
    ("reason", re.compile(r"\bwhy\b|\bhow come\b|\bwhat might\b|\bwhat would\b|\bif\b|\bexplain\b|\breason\b")),
]
_IMAGE_TAIL = frozenset("in on the this that image picture photo photograph scene here visible at all".split())


@dataclass
class QuestionContext:
    kind: str = "other"
    topic: Mention | None = None  # the object asked about
    other: Mention | None = None  # the second object (relations, comparisons)
    plain_existence: bool = False  # "Is there a red circle (in the image)?": a yes/no answer is an existence claim
    superlative: str | None = None  # "largest" / "smallest" when the question asks which object is


def question_type(question: str) -> str:
    text = " ".join(question.replace("<image>", " ").lower().split())
    return next((kind for kind, pattern in _RULES if pattern.search(text)), "other")


def read_question(question: str | None, lex: Lexicon) -> QuestionContext:
    if not question:
        return QuestionContext()
    ctx = QuestionContext(kind=question_type(question))
    tokens = [t for t in tokenize(question.replace("<image>", " ")) if t not in "?.!,\n"]
    mentions = [m for m in find_mentions(tokens, lex) if not m.negated]
    named = [m for m in mentions if m.names_something]
    ctx.superlative = next((SUPERLATIVES[t] for t in tokens if t in SUPERLATIVES), None)
    ctx.topic = named[0] if named else (mentions[0] if mentions else None)
    rest = [m for m in named if m is not ctx.topic]
    ctx.other = rest[0] if rest else None
    if ctx.kind == "exists" and ctx.topic is not None and ctx.topic.names_something and len(named) == 1:
        ctx.plain_existence = all(t in _IMAGE_TAIL for t in tokens[ctx.topic.end:])
    return ctx
