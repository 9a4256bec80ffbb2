"""Helpers for tests that run real servers on 127.0.0.1: a `vinstruct` subprocess or uvicorn in a thread."""

from __future__ import annotations

import contextlib
import os
import re
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
def vinstruct_process(args: list[str], banner: str, env: dict | None = None, log: Path | None = None):
    """Run `vinstruct <args>` (which must print a line matching `banner` with the URL); yield (process, url)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    process = subprocess.Popen(VINSTRUCT + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
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
