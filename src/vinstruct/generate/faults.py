"""Injected latency and faults for an OpenAI-compatible endpoint (to test clients against).

A FaultPlan draws, per request and reproducibly from its seed, one of:
  429        rate limited, with Retry-After / retry-after-ms headers
  500        internal server error
  timeout    the server holds the request for `hang_s` seconds (longer than a client's timeout)
  malformed  a 200 whose body is cut-off JSON
  truncated  a 200 whose completion is cut in half, finish_reason "length"
  slow       an extra `slow_ms` of latency, then a normal answer
Every request also waits `latency_ms` first (a stand-in for a remote model's think time).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field

from vinstruct.errors import VinstructError

FAULT_KINDS = ("429", "500", "timeout", "malformed", "truncated", "slow")


@dataclass
class FaultPlan:
    latency_ms: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)
    retry_after_s: float = 0.05
    hang_s: float = 5.0
    slow_ms: float = 300.0
    seed: int = 0
    sequence: list[str] = field(default_factory=list)  # faults for the first requests, in order ("ok" = none)
    counts: Counter = field(default_factory=Counter)  # faults injected so far, by kind

    def __post_init__(self):
        for kind, rate in self.rates.items():
            if kind not in FAULT_KINDS:
                raise VinstructError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
            if not 0 <= rate <= 1:
                raise VinstructError(f"fault rate for {kind!r} must be between 0 and 1, got {rate}")
        for kind in self.sequence:
            if kind not in FAULT_KINDS + ("ok",):
                raise VinstructError(f"unknown fault kind {kind!r} in sequence; expected one of {', '.join(FAULT_KINDS)}, ok")
        if sum(self.rates.values()) > 1:
            raise VinstructError(f"fault rates add up to {sum(self.rates.values()):.2f}; they must add up to at most 1")
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.latency_ms > 0 or any(self.rates.values()) or bool(self.sequence)

    def draw(self) -> str | None:
        """The fault for the next request, or None for a normal answer."""
        with self._lock:
            if self.sequence:
                kind = self.sequence.pop(0)
                self.counts[kind if kind != "ok" else "none"] += 1
                return None if kind == "ok" else kind
            roll, edge = self._rng.random(), 0.0
            for kind in FAULT_KINDS:
                edge += self.rates.get(kind, 0.0)
                if roll < edge:
                    self.counts[kind] += 1
                    return kind
            self.counts["none"] += 1
            return None


def parse_fault_rates(spec: str | None) -> dict[str, float]:
    """'429=0.1,500=0.05,timeout=0.02' -> {'429': 0.1, ...}."""
    rates: dict[str, float] = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        kind, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            rates[kind.strip()] = float(value)
        except ValueError:
            raise VinstructError(f"--faults: expected KIND=RATE pairs like '429=0.1,500=0.05', got {part.strip()!r}") from None
    return rates
