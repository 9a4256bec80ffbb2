"""A real LLM as the teacher: what its replies break is counted, never a crash, and the audit reads the result.

The slow test serves a small instruction-tuned LM with `transformers serve` on a free loopback port
(started and stopped here) and generates data through it for a few world images.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from vinstruct.audit import audit_file
from vinstruct.cli import main

ROOT = Path(__file__).resolve().parent.parent
SMALL_PROMPTS = ROOT / "configs" / "prompts" / "small_teacher"




def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BrokenModel:
    """A teacher as a small model often is: prose instead of the format, refusals, nothing, rambling."""

    def __init__(self):
        self.calls = 0

    def __call__(self, messages, rng):
        self.calls += 1
        return [
            "The image is a lovely composition of shapes that evoke a sense of balance and harmony in the viewer.",
            "I'm sorry, but I cannot see the image, so I am unable to describe it.",
            "",
            "User: How many shapes are there?\nAssistant: There are two shapes, a red circle and a " + "very " * 200,
            "Question: What is the largest shape?\nAnswer: The largest shape is the circle, which is",
        ][self.calls % 5]


def test_broken_replies_are_dropped_or_trimmed_and_counted_never_a_crash(tiny_world, tmp_path, capsys):
    from vinstruct.generate.scripted import create_app
    from vinstruct.generate.server import running_server

    out = tmp_path / "broken.json"
    with running_server(create_app([BrokenModel()])) as url:
        assert main(["generate", "--coco-dir", str(tiny_world), "--split", "train", "--limit", "10",
                     "--teacher-url", url, "--max-tokens", "60", "--keep-truncated", "--out", str(out),
                     "--no-progress", "--audit"]) == 0
    stats = json.loads(out.with_name("broken.stats.json").read_text())["types"]
    dropped = {reason for s in stats.values() for reason in s["dropped"]}
    assert {"unparsable", "refusal", "empty"} <= dropped
    assert sum(s.get("truncated", 0) for s in stats.values()) > 0
    assert all(s["kept"] + sum(s["dropped"].values()) + sum(s["failed"].values()) == s["tasks"] for s in stats.values())
    kept = json.loads(out.read_text())
    assert all(t["value"].rstrip().endswith((".", "?", "!")) for s in kept for t in s["conversations"] if t["from"] == "gpt")
    assert audit_file(out, tiny_world, "train").stats["audited_samples"] == len(kept)


@pytest.mark.slow
def test_a_real_llm_teacher_served_by_transformers_writes_data_the_audit_reads(packaged_lm_dir, tiny_world, tmp_path):
    port = free_port()
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    # One thread: on a shared 2-core machine a second one mostly spins waiting for a core.
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "transformers.cli.transformers", "serve", "--port", str(port),
                               str(packaged_lm_dir)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=5).read()
                break
            except OSError:
                assert server.poll() is None, "transformers serve exited"
                assert time.monotonic() < deadline, "transformers serve did not start"
                time.sleep(1)
        out = tmp_path / "llm.json"
        assert main(["generate", "--coco-dir", str(tiny_world), "--split", "train", "--limit", "3",
                     "--prompts", str(SMALL_PROMPTS), "--teacher-url", url, "--model", str(packaged_lm_dir),
                     "--max-tokens", "40", "--keep-truncated", "--concurrency", "1", "--timeout", "600",
                     "--max-retries", "1", "--out", str(out), "--no-progress"]) == 0
    finally:
        server.terminate()
        server.wait(timeout=30)
    stats = json.loads(out.with_name("llm.stats.json").read_text())
    for s in stats["types"].values():
        assert s["tasks"] == 3 and not s["failed"], s  # every request answered: kept, or dropped for a reason
        assert s["kept"] + sum(s["dropped"].values()) == 3
    result = audit_file(out, tiny_world, "train")
    assert result.stats["audited_samples"] == stats["samples"]
    assert sum(result.stats["turns"].values()) >= stats["samples"]
