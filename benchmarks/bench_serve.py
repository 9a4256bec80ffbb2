"""Serving benchmark: continuous batching vs one request at a time behind the real HTTP API, prefix reuse,
memory over many requests.

1. Throughput: 8 and 32 concurrent openai-SDK clients ask for chat completions (an
   image and a question each; plain, then streamed for time to first token)
   from the API server on 127.0.0.1, running in its own process. The same server runs with
   max_batch_size = the number of clients and with max_batch_size=1 (one request at a time),
   alternating; medians are reported, with the server's CPU time (robust to other load on a
   shared machine).
2. Prefix reuse: a conversation about an image runs three turns; the time to
   first token of the 4th turn is measured with the prefix cache on and off
   (off: the image and the earlier turns are recomputed).
3. Memory: the server's RSS after 50 and after 500 mixed requests (plain, streamed, cancelled
   mid-stream, with and without images).
4. Against `transformers serve --continuous-batching` (the server that ships with transformers)
   serving the llava-hf export of the same weights: the same 8 and 32 clients and requests, both
   servers stopping at EOS, greedy; tokens/s, time to first token, and whether the answers are equal.
   What transformers does with the requests (continuous batching or not) is read from its log.

Two sizes: the demo's real model (SmolLM2-135M-Instruct behind a CLIP tower of the demo's
shape, see bench_engine.py) and the tiny 2 x 128 Llama of the embedded default.
Writes docs/results/serve.md. Usage: python benchmarks/bench_serve.py [--quick] [--sizes demo,tiny]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import openai
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from run_all import free_port, machine, process_cpu_seconds, write_section  # noqa: E402

from vinstruct.model.build import build_model  # noqa: E402
from vinstruct.model.io import save_model  # noqa: E402
from vinstruct.model.random_parts import PartSizes, make_random_parts  # noqa: E402
from vinstruct.serve.images import image_data_url  # noqa: E402

from bench_engine import DEMO_VISION, demo_llm  # noqa: E402

SIZES = {
    "demo": "demo size: SmolLM2-135M-Instruct + CLIP 4x128 (64 image tokens)",
    "tiny": "tiny: Llama 2x128 + CLIP 4x128 (64 image tokens)",
}
CLIENT_COUNTS, MAX_TOKENS, TURN_TOKENS = (8, 32), 64, 48


def make_checkpoint(directory: Path, size: str) -> Path:
    if size == "demo":
        vision, _ = make_random_parts(directory / "parts", PartSizes(**DEMO_VISION), seed=0)
        llm, template = demo_llm(), "chatml"
    else:
        vision, llm = make_random_parts(directory / "parts", PartSizes(
            llm_hidden=128, llm_layers=2, llm_heads=4, llm_kv_heads=4, llm_intermediate=512, vocab_size=400,
            max_positions=2048, **DEMO_VISION), seed=0)
        template = "vicuna_v1"
    torch.manual_seed(0)
    return save_model(build_model(str(vision), str(llm), template=template, model_max_length=2048),
                      directory / "model")


def make_images(directory: Path, n: int) -> list[str]:
    urls = []
    for i in range(n):
        path = directory / f"img{i}.png"
        Image.new("RGB", (64, 48), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)).save(path)
        urls.append(image_data_url(path))
    return urls


# ---- the server under test ---------------------------------------------------------------------------
def _serve_child(checkpoint: str, batch_size: int, prefix_cache_tokens: int, threads: int, stop_at_eos: bool,
                 conn) -> None:
    """Runs in its own process so the clients do not compete with it for the GIL. Unless stop_at_eos,
    replies ignore EOS, so every request generates exactly max_tokens."""
    import uvicorn

    from vinstruct import load
    from vinstruct.serve.api import ServerSettings, bind_socket, create_app
    from vinstruct.serve.assistant import Assistant
    from vinstruct.serve.engine import Engine

    torch.set_num_threads(threads)
    model = load(checkpoint)
    engine = Engine(model, max_batch_size=batch_size, prefix_cache_tokens=prefix_cache_tokens,
                    eos_token_ids=None if stop_at_eos else [])
    app = create_app(Assistant(model, engine, name="bench"), ServerSettings())
    sock = bind_socket("127.0.0.1", 0)
    conn.send(sock.getsockname()[1])
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


@contextlib.contextmanager
def server(checkpoint: Path, batch_size: int, prefix_cache_tokens: int, threads: int, stop_at_eos: bool = False):
    """Yield (base URL, pid) of a server process; stop it afterwards."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve_child, args=(str(checkpoint), batch_size, prefix_cache_tokens,
                                                         threads, stop_at_eos, child), daemon=True)
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


