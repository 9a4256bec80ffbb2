"""Questions with one exact answer about a scene: count, colour, shape, position, relation, existence.

Each question is asked only when its answer is unambiguous (e.g. "what color is the
star?" only when there is exactly one star). Answers are one word, capitalised,
with a full stop ("Two.", "Red.", "Yes."), so they can be checked exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vinstruct.world.describe import ObjectView, article, count_word, horizontal, plural, relation, vertical
from vinstruct.world.spec import COLORS, SHAPES

CATEGORIES = ("count", "color", "shape", "position", "relation", "existence")


@dataclass(frozen=True)
class Question:
    category: str
    text: str
    answer: str  # one word, e.g. "two", "red", "left", "yes"

    @property
    def reply(self) -> str:
        return self.answer.capitalize() + "."


def _unique(objects: Sequence[ObjectView], key) -> list[ObjectView]:
    """Objects whose key value no other object shares."""
    values = [key(o) for o in objects]
    return [o for o, v in zip(objects, values) if values.count(v) == 1]


def count_questions(objects, rng) -> list[Question]:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]  # asked about present and absent shapes alike
    if rng.uniform() < 0.6:
        shape = objects[int(rng.integers(len(objects)))].shape
    n = sum(o.shape == shape for o in objects)
    out = [Question("count", f"How many {plural(shape)} are there in the image?", count_word(n))]
    out.append(Question("count", "How many shapes are there in the image?", count_word(len(objects))))
    obj = objects[int(rng.integers(len(objects)))]
    n = sum(o.shape == obj.shape and o.color == obj.color for o in objects)
    out.append(Question("count", f"How many {obj.color} {plural(obj.shape)} are there?", count_word(n)))
    return out


def attribute_questions(objects, rng) -> list[Question]:
    out = []
    for obj in _unique(objects, lambda o: o.shape):
        out.append(Question("color", f"What color is the {obj.shape}?", obj.color))
    for obj in _unique(objects, lambda o: o.color):
        out.append(Question("shape", f"What shape is the {obj.color} object?", obj.shape))
    return out


def position_questions(objects, image_size: int, rng) -> list[Question]:
    out = []
    for obj in _unique(objects, lambda o: (o.color, o.shape)):
        name = f"{obj.color} {obj.shape}"
        h, v = horizontal(obj, image_size), vertical(obj, image_size)
        if h != "center":
            out.append(Question("position", f"Is the {name} on the left or on the right side of the image?", h))
        if v != "middle":
            out.append(Question("position", f"Is the {name} at the top or at the bottom of the image?", v))
    return out


def relation_questions(objects, image_size: int, rng) -> list[Question]:
    out = []
    unique = _unique(objects, lambda o: (o.color, o.shape))
    for a in unique:
        for b in unique:
            if a is b:
                continue
            rel = relation(a, b, image_size)
            if rel in ("to the left of", "to the right of"):
                asked = "to the left of" if rng.uniform() < 0.5 else "to the right of"
                text = f"Is the {a.color} {a.shape} {asked} the {b.color} {b.shape}?"
                out.append(Question("relation", text, "yes" if asked == rel else "no"))
            elif rel in ("above", "below"):
                text = f"Is the {a.color} {a.shape} above or below the {b.color} {b.shape}?"
                out.append(Question("relation", text, rel))
    return out


def existence_questions(objects, rng) -> list[Question]:
    """One present and one absent (colour, shape); the absent one shares the colour or the shape
    of a present object, so that answering needs both attributes."""
    present = {(o.color, o.shape) for o in objects}
    obj = objects[int(rng.integers(len(objects)))]
    out = [Question("existence", f"Is there {article(obj.color)} {obj.color} {obj.shape} in the image?", "yes")]
    near = [(c, obj.shape) for c in COLORS] + [(obj.color, s) for s in SHAPES]
    absent = [pair for pair in near if pair not in present]
    if absent:
        color, shape = absent[int(rng.integers(len(absent)))]
        out.append(Question("existence", f"Is there {article(color)} {color} {shape} in the image?", "no"))
    return out


def scene_questions(objects: Sequence[ObjectView], image_size: int, rng: np.random.Generator) -> list[Question]:
    """Every kind of exact question this scene allows (a few per kind)."""
    objects = list(objects)
    return (count_questions(objects, rng) + attribute_questions(objects, rng)
            + position_questions(objects, image_size, rng) + relation_questions(objects, image_size, rng)
            + existence_questions(objects, rng))
