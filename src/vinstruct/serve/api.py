"""OpenAI-compatible HTTP API (FastAPI): chat completions with images, streaming, limits, auth.

Routes: POST /v1/chat/completions, GET /v1/models, GET /v1/models/{id}, GET /health,
GET /openapi.json. Requests go to the shared engine; the engine thread reports back
through `loop.call_soon_threadsafe`, so waiting for tokens never blocks the event loop.
Every failure ends only its own request: bad input is a 4xx naming the field, anything
unexpected a JSON 500, and the connection stays open for the client's next request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import socket
import time
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vinstruct.errors import VinstructError
from vinstruct.serve import protocol
from vinstruct.serve.assistant import Assistant
from vinstruct.serve.body import MAX_DEPTH, parse_json_body
from vinstruct.serve.engine import ContextLengthError
from vinstruct.serve.images import ImageInputError, ImagePolicy, load_image_url
from vinstruct.serve.openapi import openapi_document
from vinstruct.serve.protocol import ApiError, Limits

log = logging.getLogger("uvicorn.error")


@dataclass
class ServerSettings:
    api_key: str | None = None
    max_body_bytes: int = 20 * 1024 * 1024
    max_concurrent: int = 64  # requests admitted at once (running or queued in the engine)
    retry_after_s: int = 1
    max_request_pixels: int = 4 * 4096 * 4096  # all images of one request together, as processed
    max_json_depth: int = MAX_DEPTH
    limits: Limits = field(default_factory=Limits)
    images: ImagePolicy = field(default_factory=ImagePolicy)


def _check_auth(request: Request, settings: ServerSettings) -> None:
    if settings.api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
    if not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
        raise ApiError(401, "incorrect API key provided", code="invalid_api_key")


def error_response(err: ApiError) -> Response:
    """OpenAI's error JSON. ASCII-escaped, so that no text quoted in a message can fail to encode."""
    return Response(json.dumps(err.body()), status_code=err.status, headers=err.headers,
                    media_type="application/json")


