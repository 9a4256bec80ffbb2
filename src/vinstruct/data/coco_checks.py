"""Checks of COCO image entries and object annotations, before anything is computed from them.

An image needs a width and a height of at least one pixel. An object box is COCO's
[x, y, width, height] in pixels: four finite numbers, width and height above zero, inside the
image. Boxes in real COCO files can reach a little past an edge (they are rounded from
polygons); up to EDGE_TOLERANCE_PX past it a box is clipped to the image, further out it is
refused. A refused entry becomes an `InputProblem`: skipped and counted, or the reason a run stops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EDGE_TOLERANCE_PX = 1.0

# reason codes (stable: they are the keys of the counts in generation stats)
UNKNOWN_IMAGE = "unknown_image"
UNKNOWN_CATEGORY = "unknown_category"
BBOX_MISSING = "bbox_missing"
BBOX_MALFORMED = "bbox_malformed"
BBOX_NOT_FINITE = "bbox_not_finite"
BBOX_EMPTY = "bbox_empty"
BBOX_OUTSIDE = "bbox_outside_image"
IMAGE_SIZE = "image_size"
IMAGE_FILE_MISSING = "image_file_missing"


@dataclass(frozen=True)
class InputProblem:
    """One annotation or image entry that cannot be used, and why."""

    kind: str  # "annotation" or "image"
    id: object  # the entry's id, or "#<position in its list>" when it has none
    image_id: object
    reason: str  # one of the codes above
    detail: str  # the same for a person, with the offending value

    def describe(self) -> str:
        if self.kind == "image":
            return f"image {self.id}: {self.detail}"
        return f"annotation {self.id} (image {self.image_id}): {self.detail}"

    def as_dict(self) -> dict:
        return {"kind": self.kind, "id": self.id, "image_id": self.image_id, "reason": self.reason,
                "detail": self.detail}


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def as_id(value):
    """A usable id (int or str, as COCO files hold them), or None."""
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer too large for a float
        return False


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def image_size_problem(entry: dict) -> str | None:
    """Why an image entry's width/height cannot be used, or None."""
    for key in ("width", "height"):
        value = entry.get(key)
        if not (is_number(value) and _finite(value) and value >= 1):
            return f"{key} is {_short(value)}, expected a number of pixels (1 or more)"
    return None


def check_bbox(bbox, width: float, height: float) -> tuple[list[float] | None, tuple[str, str] | None]:
    """(box [x, y, w, h] clipped to the image, None) or (None, (reason code, detail))."""
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
        return None, (BBOX_MALFORMED, f"bbox {_short(bbox)} is not a list of 4 numbers [x, y, width, height]")
    if not all(_finite(v) for v in bbox):
        return None, (BBOX_NOT_FINITE, f"bbox {_short(bbox)} holds a value that is not a finite number")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return None, (BBOX_EMPTY, f"bbox {_short(bbox)} has width {w:g} and height {h:g}; both must be above 0")
    tol = EDGE_TOLERANCE_PX
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        return None, (BBOX_OUTSIDE, f"bbox {_short(bbox)} reaches outside the {width:g}x{height:g} image")
    if x >= 0 and y >= 0 and x + w <= width and y + h <= height:
        return list(bbox), None
    x1, y1 = max(x, 0.0), max(y, 0.0)
    x2, y2 = min(x + w, float(width)), min(y + h, float(height))
    if x2 <= x1 or y2 <= y1:  # a sliver that lay only in the tolerance band
        return None, (BBOX_OUTSIDE, f"bbox {_short(bbox)} lies outside the {width:g}x{height:g} image")
    return [x1, y1, x2 - x1, y2 - y1], None
