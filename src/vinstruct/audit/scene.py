"""What the annotations say about one image, in the form the checks need.

Shapes world: categories are "<colour> <shape>" (annotations also carry "color", "shape",
"size"), so every object has a noun, a colour, a size and a box. Real COCO: a category per
object and a box; a category also counts as present when a caption of the image names it
(as CHAIR does), since instance annotations miss objects that people describe.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from vinstruct.audit.vocabulary import COLORS, SHAPES, lexicon, singular
from vinstruct.data.coco import CocoImage


@dataclass(slots=True)
class AuditObject:
    category: str
    noun: str
    color: str | None
    size: str | None  # the world's own "small" / "large"
    cx: float  # box centre, 0-1 of the image side
    cy: float
    area: float  # box area, fraction of the image

    def describe(self) -> str:
        return f"{self.category} at ({self.cx:.2f}, {self.cy:.2f})"


@dataclass
class AuditScene:
    mode: str  # "shapes" or "coco"
    objects: list[AuditObject]
    caption_nouns: frozenset = frozenset()  # COCO categories the captions name
    caption_counts: dict = field(default_factory=dict)  # COCO category -> counts the captions state

    def matching(self, noun: str | None = None, color: str | None = None) -> list[AuditObject]:
        return [o for o in self.objects if (noun is None or o.noun == noun) and (color is None or o.color == color)]

    def inventory(self) -> str:
        if not self.objects:
            return "no annotated objects"
        counts = Counter(o.category for o in self.objects)
        return ", ".join(f"{n} {c}" if n > 1 else c for c, n in counts.items())


def split_world_category(category: str) -> tuple[str | None, str]:
    """'red circle' -> ('red', 'circle'); 'light blue star' -> ('blue', 'star'); 'dog' -> (None, 'dog')."""
    words = category.lower().split()
    colors = [w for w in words[:-1] if w in COLORS]
    if not colors:
        return None, " ".join(words)
    return ("gray" if colors[-1] == "grey" else colors[-1]), " ".join(words[len(words) - 1:])


def set_mode(categories: list[str]) -> str:
    """'shapes' when every category is '<colour> <noun>', else 'coco'."""
    if categories and all(split_world_category(c)[0] for c in categories):
        return "shapes"
    return "coco"


def build_scene(image: CocoImage, mode: str) -> AuditScene:
    objects = []
    width, height = max(image.width, 1), max(image.height, 1)
    for obj in image.objects:
        x, y, w, h = (float(v) for v in obj.bbox)
        attrs = obj.attributes
        if mode == "shapes":
            color, noun = split_world_category(obj.category)
            color = attrs.get("color", color)
            noun = attrs.get("shape", noun)
        else:
            color, noun = None, obj.category
        objects.append(AuditObject(obj.category, noun, color, attrs.get("size") if mode == "shapes" else None,
                                   (x + w / 2) / width, (y + h / 2) / height, (w * h) / (width * height)))
    scene = AuditScene(mode, objects)
    if mode == "coco":
        scene.caption_nouns, scene.caption_counts = _caption_facts(image.captions)
    return scene


def _caption_facts(captions: list[str]) -> tuple[frozenset, dict]:
    """COCO categories named in the captions, and the counts stated for them ('two dogs')."""
    from vinstruct.audit.text import find_mentions, tokenize

    lex = lexicon("coco")
    nouns, counts = set(), {}
    for caption in captions:
        tokens = tokenize(caption)
        for mention in find_mentions(tokens, lex):
            if mention.noun and not mention.negated:
                nouns.add(mention.noun)
                if mention.count is not None:
                    counts.setdefault(mention.noun, set()).add(mention.count)
    return frozenset(nouns), counts


def world_vocabulary(categories: list[str]) -> tuple[frozenset, frozenset]:
    """Shape and colour names of a shapes world's categories (beyond the built-in lists)."""
    shapes, colors = set(), set()
    for category in categories:
        color, noun = split_world_category(category)
        if color:
            colors.add(color)
            shapes.add(singular(noun))
    return frozenset(shapes - SHAPES), frozenset(colors - COLORS)
