"""Scenes as the evaluation sees them: objects with a shape, a colour, a size and a box.

Two sources give the same view:
- a COCO image (our world keeps "shape", "color", "size" on each annotation; for other
  COCO sets the category name is split as "<colour words> <shape word>"),
- the symbolic text a judge reads (`category: [x1, y1, x2, y2]` lines).
Positions are read from the box centre in normalised 0-1 coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vinstruct.data.coco import CocoImage
from vinstruct.data.formats import read_json
from vinstruct.data.symbolic import normalize_box, parse_symbolic
from vinstruct.errors import VinstructError

# A centre in the left third is "left", in the right third "right" (top/bottom likewise); in
# the middle third it is neither, so position questions are only asked where the answer is
# not a judgement call. The world's own captions and questions use the same thirds.
LEFT_EDGE, RIGHT_EDGE = 1 / 3, 2 / 3


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in 0-1
    size: str = ""

    @property
    def category(self) -> str:
        return f"{self.color} {self.shape}".strip()

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2

    def side(self, axis: str) -> str | None:
        """'left'/'right' (axis x) or 'top'/'bottom' (axis y) when clearly so, else None."""
        value = self.center[0] if axis == "x" else self.center[1]
        low, high = ("left", "right") if axis == "x" else ("top", "bottom")
        if value < LEFT_EDGE:
            return low
        if value > RIGHT_EDGE:
            return high
        return None


def with_article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def split_category(name: str) -> tuple[str, str]:
    """'dark red circle' -> ('dark red', 'circle'): the last word names the shape."""
    words = name.strip().split()
    if not words:
        return "", ""
    return " ".join(words[:-1]), words[-1]


def objects_of_image(image: CocoImage) -> list[SceneObject]:
    objects = []
    for obj in image.objects:
        color, shape = split_category(obj.category)
        color = str(obj.attributes.get("color", color))
        shape = str(obj.attributes.get("shape", shape))
        box = tuple(normalize_box(obj.bbox, image.width, image.height))
        objects.append(SceneObject(shape, color, box, str(obj.attributes.get("size", ""))))
    return objects


def objects_of_symbolic(text: str) -> list[SceneObject]:
    objects = []
    for category, coords in parse_symbolic(text).boxes:
        color, shape = split_category(category.lower())
        objects.append(SceneObject(shape, color, tuple(coords)))
    return objects


@dataclass
class WorldInfo:
    """What world.json says about the vocabulary and the held-out combinations."""

    shapes: list[str]
    colors: list[str]
    sizes: list[str]
    held_out: set[tuple[str, str]]  # (shape, colour)

    @classmethod
    def load(cls, world_dir: str | Path) -> "WorldInfo":
        path = Path(world_dir) / "world.json"
        data = read_json(path)
        if not isinstance(data, dict):
            raise VinstructError(f"{path}: expected a JSON object")
        for key in ("shapes", "colors"):
            if not isinstance(data.get(key), list) or not data[key]:
                raise VinstructError(f"{path}: missing list {key!r} (expected the world's {key})")
        held = data.get("held_out", [])
        if not isinstance(held, list) or any(not isinstance(p, list) or len(p) != 2 for p in held):
            raise VinstructError(f"{path}: 'held_out' must be a list of [shape, color] pairs")
        return cls([str(s) for s in data["shapes"]], [str(c) for c in data["colors"]],
                   [str(s) for s in data.get("sizes", [])], {(str(s), str(c)) for s, c in held})

    @classmethod
    def from_images(cls, images: list[CocoImage]) -> "WorldInfo":
        """Vocabulary read off the annotations, for COCO sets without a world.json."""
        shapes, colors = set(), set()
        for image in images:
            for obj in objects_of_image(image):
                shapes.add(obj.shape)
                colors.add(obj.color)
        return cls(sorted(shapes), sorted(colors), [], set())

    def is_unseen(self, obj: SceneObject) -> bool:
        return (obj.shape, obj.color) in self.held_out
