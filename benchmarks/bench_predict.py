"""Batched `predict` throughput against one question at a time, on the same model and questions.

A small LLaVA (random CLIP-style vision tower + Llama-style LM, sized like the embedded demo's
models) answers the same question file at several batch sizes through
`vinstruct.eval.predict.predict` — prompt encoding, image loading, generation and the
journalled answer file included. Greedy decoding; the random model almost never emits EOS, so
every answer runs to the token limit and the batch sizes do equal work (tokens are counted).

usage: python benchmarks/bench_predict.py [--questions 128] [--max-new-tokens 16] [--threads 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from run_all import machine  # noqa: E402

from vinstruct.model.tokenizer import train_bpe_tokenizer  # noqa: E402
from vinstruct.data.templates import VICUNA_SYSTEM  # noqa: E402
from vinstruct.eval.predict import PredictOptions, predict  # noqa: E402
from vinstruct.model.build import build_model  # noqa: E402
from vinstruct.model.random_parts import PartSizes, make_random_parts  # noqa: E402

SIZES = PartSizes(image_size=64, patch_size=8, vision_hidden=64, vision_layers=2, vision_heads=2, llm_hidden=128,
                  llm_layers=2, llm_heads=4, llm_kv_heads=2, llm_intermediate=256, vocab_size=400)
TEXTS = ["What color is the shape?", "How many circles are there in the image?",
         "Is the red square on the left or the right of the image?", "Describe the image briefly."]


def retokenize(llm_dir: Path) -> None:
    """Give the random LM a tokenizer trained on the prompt language (system line, questions), so
    prompts have realistic lengths (a 400-token vocabulary spells unseen words letter by letter)."""
    from transformers import LlamaForCausalLM

    corpus = [VICUNA_SYSTEM, "USER: ASSISTANT:"] * 50 + TEXTS * 50 + ["a red circle on the left of a blue square."] * 50
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=1000)
    llm = LlamaForCausalLM.from_pretrained(str(llm_dir))
    llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    llm.config.bos_token_id, llm.config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    llm.config.pad_token_id = tokenizer.pad_token_id
    llm.save_pretrained(str(llm_dir))
    tokenizer.save_pretrained(str(llm_dir))


def setup(directory: Path, n_questions: int):
    vision, llm = make_random_parts(directory / "parts", SIZES, seed=0)
    retokenize(llm)
    torch.manual_seed(0)
    model = build_model(str(vision), str(llm)).eval()
    images = directory / "images"
    images.mkdir()
    colors = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
    for i, color in enumerate(colors):
        Image.new("RGB", (64, 64), color).save(images / f"{i}.png")
    questions = [{"question_id": i, "image": f"{i % 4}.png", "text": TEXTS[i % len(TEXTS)]} for i in range(n_questions)]
    return model, questions, images


def measure(model, questions, images, directory: Path, batch_size: int, max_new_tokens: int, repeat: int = 1) -> dict:
    """Best of `repeat` runs (each into a fresh answer file): the least disturbed by other load."""
    runs = []
    for attempt in range(repeat):
        answers = directory / f"answers_b{batch_size}_{attempt}.jsonl"
        options = PredictOptions(batch_size=batch_size, max_new_tokens=max_new_tokens)
        start_cpu = time.process_time()
        stats = predict(model, questions, answers, images, options, progress=False)
        runs.append((stats.seconds, time.process_time() - start_cpu, stats))
    seconds, _, stats = min(runs, key=lambda run: run[0])
    cpu = min(run[1] for run in runs)
    return {"batch": batch_size, "seconds": seconds, "cpu": cpu, "questions": stats.answered,
            "tokens": stats.new_tokens, "q_per_s": stats.answered / stats.seconds,
            "tok_per_s": stats.new_tokens / stats.seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", default="1,8,16,32")
    parser.add_argument("--repeat", type=int, default=3, help="runs per batch size; the fastest is reported")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        model, questions, images = setup(directory, args.questions)
        measure(model, questions[:8], images, directory / "warm", 8, 4)  # warm-up, not reported
        rows = [measure(model, questions, images, directory, int(b), args.max_new_tokens, args.repeat)
                for b in args.batches.split(",")]
    base = rows[0]
    lines = [
        "## Batched prediction (`vinstruct predict`)",
        "",
        f"{args.questions} image questions, greedy, up to {args.max_new_tokens} new tokens each; a LLaVA with a "
        f"{SIZES.vision_layers}-layer ViT ({SIZES.image_size}px, {(SIZES.image_size // SIZES.patch_size) ** 2} image "
        f"tokens) and a {SIZES.llm_layers}-layer d{SIZES.llm_hidden} Llama LM; {args.threads} torch thread(s). "
        f"Best of {args.repeat} runs per batch size; speed-up is questions/s against batch size 1 in the same run. "
        "Every batch's answers are appended and fsynced before the next starts (the resumable journal). "
        "With one thread, CPU time approximates wall time on an idle machine.",
        "",
        "| batch | wall s | CPU s | questions/s (wall) | new tokens/s (wall) | speed-up (wall) | speed-up (CPU time) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['batch']} | {row['seconds']:.2f} | {row['cpu']:.2f} | {row['q_per_s']:.1f} | "
                     f"{row['tok_per_s']:.0f} | {row['q_per_s'] / base['q_per_s']:.2f}x | "
                     f"{base['cpu'] / row['cpu']:.2f}x |")
    lines += ["", f"Command: `python benchmarks/bench_predict.py --questions {args.questions} --max-new-tokens "
              f"{args.max_new_tokens} --threads {args.threads} --repeat {args.repeat}`. Machine: {machine()} (shared; wall times are "
              "inflated by other load, CPU times less so).", ""]
    text = "\n".join(lines)
    print(text)
    out = ROOT / "docs" / "results" / "predict.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
