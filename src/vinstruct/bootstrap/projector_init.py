"""Projector warm start for the embedded default: image regions -> the LM's words for what they hold.

The paper aligns the projector (stage 1) with hundreds of thousands of caption pairs. On two CPU
cores the demo affords about a hundred stage-1 steps through a 135M-parameter LM, and that
many leave the projected tokens far from anything the LM can read (measured: caption loss with
the true image barely below the loss with another image's). The shapes world knows what every
region of every training image holds, so the projector can start where stage 1 is meant to
lead: for each cell of the (pooled) patch grid, the sum of the LM's input embeddings of the
words that name the object covering it -- " red" + " star", plus half of " left"/" top"-style
position words -- or of " background" for an empty cell. A small regression on frozen vision
features (no LM forward, seconds) fits the projector to those targets; stage 1 then continues
from it as usual. Only the train split's annotations are read.

With two projector tokens per feature (`projector_tokens` 2) a cell's two tokens are fitted to the
colour word and the shape word apart (" red", " star"; " background" twice for an empty cell): the LM
then reads a region as it reads "red star" in a sentence, which it learns to answer questions from far
faster than from one token holding both words (docs/results/demo_quality.md).

This is an addition of the embedded default, not part of the paper's method: the demo reports an
ablation without it, and a real run (CLIP + Vicuna on GPUs) has no need of it.
"""

from __future__ import annotations

import os
import time

import torch

from vinstruct.data.coco import CocoSet
from vinstruct.errors import VinstructError
from vinstruct.world.describe import ObjectView, horizontal, vertical

BACKGROUND_WORD = "background"
MIN_COVER = 0.15  # a cell names the object covering most of it, if that object covers at least this share
POSITION_WEIGHT = 0.5


def _word_embedding(model, word: str) -> torch.Tensor:
    ids = model.tokenizer(" " + word, add_special_tokens=False).input_ids
    return model.llm.get_input_embeddings().weight[ids].sum(0).detach()


def cell_targets(model, image, side: int, words: dict[str, torch.Tensor], tokens: int = 1) -> torch.Tensor:
    """[side*side, tokens*hidden] target embedding of each grid cell of one image (row-major, like the patches):
    one token naming colour, shape and (at half weight) place, or two tokens, colour then shape."""
    if tokens not in (1, 2):
        raise VinstructError(f"projector warm start: 1 or 2 projector tokens per feature, got {tokens}")
    def word(name: str) -> torch.Tensor:
        if name not in words:
            words[name] = _word_embedding(model, name)
        return words[name]

    cell = image.width / side
    edges = torch.arange(side + 1, dtype=torch.float32) * cell
    targets = word(BACKGROUND_WORD).repeat(side * side, tokens)
    best = torch.zeros(side * side)
    for obj in image.objects:
        view = ObjectView.from_coco_object(obj)
        x, y, w, h = obj.bbox
        # Share of each cell that the object's box covers.
        cover_x = (torch.minimum(edges[1:], torch.tensor(x + w)) - torch.maximum(edges[:-1], torch.tensor(x))).clamp(min=0)
        cover_y = (torch.minimum(edges[1:], torch.tensor(y + h)) - torch.maximum(edges[:-1], torch.tensor(y))).clamp(min=0)
        cover = (cover_y[:, None] * cover_x[None, :]).flatten() / (cell * cell)
        if tokens == 2:
            vector = torch.cat([word(view.color), word(view.shape)])
        else:
            vector = word(view.color) + word(view.shape) + POSITION_WEIGHT * (
                word(horizontal(view, image.width)) + word(vertical(view, image.width)))
        wins = (cover > best) & (cover >= MIN_COVER)
        targets[wins] = vector
        best = torch.maximum(best, cover)
    return targets


def warm_start_projector(model, world_dir: str | os.PathLike, split: str = "train", *, steps: int = 1500,
                         batch_size: int = 1024, lr: float = 1e-3, seed: int = 0, say=print) -> dict:
    """Fit `model.projector` (re-initialised) to the word targets of every region; returns figures."""
    started = time.perf_counter()
    coco = CocoSet.load(world_dir, split)
    images = [image for image in coco.images if image.objects]
    if not images:
        raise VinstructError(f"{world_dir}: split {split!r} has no annotated objects to warm the projector on")
    torch.manual_seed(seed)
    model.eval()
    features, targets, words = [], [], {}
    with torch.no_grad():
        for start in range(0, len(images), 128):
            batch = images[start:start + 128]
            grid = model.vision_features(model.image_processor.load([image.path for image in batch]))
            side = int(round(grid.shape[1] ** 0.5))
            if side * side != grid.shape[1]:
                raise VinstructError(f"projector warm start needs a square patch grid, got {grid.shape[1]} tokens")
            features.append(grid.reshape(-1, grid.shape[-1]))
            targets += [cell_targets(model, image, side, words, model.config.projector_tokens) for image in batch]
    features, targets = torch.cat(features), torch.cat(targets)
    projector = model.projector
    for module in projector.modules():
        if isinstance(module, torch.nn.Linear):
            module.reset_parameters()
    projector.requires_grad_(True)
    optimizer = torch.optim.Adam(projector.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(0, len(features), (batch_size,), generator=generator)
        loss = torch.nn.functional.mse_loss(projector(features[index]), targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    projector.requires_grad_(False)
    with torch.no_grad():
        fitted = projector(features[:8192])
        cosine = torch.nn.functional.cosine_similarity(fitted, targets[:8192]).mean().item()
    seconds = time.perf_counter() - started
    say(f"projector warm start: {len(images)} images, {len(features)} region tokens, {steps} steps, "
        f"cosine to the word targets {cosine:.3f}, {seconds:.0f} s")
    return {"images": len(images), "tokens": len(features), "projector_tokens": model.config.projector_tokens,
            "steps": steps, "final_mse": loss.item(),
            "cosine": round(cosine, 4), "seconds": round(seconds, 1)}
