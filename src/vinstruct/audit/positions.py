"""Where-phrases in a sentence: positions in the image and relations between two objects.

  position   "on the left (side)", "in the top right corner", "at the bottom", "in the center",
             "in the upper half of the picture", "near the top"
  relation   "to the left of X", "right of X", "above X", "below X", "under X", "on top of X",
             "higher than X"
"to the left" with no object is a bare relation (its object comes from the question); "from
the left", "from left to right", "the left half holds ..." and "down the middle" say nothing
about an object and are not read.
"""

from __future__ import annotations

from dataclasses import dataclass

from vinstruct.audit.vocabulary import POSITIONS, PREPOSITIONS

_AREA_WORDS = frozenset("corner corners side sides half part edge area portion region section end".split())
_IMAGE_WORDS = frozenset("image picture photo photograph frame scene canvas".split())
_SKIP_BEFORE_POSITION = frozenset("the its far very extreme exact".split())
_RELATION_WORDS = {"above": "above", "below": "below", "under": "below", "beneath": "below", "underneath": "below"}


@dataclass(slots=True)
class Location:
    start: int
    end: int
    h: str | None = None  # "left" / "right"
    v: str | None = None  # "top" / "bottom"
    center: bool = False
    relation: str | None = None  # "left" / "right" / "above" / "below": relative to an object
    object_at: int | None = None  # token index where the relation's object phrase starts
    bare: bool = False  # "to the left" with no "of ...": a relation whose object the question names

    @property
    def is_relation(self) -> bool:
        return self.relation is not None


def _read_positions(tokens: list[str], j: int) -> tuple[int, dict[str, str]]:
    """Consecutive position words from j: ('top', 'left') -> {'v': 'top', 'h': 'left'}."""
    found: dict[str, str] = {}
    n = len(tokens)
    while j < n and tokens[j] in POSITIONS:
        axis, value = POSITIONS[tokens[j]]
        found.setdefault(axis, value)
        j += 1
    return j, found


_TRIGGERS = frozenset(POSITIONS) | frozenset(_RELATION_WORDS)


def find_locations(tokens: list[str]) -> list[Location]:
    if _TRIGGERS.isdisjoint(tokens):
        return []  # most sentences say nothing about where things are
    n = len(tokens)
    out: list[Location] = []
    i = 0
    while i < n:
        tok = tokens[i]
        if tok in PREPOSITIONS:
            loc = _prepositional(tokens, i)
            if loc is not None:
                out.append(loc)
                i = loc.end
                continue
        elif tok in _RELATION_WORDS and i + 1 < n:
            following = tokens[i + 2] if tokens[i + 1] == "the" and i + 2 < n else tokens[i + 1]
            if following not in _IMAGE_WORDS and following not in POSITIONS:
                out.append(Location(i, i + 1, relation=_RELATION_WORDS[tok], object_at=i + 1))
        elif tok in ("left", "right") and i + 1 < n and tokens[i + 1] == "of" and (i == 0 or tokens[i - 1] != "the"):
            out.append(Location(i, i + 2, relation=tok, object_at=i + 2))
            i += 2
            continue
        elif tok in ("higher", "lower") and i + 1 < n and tokens[i + 1] == "than":
            out.append(Location(i, i + 2, relation="above" if tok == "higher" else "below", object_at=i + 2))
            i += 2
            continue
        i += 1
    return out


def _prepositional(tokens: list[str], i: int) -> Location | None:
    n = len(tokens)
    j = i + 1
    if tokens[i] == "on" and j + 1 < n and tokens[j] == "top" and tokens[j + 1] == "of":
        if j + 2 < n and tokens[j + 2] not in _IMAGE_WORDS and not (tokens[j + 2] == "the" and j + 3 < n
                                                                   and tokens[j + 3] in _IMAGE_WORDS):
            return Location(i, j + 2, relation="above", object_at=j + 2)
        return None
    while j < n and tokens[j] in _SKIP_BEFORE_POSITION:
        j += 1
    if j == i + 1 and tokens[i] != "to":
        return None  # "in left" is not English; "to left" is rare but harmless to skip as well
    end, found = _read_positions(tokens, j)
    if not found:
        return None
    if end < n and tokens[end] in _AREA_WORDS:
        end += 1
    loc = Location(i, end)
    if end < n and tokens[end] == "of":
        k = end + 1
        if k < n and tokens[k] in ("the", "this") and k + 1 < n and tokens[k + 1] in _IMAGE_WORDS:
            loc.end = k + 2
        elif k < n and tokens[k] in _IMAGE_WORDS:
            loc.end = k + 1
        elif set(found) == {"h"}:
            loc.relation, loc.object_at, loc.end = found["h"], k, k
            return loc
        else:
            return None  # "at the top of the tree", "in the middle of the two": not a place in the image
    if "h" in found:
        loc.h = found["h"]
    if "v" in found:
        loc.v = found["v"]
    if not loc.h and not loc.v:
        loc.center = True
    if tokens[i] == "to" and set(found) == {"h"} and not (end < n and tokens[end - 1] in _AREA_WORDS):
        loc.relation, loc.bare = found["h"], True  # "to the left": of what, the question says
    return loc
