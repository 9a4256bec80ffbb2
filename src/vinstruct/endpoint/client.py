"""The one async client for OpenAI-compatible chat-completions endpoints: the teacher pipeline and
every judge talk through it. Built to run for days.

It wraps the official `openai` SDK (AsyncOpenAI with the SDK's own retries off) and adds
what a long generation run needs: bounded concurrency, requests/min and tokens/min
limits, retries with jittered exponential backoff that honour Retry-After (and pause
every request after a 429), a per-request timeout, and token/cost accounting.

Outcomes of one `complete()` / `send()` call:
  Completion         the reply (after any retries)
  RequestFailure     gave up on this request; `.reason` says why (counted, the run goes on)
  FatalEndpointError the endpoint refuses us (bad key, unknown model): stop the run

A request is data: its caller keys it (the key its journal row is stored under) and `body()`
builds the chat-completions JSON; `send(body)` is the live HTTP path, and `read(response)` is
the response path on its own (checks, token and cost accounting), for replies that arrive
another way (a batch job's output file, say).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

import openai
import pydantic
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

from vinstruct.endpoint.ratelimit import RateLimiter
from vinstruct.endpoint.usage import Usage, messages_tokens
from vinstruct.errors import VinstructError

REJECTED_BEFORE_STOP = 5  # this many HTTP 400s before any success: the requests themselves are wrong


class FatalEndpointError(VinstructError):
    """The endpoint rejects every request (authentication, permission, unknown model or URL)."""


class RequestFailure(Exception):
    def __init__(self, reason: str, detail: str, attempts: int, retries: list[str]):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.attempts, self.retries = reason, detail, attempts, retries


class _Retry(Exception):
    def __init__(self, reason: str, detail: str, retry_after: float | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.retry_after = reason, detail, retry_after


@dataclass
class EndpointConfig:
    base_url: str
    model: str
    api_key: str | None = None
    concurrency: int = 8
    rpm: float | None = None
    tpm: float | None = None
    timeout: float = 120.0
    max_retries: int = 6
    backoff_base: float = 1.0  # seconds before the first retry (doubling, jittered)
    backoff_max: float = 60.0
    max_retry_after: float = 300.0  # never sleep longer than this on a server's say-so
    temperature: float | None = None
    max_tokens: int | None = 1024
    price_in: float = 0.0
    price_out: float = 0.0
    extra_body: dict = field(default_factory=dict)
    # A reply cut off at max_tokens is retried by default (a hosted model rarely hits the limit); with a
    # small local model it always does, and the pipeline keeps the reply up to its last full sentence.
    keep_truncated: bool = False

    def __post_init__(self):
        if self.concurrency < 1:
            raise VinstructError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.max_retries < 0:
            raise VinstructError(f"max retries must be 0 or more, got {self.max_retries}")
        if self.timeout <= 0:
            raise VinstructError(f"timeout must be positive, got {self.timeout}")


@dataclass
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    attempts: int = 1
    retries: list[str] = field(default_factory=list)
    seconds: float = 0.0
    model: str = ""


def resolve_api_key(base_url: str, api_key: str | None = None, env_name: str = "OPENAI_API_KEY") -> str:
    """The key for an endpoint: the one given, else the environment variable's; a local (loopback)
    endpoint may go without one. Every teacher and judge option resolves its key here."""
    key = api_key or os.environ.get(env_name)
    if key:
        return key
    host = urlparse(base_url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1") or host.startswith("127."):
        return "unused-local-key"
    raise VinstructError(f"no API key for {base_url}: set {env_name}, or give the key (--judge-key, --teacher-key) "
                         "or the variable that holds it (--api-key-env)")


def retry_after_seconds(headers) -> float | None:
    """Seconds a server asks us to wait: retry-after-ms, or Retry-After as seconds or an HTTP date."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random, so retries spread out."""
    ceiling = min(cap, base * (2 ** attempt))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def _classify(err: Exception) -> _Retry | RequestFailure:
    """Map an SDK exception to a retry (with its reason) or a final failure; raise if fatal."""
    if isinstance(err, openai.APITimeoutError):
        return _Retry("timeout", "no response within the timeout")
    if isinstance(err, openai.APIConnectionError):
        return _Retry("connection", str(err) or "connection failed")
    if isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)):
        raise FatalEndpointError(f"{err.request.url}: HTTP {err.status_code}: {err.message}") from None
    if isinstance(err, openai.APIStatusError):
        wait = retry_after_seconds(err.response.headers)
        if err.status_code == 429:
            return _Retry("rate_limited", err.message, wait)
        if err.status_code >= 500 or err.status_code in (408, 409):
            return _Retry("server_error", f"HTTP {err.status_code}: {err.message}", wait)
        return RequestFailure("bad_request", f"HTTP {err.status_code}: {err.message}", 0, [])
    if isinstance(err, (json.JSONDecodeError, openai.APIResponseValidationError, pydantic.ValidationError)):
        return _Retry("malformed", f"unreadable response body ({type(err).__name__})")
    raise err


