"""A CLIP-style dual encoder trained from scratch on the world's images and captions.

transformers' own `CLIPModel` with the standard symmetric contrastive loss. Two
choices make it learn what later stages need (see docs/world.md, design notes):
- batches are made of whole train *families* (a scene and variants that differ
  in one object's shape, in layout, or in count), so the contrastive task can
  only be solved by seeing shape, position and count, not colour alone;
- captions are the two complete ones (every object named, with its place).
Only the vision half is kept, saved as a standard `CLIPVisionModel` directory.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import CLIPConfig, CLIPModel, CLIPVisionModel

from vinstruct.bootstrap.regions import AttributeHeads, count_labels, region_table
from vinstruct.bootstrap.schedule import adamw, warmup_cosine
from vinstruct.bootstrap.worlddata import WorldSplit
from vinstruct.model.vision import select_features
from vinstruct.quiet import quiet_transformers

with quiet_transformers():  # without torchvision, importing it notes the PIL fallback we want anyway
    from transformers import CLIPImageProcessor


@dataclass
class ClipSettings:
    patch_size: int = 8
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    text_hidden: int = 128
    text_layers: int = 2
    embed_dim: int = 128
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 0.1
    complete_captions: tuple[int, ...] = (0, 1)  # which of each image's captions to train on
    sincos_positions: bool = True  # start the position embeddings from 2-D sine-cosine codes
    region_weight: float = 1.0  # weight of the region attribute term (regions.py); 0 = captions only
    feature_layer: int = -2  # the layer whose patch tokens the region term trains (what LLaVA reads)
    shape_weight: float = 3.0  # extra weight of shape in the region term (the slowest attribute to learn)
    region_pool: int = 2  # ... pooled as later stages are advised to pool them (16 tokens at 64 px, patch 8)


def make_image_processor(image_size: int) -> CLIPImageProcessor:
    with quiet_transformers():
        return CLIPImageProcessor(size={"shortest_edge": image_size},
                                  crop_size={"height": image_size, "width": image_size})


def build_clip(tokenizer, image_size: int, settings: ClipSettings, max_text_len: int) -> CLIPModel:
    """A fresh CLIPModel; its text side reads our BPE ids plus one end-of-text id of its own.

    CLIP pools the text at the end-of-text token. Our tokenizer's EOS has id 2,
    which transformers treats as an old-config marker (it then pools at the
    largest id instead), so the text tower gets its own end token: id len(tokenizer).
    """
    end_id = len(tokenizer)
    text = dict(vocab_size=end_id + 1, hidden_size=settings.text_hidden, intermediate_size=4 * settings.text_hidden,
                num_hidden_layers=settings.text_layers, num_attention_heads=max(1, settings.text_hidden // 32),
                max_position_embeddings=max_text_len, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=end_id)
    vision = dict(image_size=image_size, patch_size=settings.patch_size, hidden_size=settings.hidden,
                  intermediate_size=4 * settings.hidden, num_hidden_layers=settings.layers,
                  num_attention_heads=settings.heads)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=settings.embed_dim)
    model = CLIPModel(config)
    if settings.sincos_positions:
        side = image_size // settings.patch_size
        with torch.no_grad():
            model.vision_model.embeddings.position_embedding.weight[1:] = sincos_grid(side, settings.hidden)
    return model


def sincos_grid(side: int, dim: int) -> torch.Tensor:
    """2-D sine-cosine position codes [side*side, dim] (as in MAE), row-major like CLIP's patches.

    Used as the *initial* value of the learned position embeddings: each patch token
    then starts out saying where it is, which the probes showed random (0.02-scale)
    position embeddings do not convey to the features later stages read.
    """
    quarter = dim // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / max(1, quarter)))
    coords = torch.arange(side, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    parts = []
    for axis in (cols.flatten(), rows.flatten()):
        angles = axis[:, None] * freqs[None, :]
        parts += [angles.sin(), angles.cos()]
    grid = torch.cat(parts, dim=1)
    return torch.nn.functional.pad(grid, (0, dim - grid.shape[1]))


def encode_texts(tokenizer, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (BOS ... end) right-padded to max_len, and the attention mask."""
    end_id = len(tokenizer)
    ids = torch.full((len(texts), max_len), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(texts), max_len), dtype=torch.long)
    for row, encoded in enumerate(tokenizer(texts)["input_ids"]):
        tokens = encoded[: max_len - 1] + [end_id]
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    return ids, mask


def text_length(tokenizer, texts: list[str], cap: int = 77) -> int:
    return min(cap, max(len(ids) for ids in tokenizer(texts)["input_ids"]) + 1)