@contextlib.contextmanager
def transformers_server(hf_dir: Path, threads: int, log_path: Path):
    """Yield (base URL, pid) of `transformers serve --continuous-batching` serving `hf_dir`, in its own
    process, its log written to log_path; stop it afterwards."""
    cache = log_path.parent / "hf-cache"  # an empty hub cache: nothing to download, nothing of the user's read
    cache.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    with open(log_path, "a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "transformers.cli.transformers", "serve", "--host", "127.0.0.1", "--port",
             str(port), "--continuous-batching", "--dtype", "float32", "--log-level", "info", str(hf_dir)],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=5).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"transformers serve did not start; its log: {log_path}")
                time.sleep(0.5)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(30)


# ---- clients -------------------------------------------------------------------------------------------
def question(url: str, text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": text}]}]


def stream_once(client, messages, max_tokens, model="bench"):
    """One streamed greedy completion: (latency s, time to first token s, text, usage)."""
    start, first, text, usage = time.perf_counter(), None, "", None
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    end = time.perf_counter()
    return end - start, (first or end) - start, text, usage


def complete_once(client, messages, max_tokens, model="bench"):
    """One plain (non-streamed) greedy completion, in stream_once's shape (TTFT = latency)."""
    start = time.perf_counter()
    reply = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0)
    latency = time.perf_counter() - start
    return latency, latency, reply.choices[0].message.content, reply.usage


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def throughput_round(checkpoint, batch_size: int, clients: int, per_client: int, images, threads: int,
                     stream: bool) -> dict:
    return client_round(lambda: server(checkpoint, batch_size, 8192, threads), clients, per_client, images, stream)


def client_round(open_server, clients: int, per_client: int, images, stream: bool, model: str = "bench") -> dict:
    """`clients` openai clients asking `per_client` questions each of the server `open_server()` starts."""
    ask = stream_once if stream else complete_once
    with open_server() as (url, pid):
        def client_run(k):
            client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=3600)
            asked = [k * per_client + r for r in range(per_client)]  # question i is the same in every mode
            return [(i, ask(client, question(images[i % len(images)], f"question {i}: what is in the picture?"),
                            MAX_TOKENS, model)) for i in asked]

        # A long-running server has the system prompt cached and its first-request costs paid; start from
        # that state in every mode.
        stream_once(openai.OpenAI(base_url=url + "/v1", api_key="none", timeout=3600), question(images[0], "warm up"),
                    4, model)
        cpu_before, start = process_cpu_seconds(pid), time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            asked = [r for rs in pool.map(client_run, range(clients)) for r in rs]
        wall, cpu = time.perf_counter() - start, process_cpu_seconds(pid) - cpu_before
    results = [r for _, r in asked]
    tokens = sum(r[3].completion_tokens for r in results)
    latencies, ttfts = [r[0] for r in results], [r[1] for r in results]
    return {"tok_s": tokens / wall, "tok_cpu_s": tokens / cpu, "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95), "ttft50": percentile(ttfts, 0.5),
            "ttft95": percentile(ttfts, 0.95), "texts": {i: r[2] for i, r in asked},
            "agree": all(len({r[2] for j, r in asked if j == i}) == 1 for i, _ in asked)}


def median_of(rounds: list[dict]) -> dict:
    keys = [k for k in rounds[0] if k not in ("texts", "agree")]
    return {k: statistics.median(r[k] for r in rounds) for k in keys} | {
        "texts": rounds[0]["texts"], "agree": all(r["agree"] for r in rounds)}


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


