"""Shared by the generate tests: a tiny COCO-format shapes set and a checker of answers against its annotations."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle", "star", "hexagon", "diamond"]
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40),
          "purple": (140, 60, 170), "orange": (240, 140, 30), "pink": (240, 130, 180), "white": (250, 250, 250)}


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=fill)
    else:  # star / hexagon: a polygon around the centre is enough for a fixture
        import math
        points = 10 if shape == "star" else 6
        pts = []
        for k in range(points):
            r = (x2 - x1) / 2 * (0.5 if shape == "star" and k % 2 else 1.0)
            a = 2 * math.pi * k / points - math.pi / 2
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        draw.polygon(pts, fill=fill)


def write_tiny_coco(root: Path, images: int = 8, seed: int = 0, split: str = "train", size: int = 64) -> Path:
    """A COCO set following the world's contract: '<color> <shape>' categories, shape/color/size fields."""
    rng = random.Random(seed)
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories: dict[str, int] = {}
    image_entries, instances, captions = [], [], []
    for image_id in range(1, images + 1):
        img = Image.new("RGB", (size, size), (128, 128, 128))
        draw = ImageDraw.Draw(img)
        objects = []
        cells = rng.sample([(c, r) for c in range(3) for r in range(3)], rng.randint(1, 4))
        for col, row in cells:
            shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
            side = rng.choice([12, 16, 20])
            x = col * size // 3 + rng.randint(0, size // 3 - side)
            y = row * size // 3 + rng.randint(0, size // 3 - side)
            _draw(draw, shape, (x, y, x + side, y + side), COLORS[color])
            name = f"{color} {shape}"
            categories.setdefault(name, len(categories) + 1)
            objects.append((name, shape, color, [x, y, side, side], "small" if side == 12 else "large" if side == 20 else "medium"))
        file_name = f"{image_id:06d}.png"
        img.save(image_dir / file_name)
        image_entries.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for name, shape, color, bbox, size_word in objects:
            instances.append({"id": len(instances) + 1, "image_id": image_id, "category_id": categories[name],
                              "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0,
                              "shape": shape, "color": color, "size": size_word})
        names = [o[0] for o in objects]
        texts = [f"A {names[0]} on a gray background.", f"{len(objects)} shapes on a gray background.",
                 f"A picture with {' and '.join('a ' + n for n in names)}.", f"Simple shapes, including a {names[-1]}.",
                 "Geometric shapes on a plain gray background."]
        for text in texts:
            captions.append({"id": len(captions) + 1, "image_id": image_id, "caption": text})
    cats = [{"id": i, "name": n, "supercategory": "shape"} for n, i in categories.items()]
    (root / "annotations" / f"instances_{split}.json").write_text(
        json.dumps({"images": image_entries, "annotations": instances, "categories": cats}))
    (root / "annotations" / f"captions_{split}.json").write_text(
        json.dumps({"images": image_entries, "annotations": captions}))
    return root


# ---- checking generated answers against the scene's ground truth (the COCO annotations) -------------------
def ground_truth(coco_dir: Path, split: str = "train") -> dict[str, list[dict]]:
    """image file name -> objects with shape, color and box centre (from instances JSON, not from symbolic text)."""
    data = json.loads((coco_dir / "annotations" / f"instances_{split}.json").read_text())
    names = {img["id"]: img for img in data["images"]}
    scenes: dict[str, list[dict]] = {img["file_name"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        img = names[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        scenes[img["file_name"]].append({"shape": ann["shape"], "color": ann["color"],
                                         "cx": (x + w / 2) / img["width"], "cy": (y + h / 2) / img["height"]})
    return scenes


WORDS = {"a": 1, "one": 1, "two": 2, "three": 3, "four": 4}


# Every shape and colour the checker knows: the stand-in's and the world's.
KNOWN_SHAPES = sorted(set(SHAPES) | {"cross", "heart"})
KNOWN_COLORS = sorted(set(COLORS) | {"black"})


def _first(pattern: str, text: str) -> str | None:
    match = re.search(pattern, text.lower())
    return match.group(0) if match else None


def _target(words: str) -> tuple[str | None, str | None]:
    color = next((c for c in KNOWN_COLORS if re.search(rf"\b{c}\b", words)), None)
    shape = next((s for s in KNOWN_SHAPES if re.search(rf"\b{s}(?:e?s)?\b", words)), None)
    return color, shape


def check_answer(question: str, answer: str, objects: list[dict]) -> str | None:
    """The kind of a checked question ('count', 'color', ...) after asserting its answer; None if not a checked kind."""
    q = question.replace("<image>", "").strip().lower()
    pick = lambda color, shape: [o for o in objects if color in (None, o["color"]) and shape in (None, o["shape"])]  # noqa: E731
    if match := re.match(r"if all the (\w+) shapes were removed, how many shapes would remain", q):
        assert _first(r"\d+(?= shapes? would remain)", answer) == str(len(objects) - len(pick(match.group(1), None)))
        return "remove"
    if re.match(r"(describe|give a detailed|what is in this image\? please describe|can you describe|walk me|write a "
                r"detailed|tell me about|explain what|please give|what does this image contain|look at the image)", q):
        number = (_first(r"\b(a|one|two|three|four|\d+)(?= shapes?\b)", answer) or "").strip()
        assert WORDS.get(number, number) in (len(objects), str(len(objects))), (answer, objects)
        return "detail_count"
    if match := re.match(r"(?:how many|can you count the) (.+?)(?: are| can| do| in)", q):
        color, shape = _target(match.group(1))
        assert _first(r"\d+", answer) == str(len(pick(color, shape))), (question, answer, objects)
        return "count"
    if match := re.match(r"what (?:color is|is the color of|color does) the (\w+)\??$", q):
        group = pick(None, match.group(1))
        assert len(group) == 1, (question, objects)
        assert _first("|".join(KNOWN_COLORS), answer) == group[0]["color"], (question, answer, objects)
        return "color"
    if match := re.match(r"(?:what shape is|what is the shape of|which shape is) the (\w+) (?:object|shape)\??$", q):
        group = pick(match.group(1), None)
        assert len(group) == 1, (question, objects)
        assert _first("|".join(KNOWN_SHAPES), answer) == group[0]["shape"], (question, answer, objects)
        return "shape"
    if match := re.match(r"(?:is the (.+?) on the (?:left|right)|which side of the image is the (.+?) on)", q):
        group = pick(*_target(match.group(1) or match.group(2)))
        assert len(group) == 1, (question, objects)
        assert _first("left|right", answer) == ("left" if group[0]["cx"] < 0.5 else "right"), (question, answer, objects)
        return "side"
    if match := re.match(rf"(?:is there|do you see|can you spot) an? ({'|'.join(KNOWN_COLORS)}) ({'|'.join(KNOWN_SHAPES)})(?: in .*)?\??$", q):
        present = bool(pick(match.group(1), match.group(2)))
        assert answer.startswith("Yes" if present else "No"), (question, answer, objects)
        return "exists"
    return None