def family_batches(families: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch of batches that keep each family together (images without a family stand alone)."""
    groups: dict[int, list[int]] = {}
    for index, family in enumerate(families):
        groups.setdefault(family if family >= 0 else -1 - index, []).append(index)
    order = torch.randperm(len(groups), generator=generator).tolist()
    members = list(groups.values())
    batches, current = [], []
    for g in order:
        if current and len(current) + len(members[g]) > batch_size:
            batches.append(current)
            current = []
        current = current + members[g]
    if current:
        batches.append(current)
    return batches


def _normalized(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def contrastive_loss(images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over the batch's image-text similarities."""
    logits = scale * images @ texts.T
    targets = torch.arange(len(images))
    return (torch.nn.functional.cross_entropy(logits, targets) + torch.nn.functional.cross_entropy(logits.T, targets)) / 2


def train_clip(model: CLIPModel, pixels: torch.Tensor, split: WorldSplit, tokenizer, settings: ClipSettings,
               max_text_len: int, seed: int, progress: bool = True) -> list[dict]:
    """Contrastive training plus the region attribute term; returns the loss log (one row per step)."""
    captions = [[caps[i] for i in settings.complete_captions if i < len(caps)] or caps[:1] for caps in split.captions]
    ids, mask = encode_texts(tokenizer, [c for caps in captions for c in caps], max_text_len)
    first = torch.tensor([0] + [len(c) for c in captions]).cumsum(0)[:-1]
    per_image = torch.tensor([len(c) for c in captions])
    grid_side = -(-(split.image_size // settings.patch_size) // settings.region_pool)
    table = region_table(split, grid_side)
    head = AttributeHeads(settings.hidden)
    counts = count_labels(split)
    generator = torch.Generator().manual_seed(seed)
    trained = torch.nn.ModuleList([model, head])
    optimizer = adamw(trained, settings.lr, settings.weight_decay)
    scheduler = warmup_cosine(optimizer, settings.warmup, settings.steps)
    trained.train()
    log, batches, start = [], [], time.time()
    bar = tqdm(range(settings.steps), desc="clip", unit="step", disable=not progress)
    for step in bar:
        if not batches:
            batches = family_batches(split.families, settings.batch_size, generator)
        index = torch.tensor(batches.pop(0))
        choice = first[index] + (torch.rand(len(index), generator=generator) * per_image[index]).long()
        vision = model.vision_model(pixel_values=pixels[index], output_hidden_states=True)
        images = _normalized(model.visual_projection(vision.pooler_output))
        texts = _normalized(model.text_projection(
            model.text_model(input_ids=ids[choice], attention_mask=mask[choice]).pooler_output))
        scale = model.logit_scale.exp()
        caption_loss = contrastive_loss(images, texts, scale)
        loss = caption_loss
        region_value, region_parts = 0.0, {}
        if settings.region_weight > 0:
            rows, weights, labels = table.for_images(index)
            tokens = select_features(vision.hidden_states[settings.feature_layer], "patch", True, settings.region_pool)
            parts = head(tokens, rows, weights, labels, counts[index])
            region = sum(settings.shape_weight * v if k == "shape" else v for k, v in parts.items())
            loss = loss + settings.region_weight * region
            region_value = float(region.detach())
            region_parts = {k: round(float(v.detach()), 3) for k, v in parts.items()}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():  # CLIP caps the temperature at 100
            model.logit_scale.clamp_(0, 4.6052)
        value = float(caption_loss.detach())
        log.append({"step": step + 1, "loss": round(value, 4), "region_loss": round(region_value, 4),
                    "region": region_parts, "lr": scheduler.get_last_lr()[0],
                    "seconds": round(time.time() - start, 2)})
        bar.set_postfix(loss=f"{value:.3f}", region=f"{region_value:.3f}")
    model.eval()
    return log


@torch.no_grad()
def image_embeddings(model: CLIPModel, pixels: torch.Tensor, batch: int = 256) -> torch.Tensor:
    rows = [model.visual_projection(model.vision_model(pixel_values=pixels[i:i + batch]).pooler_output)
            for i in range(0, len(pixels), batch)]
    return torch.nn.functional.normalize(torch.cat(rows), dim=-1)


@torch.no_grad()
def text_embeddings(model: CLIPModel, ids: torch.Tensor, mask: torch.Tensor, batch: int = 512) -> torch.Tensor:
    rows = [model.text_projection(model.text_model(input_ids=ids[i:i + batch], attention_mask=mask[i:i + batch])
                                  .pooler_output) for i in range(0, len(ids), batch)]
    return torch.nn.functional.normalize(torch.cat(rows), dim=-1)


@torch.no_grad()
def retrieval(model: CLIPModel, pixels: torch.Tensor, captions: list[str], tokenizer, max_text_len: int,
              pool: int = 100) -> dict:
    """Image -> caption retrieval among `pool` candidates (each image's own caption and those of the
    other images of its group of `pool`); returns top-1 / top-5 accuracy in percent."""
    model.eval()
    ids, mask = encode_texts(tokenizer, captions, max_text_len)
    images, texts = image_embeddings(model, pixels), text_embeddings(model, ids, mask)
    hits1 = hits5 = total = 0
    for start in range(0, len(captions), pool):
        sims = images[start:start + pool] @ texts[start:start + pool].T
        ranks = (sims > sims.diag().unsqueeze(1)).sum(1)
        hits1 += int((ranks < 1).sum())
        hits5 += int((ranks < 5).sum())
        total += len(ranks)
    candidates = min(pool, len(captions))
    return {"top1": round(100 * hits1 / max(1, total), 1), "top5": round(100 * hits5 / max(1, total), 1),
            "candidates": candidates, "images": total, "chance_top1": round(100 / max(1, candidates), 1)}


def save_vision(model: CLIPModel, processor: CLIPImageProcessor, directory: str | os.PathLike,
                settings: ClipSettings) -> Path:
    """The vision half as a standard CLIPVisionModel directory with its CLIPImageProcessor."""
    directory = Path(directory)
    vision = CLIPVisionModel(model.config.vision_config)
    vision.load_state_dict(model.vision_model.state_dict(), strict=True)
    vision.save_pretrained(str(directory))
    with quiet_transformers():
        processor.save_pretrained(str(directory))
    return directory


def settings_dict(settings: ClipSettings) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}
