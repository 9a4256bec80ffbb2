"""Training-step speed: our stage-2 step vs a plain transformers LlavaForConditionalGeneration loop,
length-grouped vs random batching, and MFU against a measured matmul peak.

    .venv/bin/python benchmarks/bench_train.py                 # CPU, fp32, 2 threads
    python benchmarks/bench_train.py --device cuda --precision bf16 --size gpu   # see benchmarks/gpu.sh

Both loops hold the same weights, see the same batches and use the same AdamW; the vision tower
is frozen in both (stage 2). Prints a markdown section and writes it to docs/results/train.md
(or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from transformers import LlavaConfig as HFLlavaConfig  # noqa: E402
from transformers import LlavaForConditionalGeneration  # noqa: E402

from vinstruct.machine import cpu_name  # noqa: E402
from vinstruct.model.build import build_model  # noqa: E402
from vinstruct.model.random_parts import PartSizes, make_random_parts  # noqa: E402
from vinstruct.train.metrics import FlopModel, measure_matmul_peak  # noqa: E402
from vinstruct.train.sampler import epoch_micro_batches  # noqa: E402
from vinstruct.train.stages import freeze_for_stage  # noqa: E402
from vinstruct.train.step import TrainStep, build_optimizer  # noqa: E402

SIZES = {
    # CPU: big enough that matmuls dominate, small enough for a few steps a second on 2 cores
    "cpu": PartSizes(image_size=64, patch_size=8, vision_hidden=256, vision_layers=4, vision_heads=4,
                     llm_hidden=640, llm_layers=4, llm_heads=10, llm_kv_heads=5, llm_intermediate=1728,
                     vocab_size=400, max_positions=1024),
    # GPU: about 0.9 B parameters (CLIP-L-like tower 0.3 B + a 0.6 B Llama)
    "gpu": PartSizes(image_size=224, patch_size=14, vision_hidden=1024, vision_layers=24, vision_heads=16,
                     llm_hidden=2048, llm_layers=12, llm_heads=16, llm_kv_heads=8, llm_intermediate=5504,
                     vocab_size=400, max_positions=4096),
}


def machine() -> str:
    cpu = cpu_name()
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (host: {cpu})"
    return f"{cpu}, {torch.get_num_threads()} threads"


# ---- synthetic batches ------------------------------------------------------------------------------------
def make_batch(model, lengths: list[int], with_images: bool, device, generator) -> dict:
    """Right-padded rows of random text (`lengths` text tokens each) after the image slots; the second
    half of each row is supervised (like an answer)."""
    n_img = model.num_image_tokens if with_images else 0
    lengths = [n + n_img for n in lengths]
    width = max(lengths)
    pad, vocab = model.tokenizer.pad_token_id, model.llm.config.vocab_size
    ids = torch.full((len(lengths), width), pad)
    labels = torch.full((len(lengths), width), -100)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, n in enumerate(lengths):
        text = torch.randint(5, min(vocab, 380), (n,), generator=generator)
        text[:n_img] = model.image_token_id
        ids[row, :n], mask[row, :n] = text, 1
        labels[row, n // 2:n] = text[n // 2:n]
    size = model.vision_tower.config.image_size
    pixels = torch.randn(len(lengths), 3, size, size, generator=generator) if with_images else None
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": pixels}
    return {k: (v.to(device) if v is not None else None) for k, v in batch.items()}


# ---- the two loops ------------------------------------------------------------------------------------------
def hf_twin(model) -> LlavaForConditionalGeneration:
    """transformers' Llava class holding exactly our weights (llava-hf key names)."""
    config = HFLlavaConfig(vision_config=model.vision_tower.config.to_dict(), text_config=model.llm.config.to_dict(),
                           image_token_index=model.image_token_id, vision_feature_layer=-2,
                           vision_feature_select_strategy="default", projector_hidden_act="gelu")
    twin = LlavaForConditionalGeneration(config)
    mapped = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("vision_tower."):
            mapped["model." + key] = tensor
        elif key.startswith("projector.0."):
            mapped["model.multi_modal_projector.linear_1." + key.rsplit(".", 1)[1]] = tensor
        elif key.startswith("projector.2."):
            mapped["model.multi_modal_projector.linear_2." + key.rsplit(".", 1)[1]] = tensor
        elif key.startswith("llm.model."):
            mapped["model.language_model." + key[len("llm.model."):]] = tensor
        elif key == "llm.lm_head.weight":
            mapped["lm_head.weight"] = tensor
    twin.load_state_dict(mapped, strict=True)
    twin.model.vision_tower.requires_grad_(False)
    return twin


