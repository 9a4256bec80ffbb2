"""Random scenes: which objects, where, how big, on what background.

A scene is pure data (no pixels); `render.py` draws it. All randomness comes from
a numpy Generator passed in, so a (seed, split, index) triple always yields the
same scene.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field, replace

import numpy as np

from vinstruct.world.spec import COLORS, MAX_OBJECTS, MIN_OBJECTS, POSITION_STEP, SHAPES, SIZES

# Two objects may overlap by at most this fraction of the smaller one's box:
# some overlap, as in real photos, but every object stays recognisable.
MAX_OVERLAP = 0.2
PLACEMENT_TRIES = 60
BACKGROUNDS = ("flat", "gradient", "texture")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str  # "small" | "large"
    cx: float  # centre, pixels
    cy: float
    extent: float  # side of the square the shape is drawn in, pixels
    tint: tuple[int, int, int] = (0, 0, 0)  # small per-object colour jitter

    def square(self) -> tuple[float, float, float, float]:
        half = self.extent / 2
        return (self.cx - half, self.cy - half, self.cx + half, self.cy + half)


@dataclass(frozen=True)
class Background:
    kind: str
    color: tuple[int, int, int]
    color2: tuple[int, int, int]
    direction: int  # gradient: 0 horizontal, 1 vertical
    noise: float  # std of per-pixel noise, 0-255 scale
    texture_seed: int

    @property
    def tone(self) -> str:
        """'dark' or 'light', for captions."""
        return "dark" if sum(self.color) / 3 < 128 else "light"


@dataclass(frozen=True)
class Scene:
    size: int
    objects: tuple[SceneObject, ...]
    background: Background
    family: int = -1  # train scenes: id of the family of near-identical scenes it belongs to
    variant: str = "base"  # how it differs from its family's base scene
    meta: dict = field(default_factory=dict, compare=False)


# ---- sampling -----------------------------------------------------------------------------------------
def allowed_combinations(excluded: list[tuple[str, str]]) -> list[tuple[str, str]]:
    banned = {tuple(pair) for pair in excluded}
    return [(s, c) for s in SHAPES for c in COLORS if (s, c) not in banned]


def sample_background(rng: np.random.Generator) -> Background:
    def muted() -> tuple[int, int, int]:
        # Low saturation and a middle lightness, so that white, black and every hue stand out.
        h, s, v = rng.uniform(0, 1), rng.uniform(0.0, 0.25), rng.uniform(0.35, 0.72)
        return tuple(int(round(x * 255)) for x in colorsys.hsv_to_rgb(h, s, v))

    return Background(
        kind=BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))],
        color=muted(),
        color2=muted(),
        direction=int(rng.integers(2)),
        noise=float(rng.uniform(0.0, 8.0)),
        texture_seed=int(rng.integers(2**31)),
    )


def _overlap_ok(candidate: SceneObject, others: list[SceneObject]) -> bool:
    ax1, ay1, ax2, ay2 = candidate.square()
    for other in others:
        bx1, by1, bx2, by2 = other.square()
        inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
        smaller = min(candidate.extent, other.extent) ** 2
        if inter > MAX_OVERLAP * smaller:
            return False
    return True


def sample_object(rng: np.random.Generator, size: int, combo: tuple[str, str],
                  others: list[SceneObject]) -> SceneObject | None:
    """An object of the given (shape, colour) placed without too much overlap, or None."""
    shape, color = combo
    size_name = "small" if rng.uniform() < 0.5 else "large"
    lo, hi = SIZES[size_name]
    extent = float(rng.uniform(lo, hi) * size)
    tint = tuple(int(x) for x in rng.integers(-12, 13, size=3))
    step = POSITION_STEP * size
    low, high = math.ceil(extent / 2 / step), math.floor((size - extent / 2) / step)
    for _ in range(PLACEMENT_TRIES):
        cx, cy = (float(int(rng.integers(low, high + 1)) * step) for _ in range(2))
        obj = SceneObject(shape, color, size_name, cx, cy, extent, tint)
        if _overlap_ok(obj, others):
            return obj
    return None


def sample_scene(rng: np.random.Generator, size: int, combos: list[tuple[str, str]],
                 must_include: list[tuple[str, str]] | None = None) -> Scene:
    """A scene of 1-4 objects with (shape, colour) drawn from `combos` (plus `must_include` ones)."""
    wanted = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    picks = list(must_include or [])
    while len(picks) < wanted:
        picks.append(combos[int(rng.integers(len(combos)))])
    rng.shuffle(picks)
    objects: list[SceneObject] = []
    for combo in picks:
        obj = sample_object(rng, size, combo, objects)
        if obj is not None:
            objects.append(obj)
    if not objects:  # cannot happen for one object in an empty image, but keep scenes non-empty
        objects.append(SceneObject(picks[0][0], picks[0][1], "small", size / 2, size / 2, size * 0.22))
    return Scene(size, tuple(objects), sample_background(rng))


# ---- family variants (train): one change each ------------------------------------------------------
def vary_shape(scene: Scene, rng: np.random.Generator, combos: list[tuple[str, str]]) -> Scene:
    """The same scene with one object's shape changed (colour, size and place kept)."""
    index = int(rng.integers(len(scene.objects)))
    obj = scene.objects[index]
    choices = [s for s, c in combos if c == obj.color and s != obj.shape]
    new = replace(obj, shape=choices[int(rng.integers(len(choices)))])
    objects = scene.objects[:index] + (new,) + scene.objects[index + 1:]
    return replace(scene, objects=objects, variant="shape")


def vary_layout(scene: Scene, rng: np.random.Generator) -> Scene:
    """The scene mirrored left-right or top-bottom: same objects, other positions."""
    horizontal = rng.uniform() < 0.6
    size = scene.size
    objects = tuple(
        replace(o, cx=size - o.cx) if horizontal else replace(o, cy=size - o.cy) for o in scene.objects
    )
    return replace(scene, objects=objects, variant="mirror_x" if horizontal else "mirror_y")


def vary_count(scene: Scene, rng: np.random.Generator, combos: list[tuple[str, str]]) -> Scene:
    """The scene with one object removed or one more added."""
    objects = list(scene.objects)
    remove = len(objects) == MAX_OBJECTS or (len(objects) > 1 and rng.uniform() < 0.5)
    if not remove:
        added = sample_object(rng, scene.size, combos[int(rng.integers(len(combos)))], objects)
        if added is not None:
            return replace(scene, objects=tuple(objects + [added]), variant="count_up")
        if len(objects) == 1:
            return replace(scene, variant="count_same")
    del objects[int(rng.integers(len(objects)))]
    return replace(scene, objects=tuple(objects), variant="count_down")


def sample_family(rng: np.random.Generator, size: int, combos: list[tuple[str, str]], family: int,
                  members: int) -> list[Scene]:
    """A base scene and up to 3 variants of it (shape, layout, count), in that order."""
    base = replace(sample_scene(rng, size, combos), family=family)
    scenes = [base]
    makers = (lambda: vary_shape(base, rng, combos), lambda: vary_layout(base, rng),
              lambda: vary_count(base, rng, combos))
    for make in makers[: max(0, members - 1)]:
        scenes.append(replace(make(), family=family))
    return scenes
