"""Checkpoint interop: conversion speed against transformers' own save/load, and exactness.

A ~28M-parameter LLaVA (random CLIP tower + Llama LM, fp32) is exported to llava-hf and imported
back; the baseline is transformers' LlavaForConditionalGeneration doing the same on the same
weights (save_pretrained / from_pretrained). Also reported: the largest logit difference
between our model and transformers' on the exported directory, and whether the
vinstruct -> llava-hf -> vinstruct round trip is bit-exact.

  .venv/bin/python benchmarks/bench_interop.py        (writes docs/results/interop.md)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 7
sys.path.insert(0, str(ROOT / "benchmarks"))
from run_all import machine, median_seconds  # noqa: E402  (the same machine line as docs/RESULTS.md)


def _median_seconds(action) -> float:
    return median_seconds(action, REPEATS)


def main() -> int:
    from transformers import LlavaForConditionalGeneration

    from vinstruct.model.convert_hf_export import export_llava_hf
    from vinstruct.model.build import build_model
    from vinstruct.model.io import load_model
    from vinstruct.model.random_parts import PartSizes, make_random_parts

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="bench-interop-"))
    sizes = PartSizes(image_size=64, patch_size=8, vision_hidden=256, vision_layers=4, vision_heads=4,
                      llm_hidden=512, llm_layers=8, llm_heads=8, llm_kv_heads=4, llm_intermediate=1536,
                      vocab_size=2000)
    vision_dir, llm_dir = make_random_parts(work / "parts", sizes, seed=0)
    torch.manual_seed(0)
    model = build_model(str(vision_dir), str(llm_dir)).eval()
    params = sum(p.numel() for p in model.parameters())

    ours_export = _median_seconds(lambda: export_llava_hf(model, work / "hf"))
    hf = LlavaForConditionalGeneration.from_pretrained(str(work / "hf")).eval()
    hf_save = _median_seconds(lambda: hf.save_pretrained(str(work / "hf-saved")))
    ours_import = _median_seconds(lambda: load_model(work / "hf"))
    hf_load = _median_seconds(lambda: LlavaForConditionalGeneration.from_pretrained(str(work / "hf")))

    imported = load_model(work / "hf")
    exact = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), imported.state_dict().values()))
    ids = torch.tensor([[1] + [model.image_token_id] * model.num_image_tokens + list(range(5, 40))])
    pixels = torch.randn(1, 3, sizes.image_size, sizes.image_size)
    with torch.no_grad():
        difference = (model(ids, pixel_values=pixels).logits - hf(input_ids=ids, pixel_values=pixels).logits)
    report = "\n".join([
        "## Checkpoint interop",
        "",
        f"Model: random CLIP tower + Llama LM, {params / 1e6:.1f}M parameters, fp32; median of {REPEATS} runs, "
        "2 threads. Command: `.venv/bin/python benchmarks/bench_interop.py`.",
        f"Machine: {machine()} (shared with other work; ratios come from the same run).",
        "",
        "| operation | vinstruct | transformers (baseline) | ratio (baseline / ours) |",
        "|---|---|---|---|",
        f"| write llava-hf directory | {ours_export:.2f} s | {hf_save:.2f} s (save_pretrained) | "
        f"{hf_save / ours_export:.2f}x |",
        f"| read llava-hf directory | {ours_import:.2f} s | {hf_load:.2f} s (from_pretrained) | "
        f"{hf_load / ours_import:.2f}x |",
        "",
        f"Largest |logit difference| against transformers on the export: {difference.abs().max().item():.2e}. "
        f"Round trip vinstruct -> llava-hf -> vinstruct bit-exact: {'yes' if exact else 'NO'}.",
        "",
    ])
    print(report)
    out = ROOT / "docs" / "results" / "interop.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
