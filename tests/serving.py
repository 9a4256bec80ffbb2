"""Helpers for tests that run real servers on 127.0.0.1: a `vinstruct` subprocess or uvicorn in a thread."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

VINSTRUCT = [sys.executable, "-m", "vinstruct"]


def wait_for_http(url: str, process: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}")
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def vinstruct_process(args: list[str], banner: str, env: dict | None = None, log: Path | None = None,
                      max_memory_bytes: int | None = None):
    """Run `vinstruct <args>` (which must print a line matching `banner` with the URL); yield (process, url).

    `max_memory_bytes` caps the process's address space, so a test that makes a server allocate
    too much ends in that server's MemoryError instead of exhausting the machine.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    process = subprocess.Popen(VINSTRUCT + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if max_memory_bytes is not None:
        resource.prlimit(process.pid, resource.RLIMIT_AS, (max_memory_bytes, max_memory_bytes))
    lines: list[str] = []
    try:
        url = None
        for line in process.stdout:
            lines.append(line)
            found = re.search(banner, line)
            if found:
                url = found.group(1)
                break
        if url is None:
            raise RuntimeError("server did not start:\n" + "".join(lines))
        # Keep draining output so the server never blocks on a full pipe.
        threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
        yield process, url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log is not None:
            log.write_text("".join(lines))


@contextlib.contextmanager
def thread_server(app):
    """Serve a FastAPI app with uvicorn in a background thread on a free loopback port; yield its base URL."""
    from vinstruct.serve.api import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (VmRSS) or its peak since start or the last reset (VmHWM), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def peak_rss_growth(pid: int, action) -> int:
    """How far a process's resident memory rose above its level before `action()` ran (bytes).

    The kernel's peak (VmHWM) is reset first (writing 5 to clear_refs), so the peak read afterwards
    belongs to `action` alone; a sampler every 5 ms backs it up where the reset is not allowed.
    """
    before = rss_bytes(pid)
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    sampled, done = [before], threading.Event()

    def sample():
        while not done.is_set():
            sampled.append(rss_bytes(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        action()
    finally:
        done.set()
        sampler.join()
    peak = max(max(sampled), rss_bytes(pid, "VmHWM") if reset else 0)
    return peak - before