class ContainErrors:
    """ASGI middleware: an unexpected exception becomes a JSON 500 for its own request only.

    Starlette's last-resort handler answers and then re-raises, and uvicorn closes the connection on
    an exception, so a keep-alive client's next request would fail too. Caught here, the error ends
    only the request that raised it (and is logged with its traceback).
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as err:
            log.exception("internal error answering %s %s", scope.get("method"), scope.get("path"))
            if started:  # half a response is out: only closing the connection can tell the client
                raise
            await error_response(ApiError(500, f"internal error: {type(err).__name__}: {err}"))(scope, receive, send)


async def _read_json(request: Request, limit: int, max_depth: int):
    """The JSON body, refusing more than `limit` bytes (413) or nesting deeper than `max_depth` (400).
    A body that is too large is still read (up to a cap) so the client sees the 413 instead of a
    broken connection."""
    too_large = ApiError(413, f"request body is larger than the limit of {limit} bytes", code="request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit * 8 + (1 << 20):
        raise too_large
    data, size = bytearray(), 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            data += chunk
        elif size > limit * 8 + (1 << 20):
            break
    if size > limit:
        raise too_large
    return await asyncio.to_thread(parse_json_body, bytes(data), max_depth)  # up to a second for 20 MB


def _images(chat: protocol.ChatRequest, settings: ServerSettings, processor) -> list:
    images, pixels = [], 0
    for where, url in chat.image_urls:
        image = load_image_url(url, where, settings.images, processor)
        pixels += processor.working_pixels(image.width, image.height)
        if pixels > settings.max_request_pixels:
            raise ImageInputError(f"the request's images hold more than {settings.max_request_pixels} pixels "
                                  "together", status=413, code="image_too_large")
        images.append(image)
    return images


class _Submission:
    """n handles for one request, their events merged into one asyncio queue."""

    def __init__(self, assistant: Assistant, chat: protocol.ChatRequest, prompt_ids, pixel_values):
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.handles = []
        for i in range(chat.n):
            seed = None if chat.params.seed is None else chat.params.seed + i
            params = dataclasses.replace(chat.params, seed=seed)
            listener = (lambda event, i=i: loop.call_soon_threadsafe(self.queue.put_nowait, (i, event)))
            self.handles.append(assistant.submit(prompt_ids, pixel_values, params, listener))

    def cancel(self) -> None:
        for handle in self.handles:
            if not handle.done:
                handle.cancel()

    @property
    def cached_tokens(self) -> int:
        return self.handles[0].cached_tokens


def _prepare(assistant: Assistant, chat: protocol.ChatRequest, settings: ServerSettings):
    """Decode images and encode the prompt (runs in a worker thread: it is CPU work)."""
    try:
        images = _images(chat, settings, assistant.model.image_processor)
        prompt_ids = assistant.prompt_ids(chat.turns, chat.system)
        pixel_values = assistant.model.image_processor(images) if images else None
    except ImageInputError as err:
        raise ApiError(err.status, str(err), code=err.code) from None
    except (VinstructError, ValueError) as err:  # ValueError: a conversation the chat template cannot hold
        raise ApiError(400, str(err), "messages") from None
    room = assistant.context_length - len(prompt_ids)
    if not chat.max_tokens_given and 0 < room < chat.params.max_new_tokens:
        chat.params = dataclasses.replace(chat.params, max_new_tokens=room)
    needed = len(prompt_ids) + chat.params.max_new_tokens
    if needed > assistant.context_length:
        raise ApiError(400, f"the prompt has {len(prompt_ids)} tokens and max_tokens is "
                       f"{chat.params.max_new_tokens}: {needed} is over the model's context of "
                       f"{assistant.context_length} tokens", "messages", "context_length_exceeded")
    return prompt_ids, pixel_values


def create_app(assistant: Assistant, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    app = FastAPI(title="vinstruct", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(ContainErrors)
    state = {"preparing": 0, "started": int(time.time())}
    spec = openapi_document(assistant.name, settings.limits, settings.max_body_bytes, settings.api_key is not None)

    @app.exception_handler(ApiError)
    async def api_error(_request, err: ApiError):
        return error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, err: StarletteHTTPException):
        return error_response(ApiError(err.status_code, str(err.detail), headers=err.headers))

    @app.exception_handler(Exception)  # only reached if ContainErrors itself fails
    async def server_error(_request, err: Exception):
        return error_response(ApiError(500, f"internal error: {type(err).__name__}: {err}"))

    def model_card() -> dict:
        return {"id": assistant.name, "object": "model", "created": state["started"], "owned_by": "vinstruct",
                "context_length": assistant.context_length}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": assistant.name, "load": assistant.engine.load}

    @app.get("/openapi.json")
    async def openapi():
        return spec

    @app.get("/v1/models")
    async def models(request: Request):
        _check_auth(request, settings)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str, request: Request):
        _check_auth(request, settings)
        if model_id != assistant.name:
            raise ApiError(404, f"the model {model_id!r} does not exist (this server has {assistant.name!r})",
                           "model", "model_not_found")
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        _check_auth(request, settings)
        # Sequences queued or running in the engine, plus requests still being prepared. Counting the
        # engine's own load (not a counter released by the response) cannot leak when a client vanishes.
        if assistant.engine.load + state["preparing"] >= settings.max_concurrent:
            raise ApiError(429, f"the server is busy ({settings.max_concurrent} requests in progress); retry "
                           f"in {settings.retry_after_s} s", code="server_busy",
                           headers={"Retry-After": str(settings.retry_after_s)})
        state["preparing"] += 1
        try:
            body = await _read_json(request, settings.max_body_bytes, settings.max_json_depth)
            chat = protocol.parse_chat_request(body, settings.limits)
            if chat.model != assistant.name:
                raise ApiError(404, f"the model {chat.model!r} does not exist (this server has {assistant.name!r})",
                               "model", "model_not_found")
            prompt_ids, pixel_values = await asyncio.to_thread(_prepare, assistant, chat, settings)
            try:
                submission = _Submission(assistant, chat, prompt_ids, pixel_values)
            except ContextLengthError as err:
                raise ApiError(400, str(err), "messages", "context_length_exceeded") from None
            except VinstructError as err:
                raise ApiError(400, str(err), "messages") from None
        finally:
            state["preparing"] -= 1
        if chat.stream:
            return StreamingResponse(
                _stream(submission, chat, assistant.name),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await _complete(request, submission, chat, assistant.name)

    return app


async def _complete(request: Request, submission: _Submission, chat, model_name: str) -> JSONResponse:
    results: list = [None] * chat.n
    try:
        while any(r is None for r in results):
            try:
                index, (kind, payload) = await asyncio.wait_for(submission.queue.get(), timeout=0.5)
            except TimeoutError:
                if await request.is_disconnected():
                    submission.cancel()
                    return JSONResponse({}, status_code=499)
                continue
            if kind == "done":
                results[index] = payload
            elif kind == "error":
                raise ApiError(500, f"generation failed: {type(payload).__name__}: {payload}")
    finally:
        submission.cancel()
    body = protocol.completion_body(protocol.completion_id(), model_name, results, submission.cached_tokens)
    return JSONResponse(body)


def _sse(body) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def _next_events(queue: asyncio.Queue) -> list:
    """The next event, plus any that are already waiting: when the client reads slower than tokens
    arrive, several tokens travel in one chunk instead of piling up."""
    events = [await queue.get()]
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


async def _stream(submission: _Submission, chat, model_name: str):
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""
    cid, created = protocol.completion_id(), int(time.time())
    chunk = lambda choices, usage=None: _sse(protocol.chunk_body(cid, model_name, created, choices, usage))  # noqa: E731
    try:
        yield "".join(chunk([protocol.delta_choice(i, {"role": "assistant", "content": ""})]) for i in range(chat.n))
        remaining, prompt_tokens, completion_tokens = chat.n, 0, 0
        while remaining:
            text: dict[int, str] = {}
            out = []
            for index, (kind, payload) in await _next_events(submission.queue):
                if kind == "text":
                    text[index] = text.get(index, "") + payload
                    continue
                if index in text:  # the text before a choice's end goes out first
                    out.append(chunk([protocol.delta_choice(index, {"content": text.pop(index)})]))
                if kind == "done":
                    remaining -= 1
                    prompt_tokens = payload.prompt_tokens
                    completion_tokens += len(payload.token_ids)
                    out.append(chunk([protocol.delta_choice(index, {}, payload.finish_reason)]))
                else:
                    out.append(_sse(ApiError(500, f"generation failed: {type(payload).__name__}: {payload}").body()))
                    yield "".join(out)
                    return
            out[:0] = [chunk([protocol.delta_choice(i, {"content": t})]) for i, t in text.items()]
            yield "".join(out)
        if chat.include_usage:
            usage = protocol.usage(prompt_tokens, completion_tokens, submission.cached_tokens)
            yield chunk([], usage)
        yield "data: [DONE]\n\n"
    finally:
        submission.cancel()  # the client went away or the stream ended: free the batch slots


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), so the real address is known before serving starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this. Without it a keep-alive client waits ~40 ms (Nagle + delayed
    # ACK) for every response and every streamed chunk after the first.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise VinstructError(f"cannot listen on {host}:{port} ({err.strerror})") from None
    sock.listen(128)
    return sock


def run_server(app, host: str, port: int, log_level: str = "warning", banner=None) -> None:
    """Serve `app` with uvicorn until interrupted; `banner(url)` is called once the address is bound."""
    sock = bind_socket(host, port)
    shown = f"[{host}]" if ":" in host else host
    if banner is not None:
        banner(f"http://{shown}:{sock.getsockname()[1]}")
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
    server.run(sockets=[sock])
