"""Helpers for the evaluation tests: a real OpenAI-compatible server on loopback, and responders."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from vinstruct.data.symbolic import parse_symbolic


def openai_app(responders) -> FastAPI:
    """/v1/chat/completions answered by the first responder that returns text."""
    app = FastAPI()
    app.state.requests = 0

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        app.state.requests += 1
        body = await request.json()
        messages = body["messages"]
        reply = next((r for r in (responder(messages) for responder in responders) if r is not None), None)
        if reply is None:
            return JSONResponse({"error": {"message": "no responder for this request"}}, status_code=400)
        return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body.get("model", "x"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(app):
    """Run `app` with uvicorn on 127.0.0.1 in a thread; yields the base URL (…/v1)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def listing_teacher(messages) -> str | None:
    """Answers reference requests (symbolic text + "Question: ...") by naming the scene's objects."""
    user = messages[-1]["content"]
    if "Question:" not in user:
        return None
    symbolic = user.rsplit("Question:", 1)[0]
    objects = [category for category, _ in parse_symbolic(symbolic).boxes]
    return "The image shows " + ", ".join(f"a {c}" for c in objects) + "."
