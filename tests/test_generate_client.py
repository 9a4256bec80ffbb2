"""The teacher client against a real local endpoint that injects faults: retries, Retry-After, limits, accounting."""

from __future__ import annotations

import asyncio
import email.utils
import random
import socket
import time

import pytest

from vinstruct.endpoint.client import (FatalEndpointError, EndpointClient, EndpointConfig, RequestFailure,
                                       backoff_delay, retry_after_seconds)
from vinstruct.endpoint.ratelimit import TokenBucket
from vinstruct.errors import VinstructError
from vinstruct.generate.faults import FaultPlan, parse_fault_rates
from vinstruct.generate.prompts import PromptSet
from vinstruct.generate.scripted import create_app
from vinstruct.generate.server import running_server

SCENE = "A red circle on a gray background.\n\nred circle: [0.1, 0.1, 0.3, 0.3]\nblue star: [0.6, 0.5, 0.8, 0.7]"


def messages():
    return PromptSet(types=("detail",)).messages("detail", SCENE)


class SleepRecorder:
    """Stands in for asyncio.sleep in the client: records the delays it chose, sleeps a token amount."""

    def __init__(self):
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


def run_client(url: str, calls, **config):
    sleeper = SleepRecorder()

    async def main():
        cfg = EndpointConfig(base_url=url, model="scripted", backoff_base=0.01, **config)
        async with EndpointClient(cfg, rng=random.Random(0), sleep=sleeper) as client:
            results = await asyncio.gather(*(client.complete(messages(), seed=i) for i in range(calls)),
                                           return_exceptions=True)
            return results, client
    results, client = asyncio.run(main())
    return results, client, sleeper


