"""An OpenAI-compatible chat-completions server whose replies come from a list of responders.

A responder is any callable `responder(messages, rng) -> str | None`: it gets the
chat messages of a request (dicts with "role" and "content") and a random.Random
seeded for that request, and returns the reply or None when the request is not
its kind. Responders are tried in order; the first reply wins. The default list
holds the scripted teacher only; put more specific responders (a judge) before it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
import uuid
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from vinstruct.endpoint.usage import estimate_tokens, message_text, messages_tokens
from vinstruct.generate.faults import FaultPlan
from vinstruct.generate.scripted.batch_routes import add_batch_routes
from vinstruct.generate.scripted.batches import BatchOptions

Responder = Callable[[list[dict], random.Random], "str | None"]
DEFAULT_MODEL_NAME = "vinstruct-scripted"


def default_responders() -> list[Responder]:
    """The scripted teacher alone (vinstruct.eval.endpoints.scripted_responders puts the judge before it)."""
    from vinstruct.generate.scripted.teacher import TeacherResponder

    return [TeacherResponder()]


def request_rng(seed: int, body: dict) -> random.Random:
    """The same request (messages + its 'seed' field) always gets the same generator."""
    key = json.dumps([seed, body.get("seed"), body.get("messages")], sort_keys=True, ensure_ascii=False)
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def _error_body(status: int, message: str, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "code": status}}


def _error(status: int, message: str, kind: str = "invalid_request_error", headers: dict | None = None) -> JSONResponse:
    return JSONResponse(_error_body(status, message, kind), status_code=status, headers=headers)


def _truncate(text: str, max_tokens: int) -> str:
    """Cut text after max_tokens estimated tokens (what a model does when it hits its limit)."""
    words, out = text.split(" "), []
    for word in words:
        if estimate_tokens(" ".join(out + [word])) > max_tokens:
            break
        out.append(word)
    return " ".join(out)


def _completion(body: dict, model: str, reply: str) -> dict:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    finish = "stop"
    if isinstance(limit, int) and limit > 0 and estimate_tokens(reply) > limit:
        reply, finish = _truncate(reply, limit), "length"
    prompt_tokens, completion_tokens = messages_tokens(body["messages"]), estimate_tokens(reply)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model") or model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _validate(body) -> str | None:
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
            return f"messages[{i}] needs a 'role' of system, user or assistant"
    if body.get("stream"):
        return "streaming is not supported by this server; send stream=false"
    if body.get("n", 1) != 1:
        return "only n=1 is supported"
    return None


async def _fault_response(plan: FaultPlan, kind: str | None) -> Response | None:
    """Apply a drawn fault before answering; returns a response for faults that replace the answer."""
    if kind == "429":
        wait = plan.retry_after_s
        headers = {"retry-after-ms": str(int(wait * 1000)), "retry-after": str(max(1, round(wait)))}
        return _error(429, "rate limit reached (injected)", "rate_limit_error", headers)
    if kind == "500":
        return _error(500, "internal error (injected)", "server_error")
    if kind == "timeout":
        await asyncio.sleep(plan.hang_s)
    if kind == "slow":
        await asyncio.sleep(plan.slow_ms / 1000)
    if kind == "malformed":
        return Response(b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0, "mess',
                        media_type="application/json")
    return None


def create_app(responders: list[Responder] | None = None, seed: int = 0, model_name: str = DEFAULT_MODEL_NAME,
               faults: FaultPlan | None = None, batch: BatchOptions | None = None) -> FastAPI:
    """The server app. responders: tried in order (default: the scripted teacher).

    batch: the Batch API's limits, faults and state directory (scripted/batches.py); the online
    faults (`faults`) never touch batch rows.
    """
    responders = list(responders) if responders is not None else default_responders()
    app = FastAPI(title="vinstruct scripted teacher", docs_url=None, redoc_url=None)
    app.state.faults = faults or FaultPlan()
    app.state.requests = 0
    app.state.in_flight = 0
    app.state.max_in_flight = 0  # the most requests handled at once (tests check client concurrency with it)

    def answer(body) -> tuple[int, dict]:
        """(HTTP status, JSON body) for one chat-completions request; the online and batch paths share it."""
        problem = _validate(body)
        if problem:
            return 400, _error_body(400, problem)
        messages = [{"role": m["role"], "content": message_text(m)} for m in body["messages"]]
        rng = request_rng(seed, body)
        reply = next((r for r in (responder(messages, rng) for responder in responders) if r is not None), None)
        if reply is None:
            return 400, _error_body(400, "no responder recognised this request (the scripted teacher knows the task "
                                         "from the system message: see generate/prompts/README.txt)")
        return 200, _completion(body, model_name, reply)

    app.state.answer = answer
    add_batch_routes(app, answer, batch or BatchOptions())

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "vinstruct"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        app.state.requests += 1
        app.state.in_flight += 1
        app.state.max_in_flight = max(app.state.max_in_flight, app.state.in_flight)
        try:
            return await _answer(request)
        finally:
            app.state.in_flight -= 1

    async def _answer(request: Request):
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "request body is not valid JSON")
        problem = _validate(body)
        if problem:
            return _error(400, problem)
        plan: FaultPlan = app.state.faults
        if plan.latency_ms:
            await asyncio.sleep(plan.latency_ms / 1000)
        kind = plan.draw() if plan.rates or plan.sequence else None
        replaced = await _fault_response(plan, kind)
        if replaced is not None:
            return replaced
        status, completion = answer(body)
        if status != 200:
            return JSONResponse(completion, status_code=status)
        if kind == "truncated":
            content = completion["choices"][0]["message"]["content"]
            completion["choices"][0]["message"]["content"] = content[: len(content) // 2]
            completion["choices"][0]["finish_reason"] = "length"
        return completion

    return app
