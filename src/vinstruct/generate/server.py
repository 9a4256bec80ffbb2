"""Serving an ASGI app on a background thread (tests, benchmarks, the demo): uvicorn, a free port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from vinstruct.errors import VinstructError


@contextmanager
def running_server(app, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 20.0) -> Iterator[str]:
    """Serve `app` until the block ends; yields the OpenAI-style base URL ('http://host:port/v1').

    port=0 takes a free port. The socket is bound before the thread starts, so the URL works at once.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="vinstruct-server")
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise VinstructError(f"server on {host}:{sock.getsockname()[1]} did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
