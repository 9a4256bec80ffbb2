"""Region-phrase contrastive term: object regions of the patch grid <-> short attribute phrases.

Image <-> caption contrast alone lets colour, count and layout solve the task, and
leaves shape out of the patch features (measured: shape probe at the level of an
untrained encoder, docs/world.md). So, as in region-level CLIP variants, each
object's tokens (from the layer later stages read, pooled to the grid they read)
are averaged, weighted by how much of the object's box each cell holds, and
matched through the text tower against the phrases of every value of each attribute: "a circle" ... "a heart", "a red shape" ...,
"a small shape", "on the left" / "in the center" / "on the right", "at the top" ...
Attributes are contrasted separately, never as (colour, shape) pairs, so that
held-out combinations are made of parts the encoder knows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vinstruct.bootstrap.worlddata import WorldSplit
from vinstruct.world.describe import horizontal, vertical
from vinstruct.world.spec import COLORS, MAX_OBJECTS, SHAPES, SIZES

ATTRIBUTES: dict[str, list[str]] = {
    "shape": list(SHAPES),
    "color": list(COLORS),
    "size": list(SIZES),
    "horizontal": ["left", "center", "right"],
    "vertical": ["top", "middle", "bottom"],
}


@dataclass
class RegionTable:
    """Every object of a split: its image, how much of it each grid cell holds, and its labels."""

    image: torch.Tensor  # [M] image index
    cells: torch.Tensor  # [M, G*G] share of the object's box in each cell of the (pooled) grid; rows sum to 1
    labels: dict[str, torch.Tensor]  # attribute -> [M] class index

    def for_images(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Objects of the batch's images: (row of their image in the batch, cell weights, labels)."""
        size = max(int(self.image.max()) if len(self.image) else 0, int(batch.max())) + 1
        position = torch.full((size,), -1, dtype=torch.long)
        position[batch] = torch.arange(len(batch))
        rows = position[self.image]
        keep = rows >= 0
        return rows[keep], self.cells[keep], {k: v[keep] for k, v in self.labels.items()}


def box_cell_weights(obj, image_size: int, side: int) -> torch.Tensor:
    """[side*side] fraction of the object's box area that falls in each cell of a side x side grid."""
    cell = image_size / side
    edges = torch.arange(side + 1, dtype=torch.float32) * cell
    half = obj.extent / 2

    def overlap(centre: float) -> torch.Tensor:
        return (torch.minimum(edges[1:], torch.tensor(centre + half))
                - torch.maximum(edges[:-1], torch.tensor(centre - half))).clamp(min=0)

    weights = (overlap(obj.cy)[:, None] * overlap(obj.cx)[None, :]).flatten()
    return weights / weights.sum().clamp(min=1e-6)


def region_table(split: WorldSplit, grid_side: int) -> RegionTable:
    """Objects of a split against a grid_side x grid_side feature grid (patches, after pooling)."""
    image, cells = [], []
    labels: dict[str, list[int]] = {name: [] for name in ATTRIBUTES}
    for index, objects in enumerate(split.objects):
        for obj in objects:
            image.append(index)
            cells.append(box_cell_weights(obj, split.image_size, grid_side))
            values = {"shape": obj.shape, "color": obj.color, "size": obj.size,
                      "horizontal": horizontal(obj, split.image_size), "vertical": vertical(obj, split.image_size)}
            for name, value in values.items():
                labels[name].append(ATTRIBUTES[name].index(value))
    return RegionTable(torch.tensor(image, dtype=torch.long),
                       torch.stack(cells) if cells else torch.zeros(0, grid_side * grid_side),
                       {k: torch.tensor(v, dtype=torch.long) for k, v in labels.items()})


def region_features(grid_tokens: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Box-weighted mean of the grid tokens under each object: [B, G*G, D] -> [M, D]."""
    return (weights.unsqueeze(-1) * grid_tokens[rows]).sum(1)


class AttributeHeads(nn.Module):
    """One linear classifier per attribute on box-pooled region features (training only)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, len(values)) for name, values in ATTRIBUTES.items()})
        self.count_norm = nn.LayerNorm(hidden)
        self.count = nn.Linear(hidden, MAX_OBJECTS)

    def forward(self, grid_tokens: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor,
                labels: dict[str, torch.Tensor], counts: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cross-entropy per attribute for the regions (grid_tokens [B, G*G, D], weights [M, G*G]),
        and for the number of objects from the mean of all tokens (counts [B], 0 = one object)."""
        pooled = self.norm(region_features(grid_tokens, rows, weights))
        losses = {name: nn.functional.cross_entropy(head(pooled), labels[name]) for name, head in self.heads.items()}
        losses["count"] = nn.functional.cross_entropy(self.count(self.count_norm(grid_tokens.mean(1))), counts)
        return losses


def count_labels(split: WorldSplit) -> torch.Tensor:
    """Object count per image as a class index (0 = one object)."""
    return torch.tensor([min(len(objects), MAX_OBJECTS) - 1 for objects in split.objects], dtype=torch.long)