class EndpointClient:
    """One per run; `await complete(messages)` from as many coroutines as you like."""

    def __init__(self, config: EndpointConfig, rng: random.Random | None = None, http_client=None, sleep=asyncio.sleep):
        self.config = config
        self._sleep = sleep  # tests pass a recorder to see the delays chosen
        self.usage = Usage(price_in=config.price_in, price_out=config.price_out)
        self.limiter = RateLimiter(config.rpm, config.tpm)
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(config.concurrency)
        self._sdk = AsyncOpenAI(base_url=config.base_url, api_key=resolve_api_key(config.base_url, config.api_key),
                                max_retries=0, timeout=config.timeout, http_client=http_client)

    async def close(self) -> None:
        await self._sdk.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    def body(self, messages: list[dict], seed: int | None = None) -> dict:
        """The JSON body of a chat-completions request."""
        request = {"model": self.config.model, "messages": messages}
        if self.config.max_tokens:
            request["max_tokens"] = self.config.max_tokens
        if self.config.temperature is not None:
            request["temperature"] = self.config.temperature
        if seed is not None:
            request["seed"] = seed
        request.update(self.config.extra_body)
        return request

    def read(self, response) -> Completion:
        """Check a response and count its tokens; malformed or cut-off replies raise _Retry."""
        if not isinstance(response, ChatCompletion) or not response.choices:
            raise _Retry("malformed", f"response is not a chat completion ({type(response).__name__})")
        usage = response.usage
        prompt, completion = (usage.prompt_tokens or 0, usage.completion_tokens or 0) if usage else (0, 0)
        self.usage.add_tokens(prompt, completion)
        choice = response.choices[0]
        text = choice.message.content if choice.message else None
        if text is None:
            raise _Retry("malformed", "the reply has no text content")
        if choice.finish_reason == "length" and not self.config.keep_truncated:
            raise _Retry("truncated", f"reply cut off at the token limit ({completion} tokens)")
        return Completion(text, choice.finish_reason or "stop", prompt, completion, model=response.model or "")

    async def _attempt(self, request: dict, estimate: int) -> Completion:
        await self.limiter.acquire(estimate)
        async with self._slots:
            self.usage.requests += 1
            try:
                # The SDK's documented `post` with the same auth, timeout and error types as
                # `chat.completions.create`, minus its re-validation of every message against typed
                # dicts: our messages are plain strings we built, and that check alone was a quarter
                # of the client's CPU per request (see benchmarks/bench_generate.py).
                response = await self._sdk.post("/chat/completions", body=request, cast_to=ChatCompletion,
                                                 options={"security": {"bearer_auth": True}})
            except Exception as err:  # noqa: BLE001 - sorted out by _classify, unknown errors re-raised
                raise _classify(err) from None
        completion = self.read(response)
        self.limiter.correct_tokens(estimate, completion.prompt_tokens + completion.completion_tokens)
        return completion

    async def complete(self, messages: list[dict], seed: int | None = None) -> Completion:
        """One chat completion, retried until it succeeds or the retry budget is spent."""
        return await self.send(self.body(messages, seed))

    async def send(self, request: dict) -> Completion:
        """POST a chat-completions body, retried until it succeeds or the retry budget is spent."""
        # Only a tokens/min limit needs the estimate (counting costs a regex pass over the prompt).
        estimate = messages_tokens(request["messages"]) + (self.config.max_tokens or 0) if self.limiter.tokens else 0
        retries: list[str] = []
        started = time.monotonic()
        for attempt in range(self.config.max_retries + 1):
            try:
                completion = await self._attempt(request, estimate)
            except _Retry as retry:
                retries.append(retry.reason)
                self.usage.count(self.usage.retries, retry.reason)
                if attempt == self.config.max_retries:
                    raise self._failure(retry.reason, retry.detail, attempt + 1, retries) from None
                await self._sleep_before_retry(attempt, retry)
                continue
            except RequestFailure as failure:
                raise self._failure(failure.reason, failure.detail, attempt + 1, retries) from None
            completion.attempts, completion.retries = attempt + 1, retries
            completion.seconds = time.monotonic() - started
            self.usage.succeeded += 1
            return completion
        raise AssertionError("unreachable: the loop returns on its last attempt")

    def _failure(self, reason: str, detail: str, attempts: int, retries: list[str]) -> RequestFailure:
        self.usage.failed += 1
        self.usage.count(self.usage.failures, reason)
        if reason == "bad_request" and not self.usage.succeeded and self.usage.failures[reason] >= REJECTED_BEFORE_STOP:
            # Every request so far was refused as invalid (an unknown parameter, a too-long prompt template):
            # going on would only count the whole run as failures.
            raise FatalEndpointError(f"{self.config.base_url}: the first {REJECTED_BEFORE_STOP} requests were all "
                                    f"rejected; the last said: {detail}")
        return RequestFailure(reason, detail, attempts, retries)

    async def _sleep_before_retry(self, attempt: int, retry: _Retry) -> None:
        if retry.retry_after is not None:
            # The server named its time: everyone waits that long (plus a little jitter to spread the restart).
            delay = min(retry.retry_after, self.config.max_retry_after)
            delay += self._rng.uniform(0, 0.1 * delay + 0.01)
            self.limiter.pause(delay)
        else:
            delay = backoff_delay(attempt, self.config.backoff_base, self.config.backoff_max, self._rng)
        await self._sleep(delay)


def run_async(coroutine):
    """asyncio.run, on uvloop when it is installed (less CPU per request in the event loop)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)
