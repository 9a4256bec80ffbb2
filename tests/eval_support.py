"""Helpers for the evaluation tests: the scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

import contextlib
import socket

from vinstruct.generate.scripted import create_app
from vinstruct.generate.server import running_server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(responders):
    """The scripted server (uvicorn, 127.0.0.1, a free port) with these responders; yields its …/v1 URL."""
    with running_server(create_app(responders)) as url:
        yield url