def autocast(device, precision):
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class OurLoop:
    """Our training step; with accum > 1 the optimizer steps every `accum` micro-batches."""

    def __init__(self, model, device, precision, cached: bool, accum: int = 1):
        self.step_module = TrainStep(model)
        self.optimizer = build_optimizer(self.step_module, 1e-5, None, 0.0, (0.9, 0.999), 1e-8)
        self.device, self.precision, self.cached, self.accum = device, precision, cached, accum
        self.features: dict[int, torch.Tensor] = {}
        self.calls = 0

    def __call__(self, batch: dict, key: int) -> None:
        inputs = dict(batch)
        if self.cached and inputs["pixel_values"] is not None:
            if key not in self.features:  # computed once per batch of images, reused afterwards
                with torch.no_grad():
                    self.features[key] = self.step_module.model.vision_features(inputs["pixel_values"])
            inputs["vision_features"] = self.features[key]
            inputs["pixel_values"] = None
        with autocast(self.device, self.precision):
            loss_sum, tokens = self.step_module(**inputs)
        (loss_sum / tokens / self.accum).backward()
        self.calls += 1
        if self.calls % self.accum == 0:
            torch.nn.utils.clip_grad_norm_(self.step_module.parameters(), 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)


class HFLoop:
    def __init__(self, twin, device, precision):
        self.twin = twin.to(device).train()
        trainable = [p for p in twin.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        self.device, self.precision = device, precision

    def __call__(self, batch: dict, key: int) -> None:
        with autocast(self.device, self.precision):
            loss = self.twin(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.twin.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def make_clock(device):
    """Seconds to compare by: wall time on a GPU; on a CPU shared with other work, this process's CPU
    time divided by its thread count (what the wall time would be on an idle machine)."""
    if torch.device(device).type == "cuda":
        return time.perf_counter
    threads = torch.get_num_threads()
    return lambda: time.process_time() / threads


def time_loops(loops: dict, batches: list[dict], device, rounds: int) -> dict[str, float]:
    """Seconds per pass over `batches` for each loop (mean over rounds), interleaved batch by batch."""
    clock = make_clock(device)
    for loop in loops.values():  # warm-up
        loop(batches[0], 0)
    spent = {name: 0.0 for name in loops}
    for _ in range(rounds):
        for key, batch in enumerate(batches):
            for name, loop in loops.items():
                sync(device)
                start = clock()
                loop(batch, key)
                sync(device)
                spent[name] += clock() - start
    return {name: seconds / rounds for name, seconds in spent.items()}


# ---- the three measurements ------------------------------------------------------------------------------------
def realistic_lengths(n: int, rng: random.Random, scale: int) -> list[int]:
    """A LLaVA-like mix: many short caption-like samples, a body of conversations, a long tail."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.45:
            out.append(rng.randint(scale // 8, scale // 4))
        elif r < 0.9:
            out.append(rng.randint(scale // 4, scale // 2))
        else:
            out.append(rng.randint(scale // 2, scale))
    return out


def bench_vs_transformers(model, device, precision, batch_size, seq, rounds) -> list[str]:
    g = torch.Generator().manual_seed(0)
    rng = random.Random(0)
    batches = [make_batch(model, [rng.randint(seq // 2, seq) for _ in range(batch_size)], True, device, g)
               for _ in range(3)]
    samples = sum(b["input_ids"].shape[0] for b in batches)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    twin = hf_twin(model)
    loops = {"transformers LlavaForConditionalGeneration": HFLoop(twin, device, precision),
             "vinstruct stage-2 step": OurLoop(model, device, precision, cached=False),
             "vinstruct stage-2 step, cached vision features": OurLoop(model, device, precision, cached=True)}
    times = time_loops(loops, batches, device, rounds)
    base = times["transformers LlavaForConditionalGeneration"]
    lines = ["| loop | samples/s | tokens/s | vs transformers |", "|---|---:|---:|---:|"]
    for name, seconds in times.items():
        lines.append(f"| {name} | {samples / seconds:.1f} | {tokens / seconds:,.0f} | {base / seconds:.2f}x |")
    return lines


def bench_length_grouping(model, device, precision, batch_size, seq, n_samples, accum, rounds) -> list[str]:
    rng = random.Random(1)
    lengths = realistic_lengths(n_samples, rng, seq)
    has_image = [True] * n_samples
    g = torch.Generator().manual_seed(2)
    modes = {}
    for grouped in (False, True):
        plan = epoch_micro_batches(lengths, has_image, batch_size, seed=0, epoch=0, group_by_length=grouped,
                                   window=32)
        batches = [make_batch(model, [lengths[i] for i in idx], True, device, g) for idx in plan]
        modes[grouped] = (OurLoop(model, device, precision, cached=True, accum=accum), batches)
    clock = make_clock(device)
    spent = {grouped: 0.0 for grouped in modes}
    for loop, batches in modes.values():  # warm-up (also fills each loop's feature cache)
        for key, batch in enumerate(batches):
            loop(batch, key)
    for _ in range(rounds):  # the two batchings alternate micro-batch by micro-batch
        for key in range(max(len(b) for _, b in modes.values())):
            for grouped, (loop, batches) in modes.items():
                if key < len(batches):
                    sync(device)
                    start = clock()
                    loop(batches[key], key)
                    sync(device)
                    spent[grouped] += clock() - start
    results = {}
    for grouped, (_, batches) in modes.items():
        real = sum(int(b["attention_mask"].sum()) for b in batches)
        padded = sum(b["attention_mask"].numel() for b in batches)
        results[grouped] = (rounds * real / spent[grouped], real / padded)
    base, base_share = results[False]
    lines = ["| batching | effective tokens/s | non-pad share | vs random | padded tokens computed vs random |",
             "|---|---:|---:|---:|---:|"]
    for grouped, (tps, share) in results.items():
        name = "length-grouped (modality, window 32)" if grouped else "random"
        lines.append(f"| {name} | {tps:,.0f} | {100 * share:.0f} % | {tps / base:.2f}x | {base_share / share:.2f}x |")
    return lines


def bench_mfu(model, device, precision, batch_size, seq, rounds) -> list[str]:
    g = torch.Generator().manual_seed(3)
    batches = [make_batch(model, [seq] * batch_size, True, device, g) for _ in range(2)]
    loop = OurLoop(model, device, precision, cached=True)
    seconds = time_loops({"x": loop}, batches, device, rounds)["x"]
    flop_model = FlopModel.of(model)
    flops = sum(flop_model.step_flops(b["input_ids"].shape[0], b["input_ids"].shape[1], b["input_ids"].shape[0],
                                      int((b["labels"][:, 1:] != -100).sum()), vision_computed=False)
                for b in batches)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    peak = measure_matmul_peak(device, dtype, size=4096 if torch.device(device).type == "cuda" else 1024, seconds=2,
                               clock=make_clock(device))
    achieved = flops / seconds
    return ["| measured matmul peak | achieved (model FLOPs) | MFU |", "|---:|---:|---:|",
            f"| {peak / 1e9:,.1f} GFLOP/s | {achieved / 1e9:,.1f} GFLOP/s | {100 * achieved / peak:.1f} % |"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq", type=int, default=160, help="longest sample's text, in tokens (plus image slots)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--accum", type=int, default=4, help="accumulation steps in the length-grouping run")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "train.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    command = "python benchmarks/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        vision, llm = make_random_parts(tmp, SIZES[args.size])
        model = build_model(str(vision), str(llm), model_max_length=4 * args.seq)
    freeze_for_stage(model, "finetune")
    model.to(args.device).train()
    n_params = sum(p.numel() for p in model.parameters())
    sections = [
        "## Training (benchmarks/bench_train.py)", "",
        f"Command: `{command.strip()}`; machine: {machine()}; {args.precision}; model {n_params / 1e6:.1f} M "
        f"parameters ({args.size} sizes, random weights), stage 2 (vision frozen), batch {args.batch_size}.", "",
        "### Stage-2 step vs a plain transformers loop (same weights, batches, AdamW)", "",
        *bench_vs_transformers(model, args.device, args.precision, args.batch_size, args.seq, args.rounds), "",
        f"### Length grouping vs random batching (realistic length mix, cached features, "
        f"global batch {args.batch_size * args.accum} = {args.batch_size} x {args.accum} accumulation steps)", "",
        *bench_length_grouping(model, args.device, args.precision, args.batch_size, args.seq, 64, args.accum,
                                args.rounds), "",
        "### Model FLOPs utilisation of the stage-2 step", "",
        *bench_mfu(model, args.device, args.precision, args.batch_size, args.seq, args.rounds), "",
        "Ratios come from one run with the loops interleaved batch by batch. On CPUs, time is this",
        "process's CPU time divided by its threads (the machine is shared with other work, so wall time",
        "would measure the neighbours); on GPUs it is wall time. Absolute numbers are for the machine named.", "",
    ]
    text = "\n".join(sections)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
