"""`vinstruct generate --batch` against the scripted teacher's Batch API (real openai SDK, real uvicorn):
the same output as the online mode, a resume after kill -9 that submits nothing twice, and faults
(failing rows, an expired batch) answered by new rounds."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from serving import vinstruct_process

from vinstruct.cli import main
from vinstruct.generate.batch_api import STATE_NAME
from vinstruct.generate.scripted import create_app
from vinstruct.generate.scripted.batches import BatchOptions
from vinstruct.generate.server import running_server

REQUESTS = 32  # 8 images x (conversation x 2, detail, complex)


def generate_args(coco, out, url, *extra):
    return ["generate", "--coco-dir", str(coco), "--teacher-url", url, "--types", "conversation,detail,complex",
            "--per-image", "conversation=2", "--boxes", "all", "--no-progress", "--price-in", "0.15",
            "--price-out", "0.6", "--out", str(out), *extra]


def batch_args(coco, out, url, *extra):
    return generate_args(coco, out, url, "--batch", "--batch-poll", "0.05", *extra)


def journal_keys(out) -> list[str]:
    return [json.loads(line)["key"] for line in out.with_name(out.stem + ".cache.jsonl").read_text().splitlines()]


def stats_of(out) -> dict:
    return json.loads(out.with_name(out.stem + ".stats.json").read_text())


@pytest.fixture(scope="module")
def online_output(tiny_coco, tmp_path_factory):
    """The online mode's output: what every batch run below must reproduce."""
    out = tmp_path_factory.mktemp("online") / "data.json"
    with running_server(create_app(seed=0)) as url:
        assert main(generate_args(tiny_coco, out, url, "--concurrency", "4")) == 0
    return out


def test_batch_output_equals_the_online_output_sample_for_sample(tiny_coco, tmp_path, online_output, capsys):
    out = tmp_path / "data.json"
    with running_server(create_app(seed=0, batch=BatchOptions(max_requests=10))) as url:
        assert main(batch_args(tiny_coco, out, url, "--batch-max-requests", "10")) == 0
        assert out.read_text() == online_output.read_text()
        stats, online = stats_of(out), stats_of(online_output)
        assert stats["batch"]["rounds"] == 1 and len(stats["batch"]["batches"]) == 4  # 32 requests, 10 a file
        assert stats["batch"]["retried_rows"] == 0
        for task, counts in stats["types"].items():  # the same tokens, at half the price
            assert counts["prompt_tokens"] == online["types"][task]["prompt_tokens"]
            assert counts["cost"] == pytest.approx(online["types"][task]["cost"] / 2, abs=1e-6)
        assert "batch API: 32 requests in 4 batches over 1 round(s)" in capsys.readouterr().out

        # The run's batches can be looked at (and cancelled) later from the same output name.
        assert main(["generate", "--teacher-url", url, "--out", str(out), "--batch-status"]) == 0
        status = capsys.readouterr().out
        assert status.count("completed") >= 4 and all(b in status for b in stats["batch"]["batches"])
        assert main(["generate", "--teacher-url", url, "--out", str(out), "--batch-cancel"]) == 0  # nothing to cancel

        # A second run finds every reply in the journal and submits nothing.
        assert main(batch_args(tiny_coco, out, url)) == 0
        assert stats_of(out).get("batch") is None and out.read_text() == online_output.read_text()
    assert len(journal_keys(out)) == len(set(journal_keys(out))) == REQUESTS


