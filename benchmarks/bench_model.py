"""The model core against transformers: training step time and greedy decoding speed.

A ~20M-parameter LLaVA (random CLIP tower + Llama LM, fp32, mlp2x_gelu projector) is built
here, exported to llava-hf, and loaded by transformers' LlavaForConditionalGeneration, so both
models hold identical weights. On the same batch (4 samples with an image, mixed lengths, right
padding) we time a forward+backward step of each, and greedy decoding of 32 new tokens for the
same prompts with a KV cache (ours: model.generate; baseline: transformers' generate).

  .venv/bin/python benchmarks/bench_model.py        (writes docs/results/model.md)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 5
NEW_TOKENS = 32
sys.path.insert(0, str(ROOT / "benchmarks"))
from run_all import machine, median_seconds  # noqa: E402


def _median(action) -> float:
    return median_seconds(action, REPEATS, warmup=True)


def main() -> int:
    from transformers import LlavaForConditionalGeneration

    from vinstruct.model.convert_hf_export import export_llava_hf
    from vinstruct.model.generation import SamplingParams
    from vinstruct.model.build import build_model
    from vinstruct.model.random_parts import PartSizes, make_random_parts

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="bench-model-"))
    sizes = PartSizes(image_size=64, patch_size=8, vision_hidden=256, vision_layers=4, vision_heads=4,
                      llm_hidden=384, llm_layers=8, llm_heads=6, llm_kv_heads=2, llm_intermediate=1152,
                      vocab_size=2000)
    vision_dir, llm_dir = make_random_parts(work / "parts", sizes, seed=0)
    torch.manual_seed(0)
    ours = build_model(str(vision_dir), str(llm_dir), projector="mlp2x_gelu")
    export_llava_hf(ours, work / "hf")
    hf = LlavaForConditionalGeneration.from_pretrained(str(work / "hf"))
    params = sum(p.numel() for p in ours.parameters())

    # A batch of 4 prompts of different lengths, each with one image, right-padded.
    generator = torch.Generator().manual_seed(0)
    lengths = [96, 64, 128, 80]
    # text ids the tokenizer knows (the export sizes the llava-hf vocabulary to the tokenizer), never <image>
    high = min(len(ours.tokenizer), hf.get_input_embeddings().num_embeddings)
    text = [[t if t != ours.image_token_id else 5 for t in torch.randint(5, high, (n,), generator=generator).tolist()]
            for n in lengths]
    rows = [[1] + [ours.image_token_id] * ours.num_image_tokens + t for t in text]
    width = max(map(len, rows))
    pad = ours.tokenizer.pad_token_id or 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    labels = ids.masked_fill(mask == 0, -100).masked_fill(ids == ours.image_token_id, -100)
    pixels = torch.randn(len(rows), 3, sizes.image_size, sizes.image_size, generator=generator)

    def step(model, **inputs):
        model.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()

    ours.train()
    hf.train()
    ours_step = _median(lambda: step(ours, input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels))
    hf_step = _median(lambda: step(hf, input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels))
    with torch.no_grad():
        ours.eval()
        hf.eval()
        difference = (ours(ids, attention_mask=mask, pixel_values=pixels).logits
                      - hf(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits)[mask.bool()].abs().max()

    prompts = rows
    params_greedy = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0.0)
    ours_out = []

    def ours_decode():
        ours_out[:] = ours.generate(prompts, pixels, params=params_greedy)

    left = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    left_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    hf_out = []

    def hf_decode():
        with torch.no_grad():
            hf_out[:] = [hf.generate(input_ids=left, attention_mask=left_mask, pixel_values=pixels,
                                     max_new_tokens=NEW_TOKENS, do_sample=False,
                                     pad_token_id=pad)]

    with torch.no_grad():
        ours_decode_s = _median(ours_decode)
    hf_decode_s = _median(hf_decode)
    same = all(list(g.token_ids) == hf_out[0][i, width:width + len(g.token_ids)].tolist() for i, g in enumerate(ours_out))
    tokens = sum(len(g.token_ids) for g in ours_out)  # the same useful tokens for both (rows may end at EOS)
    report = "\n".join([
        "## Model core vs transformers",
        "",
        f"Model: random CLIP tower + Llama LM + mlp2x_gelu projector, {params / 1e6:.1f}M parameters, fp32, "
        f"identical weights (exported to llava-hf, loaded by `LlavaForConditionalGeneration`); batch of "
        f"{len(rows)} image+text samples ({ours.num_image_tokens} image tokens, {min(lengths)}-{max(lengths)} text "
        f"tokens); median of {REPEATS} runs after a warm-up, 2 threads. Command: "
        "`.venv/bin/python benchmarks/bench_model.py`.",
        f"Machine: {machine()}.",
        "",
        "| measure | vinstruct | transformers (baseline) | ratio (baseline time / ours; > 1: ours faster) |",
        "|---|---|---|---|",
        f"| forward+backward step | {ours_step * 1000:.0f} ms | {hf_step * 1000:.0f} ms | "
        f"{hf_step / ours_step:.2f}x |",
        f"| greedy decoding, up to {NEW_TOKENS} new tokens × {len(rows)} prompts | {tokens / ours_decode_s:.0f} tok/s | "
        f"{tokens / hf_decode_s:.0f} tok/s | {hf_decode_s / ours_decode_s:.2f}x |",
        "",
        f"Largest |logit difference| on the batch's real tokens: {difference.item():.2e}. Greedy tokens identical: "
        f"{'yes' if same else 'NO'}.",
        "",
    ])
    print(report)
    out = ROOT / "docs" / "results" / "model.md"
    out.write_text(report)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