def model_ceilings(checkpoint, client_counts) -> dict:
    """What batching can gain from the model's own work, measured in this process without HTTP: a request's
    prefill (its image and prompt, as the clients send them) and its MAX_TOKENS decode steps, alone and in a
    batch of each client count. Prefill is compute: batching does not shrink it, so it bounds the speed-up."""
    from vinstruct import load
    from vinstruct.data.encoding import EncodingSpec
    from vinstruct.serve.conversation import prompt_ids

    model = load(str(checkpoint))
    ids = prompt_ids(EncodingSpec.for_model(model), [("human", "<image>\nquestion 0: what is in the picture?")])
    pixels = model.image_processor([Image.new("RGB", (64, 48), (37, 91, 53))])

    def run(batch: int, new_tokens: int) -> float:
        start = time.perf_counter()
        model.generate([ids] * batch, pixels.expand(batch, *pixels.shape[1:]), max_new_tokens=new_tokens,
                       eos_token_ids=[])
        return time.perf_counter() - start

    with torch.inference_mode():
        run(1, 4)  # warm-up
        prefill = statistics.median(run(1, 1) for _ in range(5))
        alone = statistics.median(run(1, MAX_TOKENS) for _ in range(3))
        batched = {n: statistics.median(run(n, MAX_TOKENS) for _ in range(3)) / n for n in client_counts}
    return {"prompt": len(ids), "prefill": prefill, "alone": alone, "batched": batched,
            "ceiling": {n: alone / cost for n, cost in batched.items()}}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def mixed_requests(url: str, images, first: int, count: int, clients: int = 8) -> None:
    """`count` requests of four kinds in turn: plain with an image, streamed with an image, streamed and
    cancelled after the first chunk, text only."""
    def one(k):
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
        kind = k % 4
        if kind == 3:
            client.chat.completions.create(model="bench", messages=[{"role": "user", "content": f"hello {k}"}],
                                           max_tokens=16, temperature=0)
            return
        messages = question(images[k % len(images)], f"request {k}: what is in the picture?")
        if kind == 0:
            client.chat.completions.create(model="bench", messages=messages, max_tokens=16, temperature=0)
            return
        stream = client.chat.completions.create(model="bench", messages=messages, max_tokens=16 if kind == 1 else 200,
                                                temperature=0, stream=True)
        for _ in stream:
            if kind == 2:
                stream.close()  # the client goes away mid-reply: the server cancels the request
                break

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(first, first + count)))


def memory_growth(checkpoint, images, threads: int, total: int) -> tuple[int, int]:
    """Server RSS (bytes) after the first 50 mixed requests and after `total`."""
    with server(checkpoint, 8, 8192, threads) as (url, pid):
        mixed_requests(url, images, 0, 50)
        after_50 = rss_bytes(pid)
        mixed_requests(url, images, 50, total - 50)
        return after_50, rss_bytes(pid)


