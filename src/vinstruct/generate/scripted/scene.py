"""What the scripted teacher knows about an image: only what its symbolic text says.

Box categories such as "red circle" split into a colour and a noun; boxes give
positions (box centres), sizes (box areas) and relations. Without boxes, the
teacher knows only what the captions state: `caption_mentions` picks out phrases
such as "two blue stars".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vinstruct.data.symbolic import parse_symbolic
from vinstruct.generate.scripted.language import singular

COLOR_WORDS = frozenset(
    "red orange yellow green blue purple pink brown black white gray grey cyan magenta teal navy olive "
    "maroon lime violet indigo gold golden silver beige turquoise lavender tan".split()
)
COLOR_MODIFIERS = frozenset({"dark", "light", "pale", "bright", "deep"})
SHAPE_WORDS = frozenset(
    "circle square triangle star hexagon diamond cross heart pentagon rectangle ellipse oval octagon "
    "crescent ring arrow trapezoid rhombus semicircle moon".split()
)
GENERIC_NOUNS = frozenset({"shape", "object", "thing", "item", "figure", "one"})
_NUMBERS = {"a": 1, "an": 1, "one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
            "seven": 7, "eight": 8, "nine": 9, "ten": 10}
# Regions are thirds of the image; left/right answers use the half the box centre falls in.
_THIRD_LOW, _THIRD_HIGH = 0.36, 0.64


def split_category(category: str) -> tuple[str | None, str]:
    """'red circle' -> ('red', 'circle'); 'light blue star' -> ('light blue', 'star'); 'dog' -> (None, 'dog')."""
    words = category.lower().split()
    n = 0
    while n < len(words) - 1 and (words[n] in COLOR_WORDS or
                                  (words[n] in COLOR_MODIFIERS and n + 1 < len(words) and words[n + 1] in COLOR_WORDS)):
        n += 1
    if n == 0:
        return None, " ".join(words)
    return " ".join(words[:n]).replace("grey", "gray"), " ".join(words[n:])


@dataclass(frozen=True)
class SceneObject:
    index: int
    color: str | None
    noun: str
    box: tuple[float, float, float, float]

    @property
    def name(self) -> str:
        return f"{self.color} {self.noun}" if self.color else self.noun

    @property
    def cx(self) -> float:
        return (self.box[0] + self.box[2]) / 2

    @property
    def cy(self) -> float:
        return (self.box[1] + self.box[3]) / 2

    @property
    def area(self) -> float:
        return max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0)

    @property
    def side(self) -> str:
        return "left" if self.cx < 0.5 else "right"

    @property
    def level(self) -> str:
        return "top" if self.cy < 0.5 else "bottom"

    @property
    def column(self) -> str:
        return "left" if self.cx < _THIRD_LOW else "right" if self.cx > _THIRD_HIGH else "center"

    @property
    def row(self) -> str:
        return "top" if self.cy < _THIRD_LOW else "bottom" if self.cy > _THIRD_HIGH else "middle"

    def distance(self, other: "SceneObject") -> float:
        return ((self.cx - other.cx) ** 2 + (self.cy - other.cy) ** 2) ** 0.5


def region_phrase(obj: SceneObject) -> str:
    """Where an object is, in words: 'in the top left corner', 'on the right', 'in the center'."""
    row, column = obj.row, obj.column
    if row == "middle" and column == "center":
        return "in the center"
    if row == "middle":
        return f"on the {column} side"
    if column == "center":
        return f"at the {row}"
    return f"in the {row} {column} corner"


def relation(a: SceneObject, b: SceneObject) -> str:
    """How a is placed relative to b: 'to the left of', 'above', 'next to'."""
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if abs(dx) >= abs(dy) and abs(dx) > 0.1:
        return "to the left of" if dx > 0 else "to the right of"
    if abs(dy) > 0.1:
        return "above" if dy > 0 else "below"
    return "next to"


@dataclass
class Mention:
    """A caption phrase such as 'two blue stars': count (None when unsaid), colour, noun."""

    count: int | None
    color: str | None
    noun: str


@dataclass
class Scene:
    captions: list[str]
    objects: list[SceneObject] = field(default_factory=list)

    @property
    def has_boxes(self) -> bool:
        return bool(self.objects)

    @property
    def collective(self) -> str:
        """What to call the things in the image: 'shape' in a shapes scene, else 'object'.

        Categories that all carry a colour ("red circle") mean a shapes scene, whatever the shapes are
        called; COCO's categories ("dog", "traffic light") never do.
        """
        if self.objects:
            return "shape" if all(o.color for o in self.objects) else "object"
        nouns = {m.noun for m in caption_mentions(self.captions)}
        return "shape" if nouns and nouns <= SHAPE_WORDS else "object"

    def matching(self, color: str | None = None, noun: str | None = None, side: str | None = None,
                 level: str | None = None) -> list[SceneObject]:
        return [o for o in self.objects
                if (color is None or o.color == color) and (noun is None or o.noun == noun)
                and (side is None or o.side == side) and (level is None or o.level == level)]

    def colors(self) -> list[str]:
        return list(dict.fromkeys(o.color for o in self.objects if o.color))

    def nouns(self) -> list[str]:
        return list(dict.fromkeys(o.noun for o in self.objects))

    def referent(self, obj: SceneObject) -> str | None:
        """The shortest phrase naming obj alone ('the star', 'the red shape', 'the red star'), or None."""
        if len(self.matching(noun=obj.noun)) == 1:
            return f"the {obj.noun}"
        if obj.color and len(self.matching(color=obj.color)) == 1:
            return f"the {obj.color} {self.collective}"
        if obj.color and len(self.matching(color=obj.color, noun=obj.noun)) == 1:
            return f"the {obj.name}"
        return None

    def largest(self) -> SceneObject | None:
        """The clearly largest object (at least 1.4x the area of the next), if there is one."""
        ranked = sorted(self.objects, key=lambda o: o.area, reverse=True)
        if len(ranked) >= 2 and ranked[0].area >= 1.4 * ranked[1].area:
            return ranked[0]
        return None

    def smallest(self) -> SceneObject | None:
        ranked = sorted(self.objects, key=lambda o: o.area)
        if len(ranked) >= 2 and ranked[1].area >= 1.4 * ranked[0].area:
            return ranked[0]
        return None

    def size_word(self, obj: SceneObject) -> str:
        """'large' / 'small' when sizes in the scene clearly differ, else ''."""
        areas = [o.area for o in self.objects]
        if len(areas) < 2 or max(areas) < 2 * min(areas):
            return ""
        if obj.area >= 0.7 * max(areas):
            return "large"
        if obj.area <= 1.4 * min(areas):
            return "small"
        return ""

    def background(self) -> str | None:
        """A background colour the captions agree on ('gray'), if any caption names one."""
        for caption in self.captions:
            match = re.search(r"((?:\w+ )?\w+) background", caption.lower())
            if match:
                words = [w for w in match.group(1).split() if w in COLOR_WORDS or w in COLOR_MODIFIERS]
                if words and words[-1] in COLOR_WORDS:
                    return " ".join(words).replace("grey", "gray")
        return None


def scene_from_symbolic(text: str) -> Scene:
    parsed = parse_symbolic(text)
    objects = []
    for index, (category, coords) in enumerate(parsed.boxes):
        color, noun = split_category(category)
        x1, y1, x2, y2 = coords
        objects.append(SceneObject(index, color, noun, (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))))
    return Scene(parsed.captions, objects)


def caption_mentions(captions: list[str]) -> list[Mention]:
    """Phrases naming known shapes in captions, e.g. 'two blue stars' -> Mention(2, 'blue', 'star')."""
    mentions = []
    for caption in captions:
        words = re.findall(r"[a-z]+", caption.lower())
        for i, word in enumerate(words):
            noun = singular(word)
            if noun not in SHAPE_WORDS:
                continue
            j, color_words = i - 1, []
            while j >= 0 and (words[j] in COLOR_WORDS or words[j] in COLOR_MODIFIERS):
                color_words.insert(0, words[j])
                j -= 1
            while j >= 0 and words[j] in ("small", "large", "big", "tiny", "little", "huge"):
                j -= 1
            count = _NUMBERS.get(words[j]) if j >= 0 else None
            color = " ".join(color_words).replace("grey", "gray") if color_words and color_words[-1] in COLOR_WORDS else None
            mentions.append(Mention(count, color, noun))
    return mentions
