"""Requests-per-minute and tokens-per-minute limits, plus a shared pause after a 429.

Each limit is a token bucket refilled continuously at limit/60 per second. Its
capacity is a tenth of the per-minute limit (a six-second burst), so a run starts
promptly without overshooting a per-minute window. A request larger than the
capacity waits for a full bucket and then drives it negative, so big requests still
go through at the right average rate. Token use is reserved from an estimate before
a request and corrected with the real count after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic):
        if per_minute <= 0:
            raise ValueError("a per-minute limit must be positive")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute / 10.0)
        self.level = self.capacity
        self._clock = clock
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_time(self, amount: float) -> float:
        """Seconds until `amount` (capped at the capacity) is available."""
        self._refill()
        missing = min(amount, self.capacity) - self.level
        return max(0.0, missing / self.rate)

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def adjust(self, delta: float) -> None:
        """Charge (positive) or refund (negative) tokens after the fact."""
        self._refill()
        self.level = min(self.capacity, self.level - delta)


class RateLimiter:
    """Waits until a request may start; all coroutines of one event loop share it."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.requests = TokenBucket(rpm, clock) if rpm else None
        self.tokens = TokenBucket(tpm, clock) if tpm else None
        self.paused_until = 0.0
        self.waited = 0.0  # total seconds spent waiting here (reported in stats)

    def pause(self, seconds: float) -> None:
        """Hold every new request for `seconds` (the server said it is overloaded)."""
        self.paused_until = max(self.paused_until, self._clock() + seconds)

    def _wait_time(self, tokens: float) -> float:
        waits = [self.paused_until - self._clock()]
        if self.requests:
            waits.append(self.requests.wait_time(1))
        if self.tokens:
            waits.append(self.tokens.wait_time(tokens))
        return max(waits)

    async def acquire(self, tokens: float = 0) -> None:
        # Check and take happen with no await in between, so coroutines cannot both take the last slot.
        while (delay := self._wait_time(tokens)) > 0:
            self.waited += delay
            await asyncio.sleep(delay)
        if self.requests:
            self.requests.take(1)
        if self.tokens:
            self.tokens.take(tokens)

    def correct_tokens(self, estimated: float, actual: float) -> None:
        if self.tokens:
            self.tokens.adjust(actual - estimated)
