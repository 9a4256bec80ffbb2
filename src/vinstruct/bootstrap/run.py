"""`run_bootstrap`: the whole bootstrap, from a world directory to `vision/` and `llm/`.

  OUT/vision/              CLIPVisionModel + CLIPImageProcessor (stands where openai/clip-vit-large-patch14 stands)
  OUT/llm/                 LlamaForCausalLM + BPE tokenizer with a chat template (stands where Vicuna stands)
  OUT/bootstrap_log.json   settings, loss curves, quality figures, timings

Only the train split is trained on; val gives the held-out figures. Everything is
written beside OUT and renamed into place at the end, so a failed run leaves
any previous OUT untouched.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from vinstruct.bootstrap import clip as clip_mod
from vinstruct.bootstrap import lm as lm_mod
from vinstruct.bootstrap.corpus import caption_documents, chat_documents, text_qa_prompts
from vinstruct.bootstrap.probe import majority_baseline, run_probes
from vinstruct.model.tokenizer import train_bpe_tokenizer
from vinstruct.bootstrap.worlddata import load_split, pixel_values
from vinstruct.data.formats import write_json
from vinstruct.data.images import ImageProcessor
from vinstruct.data.templates import DEFAULT_TEMPLATE, get_template
from vinstruct.errors import VinstructError
from vinstruct.atomic import atomic_directory
from vinstruct.model.vision import load_vision_tower
from vinstruct.world.manifest import load_manifest

LOG_NAME = "bootstrap_log.json"
QA_PROMPTS = 120  # val scenes the LM is quizzed on (one question each) for the report


@dataclass
class BootstrapSettings:
    clip: clip_mod.ClipSettings = field(default_factory=clip_mod.ClipSettings)
    lm: lm_mod.LmSettings = field(default_factory=lm_mod.LmSettings)
    vocab_size: int = 1000
    probe_pool: int = 2  # pooling of the patch grid the probes read (what later stages are advised to use)
    probe_images: int = 800  # train images the probes are fitted on
    seed: int = 0
    train_lm: bool = True  # False: the vision encoder only (for runs whose LM comes from elsewhere)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise VinstructError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise VinstructError(f"{out}: directory exists and is not empty (pass --overwrite to replace it)")


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _subset(split, pixels, n):
    from dataclasses import replace

    n = min(n, len(split))
    return replace(split, paths=split.paths[:n], captions=split.captions[:n], objects=split.objects[:n],
                   families=split.families[:n]), pixels[:n]


def bootstrap_vision(train, val, tokenizer, settings: BootstrapSettings, directory: Path, image_size: int,
                     progress: bool, say) -> tuple[dict, list[dict]]:
    s = settings.clip
    processor = clip_mod.make_image_processor(image_size)
    images = ImageProcessor(processor, aspect="pad")
    train_px, val_px = pixel_values(train, images, progress), pixel_values(val, images, progress)
    max_len = clip_mod.text_length(tokenizer, [c for caps in train.captions for c in caps])
    torch.manual_seed(settings.seed)
    model = clip_mod.build_clip(tokenizer, image_size, s, max_len)
    say(f"vision: CLIP {image_size}px patch {s.patch_size}, d{s.hidden} x {s.layers} layers "
        f"({_parameters(model.vision_model) / 1e6:.2f}M vision params), {s.steps} steps of {s.batch_size}")
    start = time.time()
    losses = clip_mod.train_clip(model, train_px, train, tokenizer, s, max_len, settings.seed, progress)
    seconds = time.time() - start
    report = {
        "dir": str(directory.name),
        "settings": clip_mod.settings_dict(s),
        "parameters": _parameters(model.vision_model),
        "train_seconds": round(seconds, 1),
        "final_loss": losses[-1]["loss"] if losses else None,
        "retrieval": clip_mod.retrieval(model, val_px, [c[0] for c in val.captions], tokenizer, max_len),
        "retrieval_layout_captions": clip_mod.retrieval(model, val_px, [c[min(1, len(c) - 1)] for c in val.captions],
                                                        tokenizer, max_len),
    }
    clip_mod.save_vision(model, processor, directory, s)
    # Probe the *saved* encoder, loaded the way a real run loads CLIP.
    saved = load_vision_tower(str(directory))
    probe_train, probe_px = _subset(train, train_px, settings.probe_images)
    report["probe_pool"] = settings.probe_pool
    report["probe"] = run_probes(saved, probe_train, probe_px, val, val_px, pool=settings.probe_pool)
    torch.manual_seed(settings.seed + 1)
    untrained = type(saved)(saved.config)
    report["probe_untrained"] = run_probes(untrained, probe_train, probe_px, val, val_px, pool=settings.probe_pool)
    report["probe_majority"] = majority_baseline(probe_train, val)
    return report, losses


def sample_prompts(val, eos: str) -> list[str]:
    """A caption opening and a chat question about a val scene (described, as in LM training)."""
    from vinstruct.world.questions import scene_questions
    import numpy as np

    captions = val.captions[0]
    question = scene_questions(val.objects[0], val.image_size, np.random.default_rng(0))[0]
    chat = get_template(DEFAULT_TEMPLATE).generation_prompt(
        [("human", f"{captions[0]} {captions[1] if len(captions) > 1 else ''}".strip() + "\n" + question.text)],
        None, eos)
    return ["A small", "Three shapes:", chat]


def bootstrap_llm(train, val, tokenizer, settings: BootstrapSettings, directory: Path, progress: bool,
                  say) -> tuple[dict, list[dict]]:
    s = settings.lm
    eos = tokenizer.eos_token
    train_docs = caption_documents(train) + chat_documents(train, eos, settings.seed)
    val_docs = caption_documents(val) + chat_documents(val, eos, settings.seed + 1)
    train_blocks = lm_mod.pack(tokenizer, train_docs, s.block)
    val_blocks = lm_mod.pack(tokenizer, val_docs, s.block)
    torch.manual_seed(settings.seed)
    model = lm_mod.build_lm(tokenizer, s)
    say(f"llm: Llama d{s.hidden} x {s.layers} layers ({_parameters(model) / 1e6:.2f}M params), vocab "
        f"{len(tokenizer)}, {len(train_blocks)} blocks of {s.block} tokens, {s.steps} steps of {s.batch_size}")
    start = time.time()
    losses = lm_mod.train_lm(model, train_blocks, s, settings.seed, progress)
    seconds = time.time() - start
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    # Evaluate the *saved* LM, loaded the way a real run loads Vicuna.
    saved = AutoModelForCausalLM.from_pretrained(str(directory))
    saved_tokenizer = AutoTokenizer.from_pretrained(str(directory))
    prompts = sample_prompts(val, eos)
    report = {
        "dir": str(directory.name),
        "settings": lm_mod.settings_dict(s),
        "parameters": _parameters(model),
        "vocab_size": len(tokenizer),
        "train_tokens_per_epoch": int(train_blocks.numel()),
        "train_seconds": round(seconds, 1),
        "final_loss": losses[-1]["loss"] if losses else None,
        "perplexity_val": lm_mod.perplexity(saved, val_blocks),
        "text_qa_val": lm_mod.text_qa_accuracy(saved, saved_tokenizer, *text_qa_prompts(val, eos, settings.seed + 2,
                                                                                        QA_PROMPTS)[:2]),
        "samples": [{"prompt": p[-160:], "completion": c}
                    for p, c in zip(prompts, lm_mod.complete(saved, saved_tokenizer, prompts))],
    }
    return report, losses


def run_bootstrap(world_dir: str | os.PathLike, out_dir: str | os.PathLike,
                  settings: BootstrapSettings | None = None, overwrite: bool = False, progress: bool = True,
                  say=print) -> dict:
    """Train the vision encoder and the LM on `world_dir`'s train split; write them to `out_dir`.

    Returns the report (also written to OUT/bootstrap_log.json, with the loss curves).
    """
    settings = settings or BootstrapSettings()
    out = Path(out_dir)
    _check_out(out, overwrite)
    manifest = load_manifest(world_dir)
    if manifest["splits"]["train"] < 2 or manifest["splits"]["val"] < 1:
        raise VinstructError(f"{world_dir}: needs at least 2 train and 1 val image (has {manifest['splits']})")
    wall, cpu = time.time(), time.process_time()
    size = int(manifest["image_size"])
    train, val = load_split(world_dir, "train", size), load_split(world_dir, "val", size)
    tokenizer = train_bpe_tokenizer(caption_documents(train) + chat_documents(train, "</s>", settings.seed),
                                    vocab_size=settings.vocab_size)
    with atomic_directory(out) as tmp:
        vision, clip_losses = bootstrap_vision(train, val, tokenizer, settings, tmp.path / "vision", size,
                                               progress, say)
        llm, lm_losses = None, []
        if settings.train_lm:
            llm, lm_losses = bootstrap_llm(train, val, tokenizer, settings, tmp.path / "llm", progress, say)
        report = {
            "world": str(world_dir),
            "world_seed": manifest["seed"],
            "seed": settings.seed,
            "threads": torch.get_num_threads(),
            "vision": vision,
            "llm": llm,
            "wall_seconds": round(time.time() - wall, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1),
        }
        write_json(tmp.path / LOG_NAME, {**report, "losses": {"clip": clip_losses, "lm": lm_losses}})
    return report


def format_report(report: dict) -> str:
    """The end-of-run summary printed by `vinstruct bootstrap`."""
    v, m = report["vision"], report["llm"] or {}
    r, rl = v["retrieval"], v["retrieval_layout_captions"]
    lines = [
        f"bootstrap finished in {report['wall_seconds']:.0f} s wall, {report['cpu_seconds']:.0f} s CPU "
        f"({report['threads']} threads)",
        f"vision  retrieval image->caption among {r['candidates']} (chance {r['chance_top1']} %): "
        f"top-1 {r['top1']} %, top-5 {r['top5']} % (layout captions: top-1 {rl['top1']} %, top-5 {rl['top5']} %)",
        f"        linear probes on frozen features (layer -2, pool {v['probe_pool']}), val accuracy %:",
        "          " + "  ".join(f"{k:>10}" for k in v["probe"]),
        "  trained " + "  ".join(f"{x:>10}" for x in v["probe"].values()),
        "  random  " + "  ".join(f"{x:>10}" for x in v["probe_untrained"].values()),
        "  majority" + "  ".join(f"{x:>10}" for x in v["probe_majority"].values()),
    ]
    if m:
        lines.append(f"llm     held-out perplexity {m['perplexity_val']} (vocab {m['vocab_size']}); answers "
                     f"{m['text_qa_val']} % of val questions right when told the scene in words; samples:")
        lines += [f"          {s['prompt'][-60:]!r} -> {s['completion']!r}" for s in m["samples"]]
    return "\n".join(lines)
