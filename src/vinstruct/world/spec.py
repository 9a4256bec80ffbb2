"""What the shapes world is made of: shapes, colours, sizes, splits and held-out combinations.

Everything a scene may contain is fixed here, so that the generator, the caption
writer, the question writer and the probes all speak the same vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

GENERATOR = "vinstruct-world"
# Bump whenever a change alters the bytes written for a given seed.
VERSION = 1

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "heart")

# Saturated colours (plus white and black) that stay distinct from the muted backgrounds.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (245, 140, 25),
    "yellow": (240, 220, 40),
    "green": (40, 165, 60),
    "blue": (40, 85, 220),
    "purple": (145, 55, 195),
    "white": (248, 248, 248),
    "black": (22, 22, 22),
}

# Object extent (the larger side of its box) as a fraction of the image side.
SIZES: dict[str, tuple[float, float]] = {"small": (0.2, 0.25), "large": (0.34, 0.42)}

# Object centres sit on a lattice of this fraction of the image side (8 px at 64 px: the patch
# grid of the default vision encoder). With free positions a from-scratch ViT at our budget
# memorises objects instead of learning shapes: a supervised shape classifier on its patch
# features reached 48 % on val with free centres, 58 % on a half-patch lattice, 91 % on the
# patch lattice (docs/world.md, design notes).
POSITION_STEP = 1 / 8

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}

MIN_OBJECTS, MAX_OBJECTS = 1, 4
# Train scenes come in families of near-identical scenes (a base scene and variants that change
# one object's shape, the layout, or the count), so that contrastive batches hold hard negatives.
TRAIN_FAMILY_SIZE = 4
# How many test images get at least one object of a held-out (shape, colour) combination.
TEST_HELD_OUT_FRACTION = 0.5

COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six")


@dataclass(frozen=True)
class WorldSpec:
    """The knobs of one world (recorded in world.json)."""

    seed: int = 0
    image_size: int = 64
    held_out_count: int = 6

    def held_out(self) -> list[tuple[str, str]]:
        return held_out_combinations(self.seed, self.held_out_count)


def held_out_combinations(seed: int, count: int) -> list[tuple[str, str]]:
    """`count` (shape, colour) pairs, no shape or colour used twice, so that every colour
    keeps appearing with most shapes in train (models must not learn colour -> shape)."""
    import numpy as np

    count = min(count, len(SHAPES), len(COLORS))
    rng = np.random.default_rng([seed, 7919])
    shapes = rng.permutation(len(SHAPES))[:count]
    colors = rng.permutation(len(COLORS))[:count]
    names = list(COLORS)
    return sorted((SHAPES[s], names[c]) for s, c in zip(shapes, colors))


def split_sizes(images: int) -> dict[str, int]:
    """Images per split: 80/10/10, every split non-empty once there are at least 3 images."""
    val = max(1, round(images * SPLIT_FRACTIONS["val"])) if images >= 3 else 0
    test = max(1, round(images * SPLIT_FRACTIONS["test"])) if images >= 3 else 0
    return {"train": images - val - test, "val": val, "test": test}


def category_name(shape: str, color: str) -> str:
    return f"{color} {shape}"


def categories() -> list[dict]:
    """COCO categories, one per (colour, shape): id, name "<colour> <shape>", supercategory = shape."""
    out = []
    for shape in SHAPES:
        for color in COLORS:
            out.append({"id": len(out) + 1, "name": category_name(shape, color), "supercategory": shape})
    return out
