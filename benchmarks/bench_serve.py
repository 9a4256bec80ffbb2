"""Serving benchmark: batched vs one-at-a-time engine behind the real HTTP API, and prefix reuse.

1. Throughput: 8 concurrent openai-SDK clients ask for chat completions (an
   image and a question each; plain, then streamed for time to first token)
   from the API server on 127.0.0.1, running in its own process. The same server runs with the batching engine
   (max_batch_size=8) and with max_batch_size=1 (one request at a time),
   alternating, several rounds; medians are reported, with the server's CPU
   time (robust to other load on a shared machine).
2. Prefix reuse: a conversation about an image runs three turns; the time to
   first token of the 4th turn is measured with the prefix cache on and off
   (off: the image and the earlier turns are recomputed).

Both run on two random-weight models: the embedded demo's shape and a wider
one where the model's arithmetic, not Python overhead, dominates.
Writes docs/results/serve.md. Usage: python benchmarks/bench_serve.py [--quick]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openai
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from run_all import machine  # noqa: E402

from vinstruct.model.build import build_model  # noqa: E402
from vinstruct.model.io import save_model  # noqa: E402
from vinstruct.model.random_parts import PartSizes, make_random_parts  # noqa: E402
from vinstruct.serve.images import image_data_url  # noqa: E402

VISION = dict(image_size=64, patch_size=8, vision_hidden=128, vision_layers=4, vision_heads=4, vocab_size=400,
              max_positions=2048)
MODELS = {
    "demo-size (Llama 2x128)": PartSizes(llm_hidden=128, llm_layers=2, llm_heads=4, llm_kv_heads=4,
                                         llm_intermediate=512, **VISION),
    "wider (Llama 4x384)": PartSizes(llm_hidden=384, llm_layers=4, llm_heads=6, llm_kv_heads=6,
                                     llm_intermediate=1536, **VISION),
}
CLIENTS, MAX_TOKENS, TURN_TOKENS = 8, 128, 48


def make_checkpoint(directory: Path, sizes: PartSizes) -> Path:
    vision, llm = make_random_parts(directory / "parts", sizes, seed=0)
    torch.manual_seed(0)
    return save_model(build_model(str(vision), str(llm), model_max_length=2048), directory / "model")


def make_images(directory: Path, n: int) -> list[str]:
    urls = []
    for i in range(n):
        path = directory / f"img{i}.png"
        Image.new("RGB", (64, 48), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)).save(path)
        urls.append(image_data_url(path))
    return urls


# ---- the server under test ---------------------------------------------------------------------------
def _serve_child(checkpoint: str, batch_size: int, prefix_cache_tokens: int, threads: int, conn) -> None:
    """Runs in its own process so the clients do not compete with it for the GIL. Replies ignore EOS,
    so every request generates exactly max_tokens."""
    import uvicorn

    from vinstruct import load
    from vinstruct.serve.api import ServerSettings, bind_socket, create_app
    from vinstruct.serve.assistant import Assistant
    from vinstruct.serve.engine import Engine

    torch.set_num_threads(threads)
    model = load(checkpoint)
    engine = Engine(model, max_batch_size=batch_size, prefix_cache_tokens=prefix_cache_tokens, eos_token_ids=[])
    app = create_app(Assistant(model, engine, name="bench"), ServerSettings())
    sock = bind_socket("127.0.0.1", 0)
    conn.send(sock.getsockname()[1])
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


@contextlib.contextmanager
def server(checkpoint: Path, batch_size: int, prefix_cache_tokens: int, threads: int):
    """Yield (base URL, pid) of a server process; stop it afterwards."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve_child, args=(str(checkpoint), batch_size, prefix_cache_tokens,
                                                         threads, child), daemon=True)
    process.start()
    try:
        if not parent.poll(300):
            raise RuntimeError("benchmark server did not start")
        url = f"http://127.0.0.1:{parent.recv()}"
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        for _ in range(600):
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.join(30)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- clients -------------------------------------------------------------------------------------------
def question(url: str, text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": text}]}]


def stream_once(client, messages, max_tokens):
    """One streamed greedy completion: (latency s, time to first token s, text, usage)."""
    start, first, text, usage = time.perf_counter(), None, "", None
    stream = client.chat.completions.create(model="bench", messages=messages, max_tokens=max_tokens,
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    end = time.perf_counter()
    return end - start, (first or end) - start, text, usage


def complete_once(client, messages, max_tokens):
    """One plain (non-streamed) greedy completion, in stream_once's shape (TTFT = latency)."""
    start = time.perf_counter()
    reply = client.chat.completions.create(model="bench", messages=messages, max_tokens=max_tokens, temperature=0)
    latency = time.perf_counter() - start
    return latency, latency, reply.choices[0].message.content, reply.usage


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def throughput_round(checkpoint, batch_size: int, per_client: int, images, threads: int, stream: bool) -> dict:
    ask = stream_once if stream else complete_once
    with server(checkpoint, batch_size, 8192, threads) as (url, pid):
        def client_run(k):
            client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
            return [ask(client, question(images[(k + r) % len(images)],
                                         f"client {k} question {r}: what is in the picture?"), MAX_TOKENS)
                    for r in range(per_client)]

        # A long-running server has the system prompt cached; start from that state in both modes.
        stream_once(openai.OpenAI(base_url=url + "/v1", api_key="none"), question(images[0], "warm up"), 4)
        cpu_before, start = cpu_seconds(pid), time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            results = [r for rs in pool.map(client_run, range(CLIENTS)) for r in rs]
        wall, cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu_before
    tokens = sum(r[3].completion_tokens for r in results)
    latencies, ttfts = [r[0] for r in results], [r[1] for r in results]
    return {"tok_s": tokens / wall, "tok_cpu_s": tokens / cpu, "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95), "ttft50": percentile(ttfts, 0.5),
            "ttft95": percentile(ttfts, 0.95), "texts": sorted(r[2] for r in results)}


def median_of(rounds: list[dict]) -> dict:
    keys = [k for k in rounds[0] if k != "texts"]
    return {k: statistics.median(r[k] for r in rounds) for k in keys} | {"texts": rounds[0]["texts"]}


def fourth_turn_ttft(checkpoint, prefix_cache_tokens: int, trials: int, images, threads: int):
    """Median time to first token of turn 4, with the prompt and cached token counts of the last trial."""
    times, cached, prompt_tokens = [], 0, 0
    with server(checkpoint, 8, prefix_cache_tokens, threads) as (url, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
        for trial in range(trials):
            messages = question(images[trial % len(images)], f"Conversation {trial}: describe the image in detail.")
            for turn in range(3):
                reply = client.chat.completions.create(model="bench", messages=messages, max_tokens=TURN_TOKENS,
                                                       temperature=0)
                messages += [{"role": "assistant", "content": reply.choices[0].message.content},
                             {"role": "user", "content": f"Tell me more about part {turn + 1} of it."}]
            _, ttft, _, usage = stream_once(client, messages, 4)
            times.append(ttft)
            cached, prompt_tokens = usage.prompt_tokens_details.cached_tokens, usage.prompt_tokens
    return statistics.median(times), cached, prompt_tokens


# ---- report --------------------------------------------------------------------------------------------
def measure(name: str, sizes: PartSizes, args, tmp: Path) -> list[str]:
    checkpoint = make_checkpoint(tmp / name.split()[0], sizes)
    images = make_images(tmp, 8)
    rounds = {(batch, stream): [] for batch in (8, 1) for stream in (False, True)}
    for round_index in range(args.rounds):
        for batch in (8, 1) if round_index % 2 == 0 else (1, 8):
            for stream in (False, True):
                print(f"{name}: max_batch_size={batch}, stream={stream}, round {round_index + 1}", flush=True)
                rounds[batch, stream].append(
                    throughput_round(checkpoint, batch, args.per_client, images, args.threads, stream))
    batched, serial = median_of(rounds[8, False]), median_of(rounds[1, False])
    batched_stream, serial_stream = median_of(rounds[8, True]), median_of(rounds[1, True])
    print(f"{name}: 4th-turn time to first token", flush=True)
    reuse, cached, prompt_tokens = fourth_turn_ttft(checkpoint, 1 << 16, args.trials, images, args.threads)
    recompute, _, _ = fourth_turn_ttft(checkpoint, 0, args.trials, images, args.threads)
    lines = [
        f"### {name}",
        "",
        f"Throughput: {CLIENTS} concurrent clients x {args.per_client} requests x {MAX_TOKENS} tokens, plain "
        f"and streamed, median of {args.rounds} rounds:",
        "",
        "| engine | tokens/s | tokens per server CPU-s | latency p50 (s) | latency p95 (s) "
        "| streamed tokens/s | TTFT p50 (s) | TTFT p95 (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r, rs in (("batched (max_batch_size=8)", batched, batched_stream),
                         ("one at a time (max_batch_size=1)", serial, serial_stream)):
        lines.append(f"| {label} | {r['tok_s']:.0f} | {r['tok_cpu_s']:.0f} | {r['p50']:.2f} | {r['p95']:.2f} | "
                     f"{rs['tok_s']:.0f} | {rs['ttft50']:.2f} | {rs['ttft95']:.2f} |")
    same = batched["texts"] == serial["texts"] == batched_stream["texts"] == serial_stream["texts"]
    lines += [
        "",
        f"Batched / one at a time: **{batched['tok_s'] / serial['tok_s']:.1f}x** tokens/s "
        f"({batched['tok_cpu_s'] / serial['tok_cpu_s']:.1f}x per server CPU-second; streamed "
        f"{batched_stream['tok_s'] / serial_stream['tok_s']:.1f}x); goal >= 4x. "
        f"Same answers in every mode: {'yes' if same else 'NO'}.",
        "",
        f"4th turn of a conversation about an image (prompt {prompt_tokens} tokens, {cached} of them reused), "
        f"median time to first token over {args.trials} conversations: prefix reuse **{reuse * 1000:.0f} ms**, "
        f"recompute {recompute * 1000:.0f} ms: **{recompute / reuse:.1f}x** faster (goal >= 2x).",
        "",
    ]
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, fewer requests (a smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server (default: %(default)s)")
    args = parser.parse_args(argv)
    args.rounds, args.per_client, args.trials = (1, 1, 2) if args.quick else (3, 2, 5)
    torch.set_num_threads(args.threads)
    lines = [
        "## Serving (`benchmarks/bench_serve.py`)",
        "",
        f"Command: `python benchmarks/bench_serve.py{' --quick' if args.quick else ''}` on {machine()}; "
        f"server in its own process with {args.threads} torch thread(s), clients (openai SDK) in "
        "another, over HTTP on 127.0.0.1. Streamed throughput also pays the clients' per-chunk parsing, which "
        "competes with the server for the same two CPUs. The machine is shared with other jobs, so wall-clock numbers are "
        "noisy; tokens per server CPU-second are not. Random-weight models, fp32, greedy, EOS ignored (every "
        f"reply is exactly {MAX_TOKENS} tokens); vision: CLIP-style ViT 4x128 on 64x64 images (64 image tokens).",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, sizes in MODELS.items():
            lines += measure(name, sizes, args, Path(tmp))
    report = "\n".join(lines)
    print(report)
    out = ROOT / "docs" / "results" / "serve.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
