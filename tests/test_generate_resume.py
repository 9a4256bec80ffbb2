"""Crash safety: kill -9 in the middle of a run, run again, get exactly the uninterrupted output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vinstruct.cli import main
from vinstruct.endpoint.journal import Journal
from vinstruct.errors import VinstructError
from vinstruct.generate.faults import FaultPlan
from vinstruct.generate.scripted import create_app
from vinstruct.generate.server import running_server


def generate_args(coco, out, url):
    return ["generate", "--coco-dir", str(coco), "--teacher-url", url, "--types", "conversation,detail,complex",
            "--per-image", "conversation=2", "--boxes", "all", "--concurrency", "2", "--no-progress", "--out", str(out)]


def test_kill_9_then_rerun_equals_an_uninterrupted_run(tiny_coco, tmp_path):
    app = create_app(faults=FaultPlan(latency_ms=150))
    with running_server(app) as url:
        assert main(generate_args(tiny_coco, tmp_path / "clean" / "data.json", url)) == 0
        requests_clean = app.state.requests

        out = tmp_path / "crashed" / "data.json"
        cache = out.with_name("data.cache.jsonl")
        proc = subprocess.Popen([sys.executable, "-m", "vinstruct", *generate_args(tiny_coco, out, url)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (cache.exists() and cache.read_text().count("\n") >= 6):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        assert not out.exists()  # the output appears only when complete
        done_before = len(cache.read_text().splitlines())
        assert done_before < 32

        before = app.state.requests
        assert main(generate_args(tiny_coco, out, url)) == 0
        asked_again = app.state.requests - before
    assert requests_clean == 32
    assert asked_again <= 32 - done_before + 1  # only what was missing (plus a row torn by the kill, if any)
    assert out.read_text() == (tmp_path / "clean" / "data.json").read_text()
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(rows) == len({r["key"] for r in rows}) == 32


def test_journal_cuts_a_torn_last_row_and_refuses_a_second_writer(tmp_path):
    path = tmp_path / "cache.jsonl"
    with Journal(path) as journal:
        journal.append({"key": "a", "text": "one"})
        journal.append({"key": "a", "text": "again"})  # ignored: recorded once
    with open(path, "a") as handle:
        handle.write('{"key": "b", "te')  # the process died mid-write
    journal = Journal(path)
    assert journal.repaired and list(journal.rows) == ["a"] and journal.get("a")["text"] == "one"
    with pytest.raises(VinstructError, match="in use by another running process"):
        Journal(path)
    journal.append({"key": "c", "text": "three"})
    journal.close()
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["a", "c"]


def test_a_journal_with_a_broken_middle_row_names_the_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
    with pytest.raises(VinstructError, match=r"cache.jsonl:2: not a journal row"):
        Journal(path)
