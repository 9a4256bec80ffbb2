"""Words for scene facts: noun phrases, counts, where an object is, how two objects relate.

Positions are judged from object centres: the image is cut in thirds each way
("left" / "center" / "right", "top" / "middle" / "bottom"); one object is "to the
left of" another when its centre is clearly further left (by more than
RELATION_MARGIN of the image side) and the horizontal gap is the larger one.
Captions and questions both use these functions, so they never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

from vinstruct.world.spec import COUNT_WORDS

RELATION_MARGIN = 0.15


class ObjectView:
    """What the words need of an object: works for scene objects and COCO annotations alike."""

    def __init__(self, shape: str, color: str, size: str, cx: float, cy: float, extent: float):
        self.shape, self.color, self.size = shape, color, size
        self.cx, self.cy, self.extent = cx, cy, extent

    @classmethod
    def from_scene(cls, obj) -> "ObjectView":
        return cls(obj.shape, obj.color, obj.size, obj.cx, obj.cy, obj.extent)

    @classmethod
    def from_coco_object(cls, obj) -> "ObjectView":
        """From a loaded `CocoObject` (bbox in pixels, the world's shape/colour/size attributes)."""
        x, y, w, h = obj.bbox
        a = obj.attributes
        return cls(a["shape"], a["color"], a.get("size", ""), x + w / 2, y + h / 2, max(w, h))

    @classmethod
    def from_annotation(cls, ann: dict) -> "ObjectView":
        x, y, w, h = ann["bbox"]
        return cls(ann["shape"], ann["color"], ann["size"], x + w / 2, y + h / 2, max(w, h))


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x", "ss")) else "s")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def count_word(n: int) -> str:
    return COUNT_WORDS[n] if n < len(COUNT_WORDS) else str(n)


def noun(obj: ObjectView, with_color: bool = True, with_size: bool = False, number: int = 1) -> str:
    """'a small red circle', 'two red circles', 'the star' style phrases (no article when number=0)."""
    words = ([obj.size] if with_size else []) + ([obj.color] if with_color else [])
    if number == 1:
        words.append(obj.shape)
        return f"{article(words[0])} {' '.join(words)}"
    words.append(plural(obj.shape))
    return " ".join(([count_word(number)] if number else []) + words)


def horizontal(obj: ObjectView, image_size: int) -> str:
    third = obj.cx / image_size
    return "left" if third < 1 / 3 else "right" if third > 2 / 3 else "center"


def vertical(obj: ObjectView, image_size: int) -> str:
    third = obj.cy / image_size
    return "top" if third < 1 / 3 else "bottom" if third > 2 / 3 else "middle"


def location(obj: ObjectView, image_size: int, variant: int = 0) -> str:
    """'in the top left corner', 'on the right', 'at the bottom', 'in the center'."""
    h, v = horizontal(obj, image_size), vertical(obj, image_size)
    if h == "center" and v == "middle":
        return ("in the center", "in the middle")[variant % 2]
    if h == "center":
        return (f"at the {v}", f"near the {v}")[variant % 2]
    if v == "middle":
        return (f"on the {h}", f"on the {h} side")[variant % 2]
    return (f"in the {v} {h} corner", f"at the {v} {h}")[variant % 2]


def relation(a: ObjectView, b: ObjectView, image_size: int) -> str | None:
    """Where a is relative to b: 'to the left of', 'to the right of', 'above', 'below', or None if unclear."""
    dx, dy = b.cx - a.cx, b.cy - a.cy
    margin = RELATION_MARGIN * image_size
    if abs(dx) >= abs(dy) and abs(dx) > margin:
        return "to the left of" if dx > 0 else "to the right of"
    if abs(dy) > abs(dx) and abs(dy) > margin:
        return "above" if dy > 0 else "below"
    return None


def group(objects: Sequence[ObjectView]) -> list[list[ObjectView]]:
    """Objects grouped by (colour, shape), in order of first appearance."""
    groups: dict[tuple[str, str], list[ObjectView]] = {}
    for obj in objects:
        groups.setdefault((obj.color, obj.shape), []).append(obj)
    return list(groups.values())


def join(phrases: Sequence[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def sentence(text: str) -> str:
    text = text.strip()
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "?", "!")) else ".")
