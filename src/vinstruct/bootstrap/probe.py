"""Linear probes: do the frozen vision features carry what later stages must read?

Features are taken exactly as the LLaVA model takes them (layer -2, patch tokens,
average-pooled to the grid later stages use). A logistic regression is fitted on
train-split images and scored on val images:
  shape, color, size      from the object's features: the mean of the grid cells its box
                          covers, weighted by how much of the box each holds (what an LLM
                          attending evenly over the object's tokens could read)
  horizontal, vertical    the object's third of the image (left/center/right, top/middle/bottom),
                          from those same features: the features themselves must say where they are
  count                   number of objects, from the mean of all tokens
A probe near chance means no projector or LLM trained later can recover that attribute.
"""

from __future__ import annotations

import torch

from vinstruct.bootstrap.regions import ATTRIBUTES, region_features, region_table
from vinstruct.bootstrap.worlddata import WorldSplit
from vinstruct.model.vision import has_cls_token, select_features
from vinstruct.world.spec import MAX_OBJECTS

OBJECT_ATTRIBUTES = ATTRIBUTES


@torch.no_grad()
def grid_features(vision_model, pixels: torch.Tensor, layer: int = -2, pool: int = 2, batch: int = 256) -> torch.Tensor:
    """[N, side, side, D] features as LLaVA would see them."""
    vision_model.eval()
    rows = []
    for start in range(0, len(pixels), batch):
        hidden = vision_model(pixel_values=pixels[start:start + batch], output_hidden_states=True).hidden_states[layer]
        rows.append(select_features(hidden, "patch", has_cls_token(vision_model.config), pool))
    feats = torch.cat(rows)
    side = int(round(feats.shape[1] ** 0.5))
    return feats.reshape(len(feats), side, side, -1)


def object_rows(split: WorldSplit, grid: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One feature row per object (box-weighted mean of the grid cells it covers) and its labels."""
    table = region_table(split, grid.shape[1])
    return region_features(grid.flatten(1, 2), table.image, table.cells), table.labels


def image_rows(split: WorldSplit, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled features and object counts (classes 0.. for 1..MAX_OBJECTS)."""
    counts = torch.tensor([min(len(objs), MAX_OBJECTS) - 1 for objs in split.objects])
    return grid.flatten(1, 2).mean(1), counts


def fit_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
              classes: int, l2: float = 1e-3, iterations: int = 100) -> float:
    """Multinomial logistic regression (L-BFGS, standardised features); test accuracy in percent."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x, xt = (train_x - mean) / std, (test_x - mean) / std
    linear = torch.nn.Linear(x.shape[1], classes)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x), train_y) + l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return round(100 * float((linear(xt).argmax(1) == test_y).float().mean()), 1)


def run_probes(vision_model, train: WorldSplit, train_pixels: torch.Tensor, val: WorldSplit,
               val_pixels: torch.Tensor, pool: int = 2, layer: int = -2) -> dict[str, float]:
    """Probe accuracy (percent, on val) for every attribute."""
    train_grid = grid_features(vision_model, train_pixels, layer, pool)
    val_grid = grid_features(vision_model, val_pixels, layer, pool)
    tx, ty = object_rows(train, train_grid)
    vx, vy = object_rows(val, val_grid)
    result = {name: fit_probe(tx, ty[name], vx, vy[name], len(values)) for name, values in OBJECT_ATTRIBUTES.items()}
    cx, cy = image_rows(train, train_grid)
    vcx, vcy = image_rows(val, val_grid)
    result["count"] = fit_probe(cx, cy, vcx, vcy, MAX_OBJECTS)
    return result


def majority_baseline(train: WorldSplit, val: WorldSplit) -> dict[str, float]:
    """Accuracy of always answering the most common train label (what 'no information' scores)."""
    dummy_t = torch.zeros(len(train), 1, 1, 1)
    dummy_v = torch.zeros(len(val), 1, 1, 1)
    _, ty = object_rows(train, dummy_t)
    _, vy = object_rows(val, dummy_v)
    out = {}
    for name in OBJECT_ATTRIBUTES:
        top = int(torch.bincount(ty[name]).argmax())
        out[name] = round(100 * float((vy[name] == top).float().mean()), 1)
    _, tc = image_rows(train, dummy_t)
    _, vc = image_rows(val, dummy_v)
    out["count"] = round(100 * float((vc == int(torch.bincount(tc).argmax())).float().mean()), 1)
    return out