# ---- against transformers serve -------------------------------------------------------------------------
def against_transformers(checkpoint: Path, args, work: Path, images) -> list[str]:
    """Both servers on the same weights and requests (ours: max_batch_size = clients), stopping at EOS."""
    from vinstruct import load
    from vinstruct.model.convert_hf_export import export_llava_hf

    hf_dir = work / "llava-hf"
    export_llava_hf(load(checkpoint), hf_dir)
    log_path = work / "transformers-serve.log"
    rows = {}
    for clients in CLIENT_COUNTS:
        for stream in (False, True):
            print(f"against transformers serve: {clients} clients, stream={stream}", flush=True)
            ours = client_round(lambda: server(checkpoint, clients, 8192, args.threads, stop_at_eos=True), clients,
                                args.per_client, images, stream)
            theirs = client_round(lambda: transformers_server(hf_dir, args.threads, log_path), clients,
                                  args.per_client, images, stream, model=str(hf_dir))
            rows[clients, stream] = ours, theirs
    log = log_path.read_text(errors="replace").splitlines()
    fallback = next((line.strip() for line in log if "does not support continuous batching" in line), None)
    modes = [line.rsplit("CB:", 1)[1].strip() for line in log if "Request received" in line and "CB:" in line]
    same = {False: [0, 0], True: [0, 0]}  # stream -> [asked, equal]
    for (_, stream), (ours, theirs) in rows.items():
        for i, text in ours["texts"].items():
            same[stream][0] += 1
            same[stream][1] += theirs["texts"].get(i) == text
    lines = [
        "Against `transformers serve --continuous-batching` (transformers' own OpenAI-compatible server) serving "
        "the llava-hf export of the same weights (`vinstruct convert --to llava-hf`), fp32, the same clients "
        f"and image requests, both stopping at EOS (at most {MAX_TOKENS} tokens), greedy. What transformers did "
        "with the requests, from its log: "
        + (f"`{fallback}`" if fallback else "no fallback message")
        + (f"; requests logged `CB: {', '.join(sorted(set(modes)))}` ({len(modes)} requests)." if modes else "."),
        "",
        "| server | clients | tokens/s | tokens per server CPU-s | latency p50 (s) | latency p95 (s) "
        "| streamed tokens/s | TTFT p50 (s) | TTFT p95 (s) | vinstruct / transformers tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for clients in CLIENT_COUNTS:
        (ours, theirs), (ours_s, theirs_s) = rows[clients, False], rows[clients, True]
        for label, r, rs in (("`vinstruct serve`", ours, ours_s), ("`transformers serve`", theirs, theirs_s)):
            ratio = f"**{ours['tok_s'] / theirs['tok_s']:.1f}x**" if r is ours else ""
            lines.append(f"| {label} | {clients} | {r['tok_s']:.1f} | {r['tok_cpu_s']:.1f} | {r['p50']:.2f} | "
                         f"{r['p95']:.2f} | {rs['tok_s']:.1f} | {rs['ttft50']:.2f} | {rs['ttft95']:.2f} | {ratio} |")
    lines += ["", f"Goals: >= 1.5x tokens/s and a p95 time to first token no worse. Identical greedy answers: "
              f"{same[False][1]} of {same[False][0]} plain, {same[True][1]} of {same[True][0]} streamed (transformers' "
              "streamer holds back a reply's last characters while they are an incomplete UTF-8 sequence and does "
              "not send them when the reply ends there, which a random model's byte tokens make happen; its plain "
              "replies keep them, as ours do).", ""]
    return lines


# ---- report --------------------------------------------------------------------------------------------
def measure(size: str, args, tmp: Path) -> list[str]:
    name = SIZES[size]
    checkpoint = make_checkpoint(tmp / size, size)
    images = make_images(tmp, 8)
    modes = [(1, 8)] + [(n, n) for n in CLIENT_COUNTS]  # (max_batch_size, clients)
    rounds = {(mode, stream): [] for mode in modes for stream in (False, True)}
    for round_index in range(args.rounds):
        for mode in modes if round_index % 2 == 0 else modes[::-1]:
            for stream in (False, True):
                print(f"{name}: max_batch_size={mode[0]}, {mode[1]} clients, stream={stream}, "
                      f"round {round_index + 1}", flush=True)
                rounds[mode, stream].append(throughput_round(checkpoint, mode[0], mode[1], args.per_client, images,
                                                             args.threads, stream))
    result = {key: median_of(value) for key, value in rounds.items()}
    serial, serial_stream = result[(1, 8), False], result[(1, 8), True]
    print(f"{name}: 4th-turn time to first token", flush=True)
    reuse, cached, prompt_tokens = fourth_turn_ttft(checkpoint, 1 << 16, args.trials, images, args.threads)
    recompute, _, _ = fourth_turn_ttft(checkpoint, 0, args.trials, images, args.threads)
    lines = [
        f"### {name}",
        "",
        f"Throughput: concurrent clients x {args.per_client} request(s) each x {MAX_TOKENS} tokens, plain "
        f"and streamed, median of {args.rounds} round(s):",
        "",
        "| engine | clients | tokens/s | tokens per server CPU-s | latency p50 (s) | latency p95 (s) "
        "| streamed tokens/s | TTFT p50 (s) | TTFT p95 (s) | tokens/s vs one at a time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        r, rs = result[mode, False], result[mode, True]
        label = "one at a time (max_batch_size=1)" if mode[0] == 1 else f"continuous batching (max_batch_size={mode[0]})"
        lines.append(f"| {label} | {mode[1]} | {r['tok_s']:.1f} | {r['tok_cpu_s']:.1f} | {r['p50']:.2f} | "
                     f"{r['p95']:.2f} | {rs['tok_s']:.1f} | {rs['ttft50']:.2f} | {rs['ttft95']:.2f} | "
                     f"**{r['tok_s'] / serial['tok_s']:.1f}x** |")
    # The same question (same image, same text) must get the same greedy answer in every mode and round.
    same = all(r["agree"] and all(serial["texts"].get(i, text) == text for i, text in r["texts"].items())
               for r in result.values())
    print(f"{name}: the model's own ceiling", flush=True)
    c = model_ceilings(checkpoint, CLIENT_COUNTS)
    lines += [
        "",
        f"Goals: 8 clients >= 4x, 32 clients >= 6x one at a time. Same answers in every mode: "
        f"{'yes' if same else 'NO'}.",
        "",
        f"What batching can gain from the model's own work (measured in the benchmark's process, no HTTP): a "
        f"request ({c['prompt']} prompt tokens with the image, {MAX_TOKENS} new) costs {c['alone'] * 1000:.0f} ms "
        f"alone, of which {c['prefill'] * 1000:.0f} ms prefill; in a batch it costs "
        + ", ".join(f"{c['batched'][n] * 1000:.0f} ms at {n} together" for n in CLIENT_COUNTS)
        + ". The prefill is computation that batching does not shrink, so no server could pass "
        + " and ".join(f"{c['ceiling'][n]:.1f}x at {n} clients" for n in CLIENT_COUNTS)
        + " here, before any HTTP, JSON and image decoding cost.",
        "",
        f"4th turn of a conversation about an image (prompt {prompt_tokens} tokens, {cached} of them reused), "
        f"median time to first token over {args.trials} conversations: prefix reuse **{reuse * 1000:.0f} ms**, "
        f"recompute {recompute * 1000:.0f} ms: **{recompute / reuse:.1f}x** faster (goal >= 2x).",
        "",
    ]
    if size in args.compare_sizes:
        lines += against_transformers(checkpoint, args, tmp / f"{size}-hf", images)
    if size in args.memory_sizes:
        print(f"{name}: memory over {args.memory_requests} mixed requests", flush=True)
        after_50, after_all = memory_growth(checkpoint, images, args.threads, args.memory_requests)
        lines += [f"Server RSS after 50 mixed requests (plain, streamed, cancelled mid-stream, text only; 8 clients): "
                  f"{after_50 / 2**20:.0f} MiB; after {args.memory_requests}: {after_all / 2**20:.0f} MiB "
                  f"(**{(after_all / after_50 - 1) * 100:+.1f} %**, goal within 5 %).", ""]
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, fewer requests (a smoke run)")
    parser.add_argument("--sizes", default="demo,tiny", help="comma-separated: demo, tiny (default: %(default)s)")
    parser.add_argument("--compare", default="demo,tiny",
                        help="sizes also measured against `transformers serve` ('' for none; default: %(default)s)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch threads in the server (default: every CPU, as `vinstruct serve`)")
    args = parser.parse_args(argv)
    args.rounds, args.per_client, args.trials = (1, 1, 2) if args.quick else (1, 2, 3)
    args.memory_sizes, args.memory_requests = ({"tiny"}, 200) if args.quick else ({"demo", "tiny"}, 500)
    args.compare_sizes = set(args.compare.split(",")) if args.compare else set()
    torch.set_num_threads(args.threads)
    lines = [
        "## Serving (`benchmarks/bench_serve.py`)",
        "",
        f"Command: `python benchmarks/bench_serve.py{' --quick' if args.quick else ''}` on {machine()}; "
        f"server in its own process with {args.threads} torch thread(s), clients (openai SDK) in "
        "another, over HTTP on 127.0.0.1. Streamed throughput also pays the clients' per-chunk parsing, which "
        "competes with the server for the same two CPUs. The machine is shared with other jobs, so wall-clock numbers are "
        "noisy; tokens per server CPU-second are less so. fp32, greedy, EOS ignored (every "
        f"reply is exactly {MAX_TOKENS} tokens); vision: random CLIP-style ViT 4x128 on 64x64 images (64 image "
        "tokens), random projector.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            lines += measure(size.strip(), args, Path(tmp))
    write_section("serve", "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
