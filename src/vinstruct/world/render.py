"""Drawing scenes to pixels: antialiased polygons on muted, noisy backgrounds.

Every shape is a polygon, so the same vertices give the COCO segmentation.
Each object's coverage mask is drawn at 4x and averaged down; its box is the
tight box of the pixels it touches, so boxes match the rendered pixels exactly.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from vinstruct.world.scenes import Background, Scene, SceneObject
from vinstruct.world.spec import COLORS

SUPERSAMPLE = 4


# ---- shape outlines in a unit square centred on 0 (y down) ---------------------------------------
def _regular(n: int, rotation: float, radius: float = 0.5) -> list[tuple[float, float]]:
    return [(radius * math.cos(rotation + 2 * math.pi * k / n), radius * math.sin(rotation + 2 * math.pi * k / n))
            for k in range(n)]


def _star() -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        radius = 0.5 if k % 2 == 0 else 0.21
        angle = -math.pi / 2 + math.pi * k / 5
        points.append((radius * math.cos(angle), radius * math.sin(angle) + 0.04))
    return points


def _cross() -> list[tuple[float, float]]:
    a, b = 0.5, 0.17
    return [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]


def _heart() -> list[tuple[float, float]]:
    points = []
    for k in range(48):
        t = 2 * math.pi * k / 48
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        points.append((x / 34, -y / 34 - 0.03))
    return points


def _triangle() -> list[tuple[float, float]]:
    return [(0.0, -0.5), (0.5, 0.45), (-0.5, 0.45)]


@lru_cache(maxsize=None)
def unit_outline(shape: str) -> tuple[tuple[float, float], ...]:
    outlines = {
        "circle": lambda: _regular(40, 0.0),
        "square": lambda: [(-0.42, -0.42), (0.42, -0.42), (0.42, 0.42), (-0.42, 0.42)],
        "triangle": _triangle,
        "diamond": lambda: [(0.0, -0.5), (0.4, 0.0), (0.0, 0.5), (-0.4, 0.0)],
        "star": _star,
        "cross": _cross,
        "heart": _heart,
    }
    return tuple(outlines[shape]())


def outline(obj: SceneObject) -> list[tuple[float, float]]:
    """The object's polygon in image pixel coordinates."""
    return [(obj.cx + x * obj.extent, obj.cy + y * obj.extent) for x, y in unit_outline(obj.shape)]


# ---- masks, backgrounds, composition ----------------------------------------------------------------
def coverage_mask(obj: SceneObject, size: int) -> np.ndarray:
    """Fraction of each pixel the object covers, float32 [size, size] in 0-1."""
    big = Image.new("L", (size * SUPERSAMPLE, size * SUPERSAMPLE), 0)
    points = [(x * SUPERSAMPLE, y * SUPERSAMPLE) for x, y in outline(obj)]
    ImageDraw.Draw(big).polygon(points, fill=255)
    small = np.asarray(big, dtype=np.float32).reshape(size, SUPERSAMPLE, size, SUPERSAMPLE)
    return small.mean(axis=(1, 3)) / 255.0


def mask_box(mask: np.ndarray) -> list[int]:
    """Tight COCO box [x, y, w, h] (pixels) around the pixels the mask touches."""
    ys, xs = np.nonzero(mask > 0)
    if len(xs) == 0:
        return [0, 0, 0, 0]
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


def render_background(background: Background, size: int, rng: np.random.Generator) -> np.ndarray:
    base = np.asarray(background.color, dtype=np.float32)
    canvas = np.broadcast_to(base, (size, size, 3)).copy()
    if background.kind == "gradient":
        ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
        ramp = ramp[None, :, None] if background.direction == 0 else ramp[:, None, None]
        canvas = canvas + ramp * (np.asarray(background.color2, dtype=np.float32) - base)
    elif background.kind == "texture":
        # Smooth blotches: coarse noise upsampled, like an out-of-focus surface.
        tex_rng = np.random.default_rng(background.texture_seed)
        coarse = tex_rng.normal(0.0, 14.0, size=(6, 6, 3)).astype(np.float32)
        blotches = np.asarray(
            [np.asarray(Image.fromarray(coarse[..., c]).resize((size, size), Image.BICUBIC)) for c in range(3)]
        ).transpose(1, 2, 0)
        canvas = canvas + blotches
    return canvas


def render_scene(scene: Scene, rng: np.random.Generator,
                 skip: int | None = None) -> tuple[Image.Image, list[np.ndarray]]:
    """The scene as an RGB image and each object's coverage mask (in scene order).

    skip: leave out the object at this index (used to check boxes against pixels).
    """
    size = scene.size
    canvas = render_background(scene.background, size, rng)
    masks = []
    for index, obj in enumerate(scene.objects):
        mask = coverage_mask(obj, size)
        masks.append(mask)
        if index == skip:
            continue
        color = np.clip(np.asarray(COLORS[obj.color], dtype=np.float32) + np.asarray(obj.tint), 0, 255)
        alpha = mask[..., None]
        canvas = canvas * (1.0 - alpha) + color * alpha
    if scene.background.noise > 0:
        canvas = canvas + rng.normal(0.0, scene.background.noise, size=canvas.shape).astype(np.float32)
    pixels = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB"), masks
