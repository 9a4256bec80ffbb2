"""Shared by the generate tests: a checker of answers against a world's annotations."""

from __future__ import annotations

import json
import re
from pathlib import Path

from vinstruct.world.spec import COLORS, SHAPES

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


# Every shape and colour the checker knows: the world's.
KNOWN_SHAPES = sorted(SHAPES)
KNOWN_COLORS = sorted(COLORS)


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
