"""OpenAI chat-completions wire format: request validation and response/chunk bodies.

Requests are validated by hand so every problem comes back as OpenAI's error
JSON (`{"error": {"message", "type", "param", "code"}}`) with a message naming
the field, instead of a framework's generic validation dump.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from vinstruct.data.templates import IMAGE_MARKER
from vinstruct.model.generation import Generation, SamplingParams

# Accepted only at their neutral value (other unknown fields, like "user", are ignored).
NEUTRAL_DEFAULTS = {"presence_penalty": 0, "frequency_penalty": 0, "logprobs": False, "logit_bias": {}}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        kind = ERROR_TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass
class Limits:
    max_tokens: int = 1024  # per choice
    default_max_tokens: int = 256
    max_n: int = 8
    max_images: int = 4
    max_stop: int = 4


@dataclass
class ChatRequest:
    model: str
    system: str | None
    turns: list[tuple[str, str]]  # ("human" | "gpt", text with <image> markers)
    image_urls: list[tuple[str, str]]  # (field path, url) in marker order
    params: SamplingParams
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    max_tokens_given: bool = True  # False: the default applies, shortened to what the context leaves


def _number(body: dict, name: str, low: float, high: float, default, integer: bool = False):
    value = body.get(name)
    if value is None:
        return default
    kind_ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not kind_ok:
        raise ApiError(400, f"'{name}' must be {'an integer' if integer else 'a number'}, got {value!r}", name)
    if not low <= value <= high:
        raise ApiError(400, f"'{name}' must be between {low} and {high}, got {value}", name)
    return value


def _stop(body: dict, limits: Limits) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "'stop' must be a non-empty string or a list of them", "stop")
    if len(stops) > limits.max_stop:
        raise ApiError(400, f"'stop' may hold at most {limits.max_stop} strings", "stop")
    return stops


def _message_text(message: dict, where: str, images: list[tuple[str, str]], allow_images: bool) -> str:
    content = message.get("content")
    if isinstance(content, str):
        parts = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        parts = content
    else:
        raise ApiError(400, f"{where}.content must be a string or a list of content parts", f"{where}.content")
    pieces = []
    for j, part in enumerate(parts):
        here = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if IMAGE_MARKER in part["text"]:
                raise ApiError(400, f"{here}.text contains {IMAGE_MARKER!r}; send images as image_url parts", here)
            pieces.append(part["text"])
        elif kind == "image_url" and allow_images:
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str):
                raise ApiError(400, f"{here}.image_url.url must be a string", f"{here}.image_url.url")
            images.append((f"{here}.image_url.url", url))
            pieces.append(IMAGE_MARKER)
        elif kind == "image_url":
            raise ApiError(400, f"{here}: images are only accepted in user messages", here)
        else:
            raise ApiError(400, f"{here}: expected a part of type 'text' or 'image_url'", here)
    return "\n".join(pieces)


def _turns(messages, limits: Limits) -> tuple[str | None, list[tuple[str, str]], list[tuple[str, str]]]:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", "messages")
    system, turns, images = None, [], []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"{where} must be an object", where)
        role = message.get("role")
        if role in ("system", "developer"):
            text = _message_text(message, where, images, allow_images=False)
            system = text if system is None else system + "\n" + text
            continue
        if role not in ("user", "assistant"):
            raise ApiError(400, f"{where}.role must be system, user or assistant, got {role!r}", f"{where}.role")
        ours = "human" if role == "user" else "gpt"
        text = _message_text(message, where, images, allow_images=role == "user")
        if turns and turns[-1][0] == ours:  # consecutive messages of one role read as one turn
            turns[-1] = (ours, turns[-1][1] + "\n" + text)
        elif not turns and ours == "gpt":
            raise ApiError(400, f"{where}: the conversation must start with a user message", "messages")
        else:
            turns.append((ours, text))
    if not turns or turns[-1][0] != "human":
        raise ApiError(400, "the last message must come from the user", "messages")
    if len(images) > limits.max_images:
        raise ApiError(400, f"{len(images)} images in the request; this server accepts at most {limits.max_images}",
                       "messages", "too_many_images")
    return system, turns, images


def parse_chat_request(body, limits: Limits) -> ChatRequest:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    if not isinstance(body.get("model"), str):
        raise ApiError(400, "'model' is required (a string; see GET /v1/models)", "model")
    for name, neutral in NEUTRAL_DEFAULTS.items():
        if body.get(name) not in (None, neutral):
            raise ApiError(400, f"'{name}' is not supported by this server", name, "unsupported_parameter")
    for name in ("tools", "functions", "tool_choice", "response_format", "audio", "modalities"):
        if body.get(name) not in (None, [], {"type": "text"}, ["text"], "none"):
            raise ApiError(400, f"'{name}' is not supported by this server", name, "unsupported_parameter")
    system, turns, images = _turns(body.get("messages"), limits)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    max_tokens = _number({name: max_tokens}, name, 1, limits.max_tokens, limits.default_max_tokens, integer=True)
    seed = _number(body, "seed", -(2**63), 2**63 - 1, None, integer=True)
    params = SamplingParams(
        max_new_tokens=max_tokens,
        temperature=float(_number(body, "temperature", 0, 2, 1.0)),
        top_p=float(_number(body, "top_p", 0, 1, 1.0)),
        stop=_stop(body, limits),
        seed=seed,
    )
    stream = False if body.get("stream") is None else body["stream"]
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", "stream_options")
    return ChatRequest(
        model=body["model"], system=system, turns=turns, image_urls=images, params=params,
        n=_number(body, "n", 1, limits.max_n, 1, integer=True), stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        max_tokens_given=body.get("max_completion_tokens", body.get("max_tokens")) is not None,
    )


# ---- responses ------------------------------------------------------------------------------------
def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def completion_body(cid: str, model: str, generations: list[Generation], cached_tokens: int) -> dict:
    choices = [
        {"index": i, "message": {"role": "assistant", "content": g.text}, "finish_reason": g.finish_reason,
         "logprobs": None}
        for i, g in enumerate(generations)
    ]
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model, "choices": choices,
        "usage": usage(generations[0].prompt_tokens, sum(len(g.token_ids) for g in generations), cached_tokens),
    }


def chunk_body(cid: str, model: str, created: int, choices: list[dict], usage_body: dict | None = None) -> dict:
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
    if usage_body is not None:
        body["usage"] = usage_body
    return body


def delta_choice(index: int, delta: dict, finish_reason: str | None = None) -> dict:
    return {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