def test_retry_after_headers_are_read_in_all_their_forms():
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after_seconds({"retry-after": later}) <= 30
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_backoff_doubles_with_jitter_and_is_capped():
    rng = random.Random(0)
    for attempt in range(8):
        ceiling = min(10.0, 0.5 * 2 ** attempt)
        delays = [backoff_delay(attempt, 0.5, 10.0, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 40  # jittered, so clients spread out


def test_token_bucket_paces_requests_and_charges_corrections():
    now = [0.0]
    bucket = TokenBucket(600, clock=lambda: now[0])  # 10 per second, a burst of 60
    bucket.take(60)
    assert bucket.wait_time(1) == pytest.approx(0.1)
    now[0] += 0.5
    assert bucket.wait_time(5) == pytest.approx(0.0)
    bucket.adjust(20)  # the request used 20 tokens more than reserved
    assert bucket.wait_time(1) == pytest.approx(1.6)
    assert TokenBucket(6000, clock=lambda: 0.0).wait_time(10**6) == 0.0  # bigger than the bucket: waits for full only


def test_a_429_is_retried_after_the_time_the_server_names_and_pauses_everyone():
    plan = FaultPlan(sequence=["429"], retry_after_s=0.2)
    with running_server(create_app(faults=plan)) as url:
        (completion,), client, sleeper = run_client(url, 1)
    assert completion.attempts == 2 and completion.retries == ["rate_limited"]
    assert 0.2 <= sleeper.delays[0] <= 0.25
    assert client.limiter.paused_until > 0
    assert client.usage.retries == {"rate_limited": 1}


def test_server_errors_bad_bodies_cut_replies_and_timeouts_are_all_retried():
    plan = FaultPlan(sequence=["500", "malformed", "truncated", "timeout"], hang_s=2.0)
    with running_server(create_app(faults=plan)) as url:
        (completion,), client, _ = run_client(url, 1, timeout=0.4)
    assert completion.retries == ["server_error", "malformed", "truncated", "timeout"]
    assert completion.attempts == 5 and completion.finish_reason == "stop"
    assert client.usage.completion_tokens > completion.completion_tokens  # the cut reply's tokens were paid too


def test_a_request_that_keeps_failing_becomes_a_counted_failure():
    plan = FaultPlan(sequence=["500", "500", "500"])
    with running_server(create_app(faults=plan)) as url:
        (failure,), client, _ = run_client(url, 1, max_retries=2)
    assert isinstance(failure, RequestFailure) and failure.reason == "server_error" and failure.attempts == 3
    assert client.usage.failures == {"server_error": 1} and client.usage.failed == 1


def test_a_rejected_request_is_not_retried_and_a_refused_endpoint_stops_the_run():
    with running_server(create_app(responders=[lambda m, r: None])) as url:
        (failure,), client, _ = run_client(url, 1)
        assert isinstance(failure, RequestFailure) and failure.reason == "bad_request" and failure.attempts == 1
        (fatal,), _, _ = run_client(url.replace("/v1", "/nowhere/v1"), 1)
        assert isinstance(fatal, FatalEndpointError) and "404" in str(fatal)


def test_an_unreachable_endpoint_is_a_connection_failure():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (failure,), client, sleeper = run_client(f"http://127.0.0.1:{port}/v1", 1, max_retries=2)
    assert isinstance(failure, RequestFailure) and failure.reason == "connection"
    assert len(sleeper.delays) == 2


def test_concurrency_is_bounded_and_tokens_and_cost_are_counted():
    app = create_app(faults=FaultPlan(latency_ms=100))
    with running_server(app) as url:
        results, client, _ = run_client(url, 12, concurrency=4, price_in=1.0, price_out=2.0)
    assert app.state.max_in_flight == 4
    assert all(r.finish_reason == "stop" for r in results)
    usage = client.usage
    assert usage.requests == usage.succeeded == 12
    assert usage.prompt_tokens == sum(r.prompt_tokens for r in results) > 0
    assert usage.cost == pytest.approx(usage.prompt_tokens / 1e6 + 2 * usage.completion_tokens / 1e6)


def test_fault_specs_and_config_are_checked():
    assert parse_fault_rates("429=0.1, timeout=0.05") == {"429": 0.1, "timeout": 0.05}
    with pytest.raises(VinstructError, match="KIND=RATE"):
        parse_fault_rates("429")
    with pytest.raises(VinstructError, match="unknown fault kind"):
        FaultPlan(rates={"503": 0.1})
    with pytest.raises(VinstructError, match="add up"):
        FaultPlan(rates={"429": 0.7, "500": 0.6})
    with pytest.raises(VinstructError, match="concurrency"):
        EndpointConfig(base_url="http://127.0.0.1/v1", model="m", concurrency=0)


def test_rate_limiter_spaces_requests_and_a_pause_holds_everyone(monkeypatch):
    from vinstruct.endpoint.ratelimit import RateLimiter

    now = [0.0]

    async def fake_sleep(seconds):
        now[0] += seconds  # time passes only when someone waits

    monkeypatch.setattr("vinstruct.endpoint.ratelimit.asyncio.sleep", fake_sleep)
    limiter = RateLimiter(rpm=60, tpm=6000, clock=lambda: now[0])  # 1 request/s (burst 6), 100 tokens/s (burst 600)

    async def main():
        starts = []
        for _ in range(10):
            await limiter.acquire(tokens=50)
            starts.append(now[0])
        limiter.pause(30)
        await limiter.acquire(tokens=50)
        starts.append(now[0])
        return starts

    starts = asyncio.run(main())
    assert starts[:6] == [0.0] * 6  # the burst
    assert starts[6:10] == pytest.approx([1.0, 2.0, 3.0, 4.0])  # then one per second
    assert starts[10] == pytest.approx(34.0)  # nobody starts during a pause
    limiter.correct_tokens(estimated=50, actual=650)  # a request used far more than reserved: later ones wait
    assert limiter.tokens.wait_time(50) == pytest.approx(1.0)  # 550 left - 600 extra = -50: 100 tokens to go


def test_an_endpoint_that_rejects_every_request_stops_the_run():
    with running_server(create_app(responders=[lambda m, r: None])) as url:
        results, client, _ = run_client(url, 8, concurrency=1)
    assert any(isinstance(r, FatalEndpointError) and "were all rejected" in str(r) for r in results)
