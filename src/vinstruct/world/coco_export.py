"""Scenes -> COCO records (images, instances with boxes and polygons, captions).

Category names are "<colour> <shape>" ("red circle"); each instance also carries
"shape", "color" and "size" fields, which `vinstruct.data.coco.CocoSet` keeps as
attributes. Train images also carry "family" and "variant" (see scenes.py).
"""

from __future__ import annotations

import numpy as np

from vinstruct.world.render import mask_box, outline
from vinstruct.world.scenes import Scene
from vinstruct.world.spec import categories, category_name

INFO = {"description": "vinstruct shapes world (procedurally generated)", "contributor": "vinstruct"}


class CocoBuilder:
    """Accumulates one split's images, instances and captions in COCO's layout."""

    def __init__(self):
        self.category_ids = {c["name"]: c["id"] for c in categories()}
        self.images: list[dict] = []
        self.instances: list[dict] = []
        self.captions: list[dict] = []

    def add(self, image_id: int, file_name: str, scene: Scene, masks: list[np.ndarray], captions: list[str],
            next_ann_id: int, next_caption_id: int) -> tuple[int, int]:
        """Record one rendered image; returns the next free annotation and caption ids."""
        entry = {"id": image_id, "file_name": file_name, "width": scene.size, "height": scene.size}
        if scene.family >= 0:
            entry.update(family=scene.family, variant=scene.variant)
        self.images.append(entry)
        for obj, mask in zip(scene.objects, masks):
            polygon = [round(v, 2) for point in outline(obj) for v in point]
            self.instances.append({
                "id": next_ann_id,
                "image_id": image_id,
                "category_id": self.category_ids[category_name(obj.shape, obj.color)],
                "bbox": mask_box(mask),
                "area": round(float(mask.sum()), 2),
                "iscrowd": 0,
                "segmentation": [polygon],
                "shape": obj.shape,
                "color": obj.color,
                "size": obj.size,
            })
            next_ann_id += 1
        for caption in captions:
            self.captions.append({"id": next_caption_id, "image_id": image_id, "caption": caption})
            next_caption_id += 1
        return next_ann_id, next_caption_id

    def instances_json(self) -> dict:
        return {"info": INFO, "licenses": [], "images": self.images, "annotations": self.instances,
                "categories": categories()}

    def captions_json(self) -> dict:
        return {"info": INFO, "licenses": [], "images": self.images, "annotations": self.captions}
