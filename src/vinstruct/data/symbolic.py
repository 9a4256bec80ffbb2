"""The symbolic representation of an image that a text-only teacher reads.

  <caption 1>
  <caption 2>
  ...
  <blank line>
  <category>: [x1, y1, x2, y2]       (normalised to 0-1, at most 3 decimals)
  ...

Captions come first, one per line; boxes follow after one blank line (omitted
when boxes are not requested). `parse_symbolic` reads the text back, so that the
scripted teacher and judge can work from exactly what a hosted teacher would see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vinstruct.data.coco import CocoImage

_BOX_LINE = re.compile(
    r"^\s*(?P<cat>[^:\n]+?)\s*:\s*\[\s*(?P<x1>-?\d+(?:\.\d+)?)\s*,\s*(?P<y1>-?\d+(?:\.\d+)?)\s*,"
    r"\s*(?P<x2>-?\d+(?:\.\d+)?)\s*,\s*(?P<y2>-?\d+(?:\.\d+)?)\s*\]\s*$"
)


@dataclass
class SymbolicScene:
    captions: list[str] = field(default_factory=list)
    boxes: list[tuple[str, list[float]]] = field(default_factory=list)


def normalize_box(bbox_xywh: list[float], width: int, height: int, decimals: int = 3) -> list[float]:
    """COCO pixel [x, y, w, h] -> [x1, y1, x2, y2] in 0-1, rounded.

    Expects a box that passed `coco_checks.check_bbox` (CocoSet.load checks every box); anything
    else is a programming error, refused here rather than turned into NaN or a division by zero.
    """
    if len(bbox_xywh) != 4 or width <= 0 or height <= 0:
        raise ValueError(f"normalize_box needs [x, y, w, h] and a positive image size, got {bbox_xywh!r} "
                         f"in {width}x{height}")
    x, y, w, h = bbox_xywh
    coords = [x / width, y / height, (x + w) / width, (y + h) / height]
    return [round(min(max(c, 0.0), 1.0), decimals) for c in coords]


def format_number(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def render_symbolic(captions: list[str], boxes: list[tuple[str, list[float]]] | None = None) -> str:
    lines = [c.strip() for c in captions if c.strip()]
    if boxes:
        lines.append("")
        lines += [f"{cat}: [{', '.join(format_number(v) for v in coords)}]" for cat, coords in boxes]
    return "\n".join(lines)


def symbolic_for_image(image: CocoImage, with_boxes: bool = True, decimals: int = 3) -> str:
    boxes = None
    if with_boxes:
        boxes = [(o.category, normalize_box(o.bbox, image.width, image.height, decimals)) for o in image.objects]
    return render_symbolic(image.captions, boxes)


def parse_symbolic(text: str) -> SymbolicScene:
    """Read captions and boxes back from symbolic text (lenient about spacing)."""
    scene = SymbolicScene()
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _BOX_LINE.match(line)
        if match:
            coords = [float(match.group(k)) for k in ("x1", "y1", "x2", "y2")]
            scene.boxes.append((match.group("cat").strip(), coords))
        else:
            scene.captions.append(line.strip())
    return scene