SPLIT = ("--batch-max-requests", "12")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_kill_9_while_polling_then_rerun_reuses_the_same_batches(tiny_coco, tmp_path, online_output):
    out, log = tmp_path / "data.json", tmp_path / "teacher.log"
    teacher = ["teacher", "--port", str(free_port()), "--batch-delay", "3"]
    with vinstruct_process(teacher, r"on (http://\S+/v1)", log=log) as (_, url):
        run = subprocess.Popen([sys.executable, "-m", "vinstruct", *batch_args(tiny_coco, out, url, *SPLIT)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        state = tmp_path / "data.batch" / "round-0" / STATE_NAME
        deadline = time.monotonic() + 60
        while not (state.is_file() and all(p["status"] == "in_progress" for p in json.loads(state.read_text())["parts"])):
            assert run.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.02)
        os.kill(run.pid, signal.SIGKILL)
        assert run.wait() == -signal.SIGKILL
        assert not out.exists()
        batch_ids = [p["batch_id"] for p in json.loads(state.read_text())["parts"]]

        assert main(batch_args(tiny_coco, out, url, *SPLIT)) == 0
    created = [line for line in log.read_text().splitlines() if line.startswith("batch created:")]
    assert len(created) == len(batch_ids) == 3  # 32 requests, 12 a file: submitted once, by the killed run
    assert stats_of(out)["batch"]["batches"] == batch_ids
    assert out.read_text() == online_output.read_text()
    assert len(journal_keys(out)) == len(set(journal_keys(out))) == REQUESTS


def test_failed_rows_and_an_expired_batch_are_answered_in_new_rounds(tiny_coco, tmp_path, online_output):
    out = tmp_path / "data.json"
    faults = BatchOptions(fail_rows=0.25, expire=(1,))
    with running_server(create_app(seed=0, batch=faults)) as url:
        assert main(batch_args(tiny_coco, out, url, "--batch-max-requests", "16")) == 0
    batch = stats_of(out)["batch"]
    assert batch["rounds"] >= 2 and batch["retried_rows"] > 0
    assert all(not counts["failed"] for counts in stats_of(out)["types"].values())
    assert out.read_text() == online_output.read_text()
    assert len(journal_keys(out)) == len(set(journal_keys(out))) == REQUESTS


def test_rows_that_fail_in_every_round_are_counted_as_failures(tiny_coco, tmp_path):
    out = tmp_path / "data.json"
    with running_server(create_app(seed=0, batch=BatchOptions(fail_rows=1.0))) as url:
        assert main(batch_args(tiny_coco, out, url, "--batch-retries", "1")) == 0
    stats = stats_of(out)
    assert stats["batch"]["rounds"] == 2 and stats["batch"]["retried_rows"] == REQUESTS
    assert sum(sum(counts["failed"].values()) for counts in stats["types"].values()) == REQUESTS
    assert stats["samples"] == 0 and json.loads(out.read_text()) == []


def test_rows_failing_every_round_are_answered_online_with_the_online_fallback(tiny_coco, tmp_path, online_output,
                                                                              capsys):
    out = tmp_path / "data.json"
    with running_server(create_app(seed=0, batch=BatchOptions(fail_rows=1.0))) as url:
        assert main(batch_args(tiny_coco, out, url, "--batch-retries", "1", "--batch-fallback", "online")) == 0
    stats = stats_of(out)
    assert stats["batch"]["rounds"] == 2 and stats["batch"]["online_rows"] == REQUESTS
    assert stats["batch"]["online_failed"] == 0 and stats["batch"]["online"]["succeeded"] == REQUESTS
    assert sum(counts["fetched"] for counts in stats["types"].values()) == REQUESTS
    assert all(not counts["failed"] for counts in stats["types"].values())
    assert out.read_text() == online_output.read_text()
    assert len(journal_keys(out)) == len(set(journal_keys(out))) == REQUESTS
    assert f"online fallback: {REQUESTS} rows the batches left answered online" in capsys.readouterr().out


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs (not even `except Exception`)."""


def die_after(method, calls: int):
    """`method`, which raises Killed right after its `calls`-th call has done its work."""
    seen = []

    def wrapper(*args, **kwargs):
        result = method(*args, **kwargs)
        seen.append(1)
        if len(seen) == calls:
            raise Killed
        return result

    return wrapper


@pytest.mark.parametrize("phase", ["during an upload", "while ingesting"])
def test_killed_during_upload_or_ingest_then_rerun_submits_nothing_twice(phase, tiny_coco, tmp_path, online_output,
                                                                         monkeypatch):
    import logging

    import openai.resources.files
    from batch_support import CreatedBatches

    from vinstruct.endpoint.journal import Journal

    out, counter, log = tmp_path / "data.json", CreatedBatches(), logging.getLogger("vinstruct.teacher")
    log.addHandler(counter)
    log.setLevel(logging.INFO)
    try:
        with running_server(create_app(seed=0, batch=BatchOptions())) as url:
            with monkeypatch.context() as patch:
                if phase == "during an upload":  # the file reached the server, its id never reached the state file
                    patch.setattr(openai.resources.files.Files, "create", die_after(openai.resources.files.Files.create, 2))
                else:  # ten replies in the journal, the rest not yet
                    patch.setattr(Journal, "append", die_after(Journal.append, 10))
                with pytest.raises(Killed):
                    main(batch_args(tiny_coco, out, url, "--batch-max-requests", "12"))
            assert main(batch_args(tiny_coco, out, url, "--batch-max-requests", "12")) == 0
    finally:
        log.removeHandler(counter)
    assert len(counter.lines) == 3  # 32 requests, 12 a file: each batch created once over both runs
    assert out.read_text() == online_output.read_text()
    assert len(journal_keys(out)) == len(set(journal_keys(out))) == REQUESTS
