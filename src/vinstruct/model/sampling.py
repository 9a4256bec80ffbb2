"""Sampling parameters, numerically safe token sampling and the per-row stopping rule.

Shared by the engine (`decoding.py`) and its thin wrapper `generate()` (`generation.py`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from vinstruct.errors import VinstructError

# Below this temperature a row is decoded greedily. Dividing logits by a smaller number overflows float32
# (1e-45 is a subnormal, 1e-46 rounds to 0), and at 1e-5 a logit gap of 1e-4 already weighs e^-10: the
# distribution is a point mass for every difference float32 logits can express.
MIN_TEMPERATURE = 1e-5


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # below MIN_TEMPERATURE (0 included) = greedy
    top_p: float = 1.0  # 0 keeps only the most likely token
    stop: Sequence[str] = field(default_factory=tuple)
    seed: int | None = None

    def check(self) -> None:
        """Raise a VinstructError naming the field whose value is out of range (or not a number)."""
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) \
                or self.max_new_tokens < 1:
            raise VinstructError(f"max_new_tokens must be an integer of at least 1, got {self.max_new_tokens!r}")
        if not _finite_number(self.temperature) or self.temperature < 0:
            raise VinstructError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not _finite_number(self.top_p) or not 0 <= self.top_p <= 1:
            raise VinstructError(f"top_p must be a number between 0 and 1, got {self.top_p!r}")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise VinstructError(f"stop must be a list of non-empty strings, got {self.stop!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not -(2**63) <= self.seed < 2**64):
            raise VinstructError(f"seed must be an integer in [-2**63, 2**64), got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature < MIN_TEMPERATURE


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Generation:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int


# on_token(row, text_delta): called as text becomes final for a row (streaming).
TokenCallback = Callable[[int, str], None]


def filter_top_p(probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Zero out tokens outside the smallest set whose mass reaches top_p (per row).

    The most likely token always stays, so a top_p of 0 (or one too small for float32) still leaves a
    distribution to sample from instead of all zeros.
    """
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs
    outside = mass_before >= top_p.unsqueeze(-1)
    outside[..., 0] = False
    sorted_probs = sorted_probs.masked_fill(outside, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs)


def sampling_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """One row's distribution: softmax(logits / temperature), cut to the top-p nucleus (not renormalised).

    The logits are shifted so that their maximum is 0 before dividing: every scaled value is then <= 0,
    so no finite temperature can overflow, and the most likely token keeps probability >= 1/vocab.
    """
    logits = logits.float()
    probs = torch.softmax((logits - logits.max()) / temperature, dim=-1)
    if not bool(torch.isfinite(probs).all()):
        raise FloatingPointError("the model produced non-finite logits (NaN or infinity)")
    if top_p < 1.0:
        probs = filter_top_p(probs.unsqueeze(0), torch.tensor([top_p], dtype=probs.dtype)).squeeze(0)
    return probs


def sample_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One row's next token from its logits ([vocab]): greedy or temperature/top-p sampling."""
    if params.greedy:
        return int(logits.argmax())
    probs = sampling_probs(logits, params.temperature, params.top_p)
    return int(torch.multinomial(probs, 1, generator=generator))


def choose_tokens(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
) -> torch.Tensor:
    """Greedy for rows with temperature below MIN_TEMPERATURE, temperature/top-p sampling for the others."""
    chosen = logits.argmax(dim=-1)
    for row, p in enumerate(params):
        if not p.greedy:
            chosen[row] = sample_token(logits[row], p, generators[row])
    return chosen


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long)
            mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


def default_eos_ids(tokenizer) -> list[int]:
    """The ids that end a reply when the caller names none: the tokenizer's EOS, if any."""
    if tokenizer is None or tokenizer.eos_token_id is None:
        return []
    return [tokenizer.eos_token_id]


def seeded_generator(seed: int | None, device) -> torch.Generator | None:
    """A private random stream for one row (None: the global one), so seeded rows reproduce in any batch."""
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def accepts_logits_to_keep(llm) -> bool:
    return "logits_to_keep" in inspect.signature(llm.forward).parameters


class RowState:
    """Decoded text, stop-string detection and streaming hold-back for one row: the one stopping rule.

    Text is decoded incrementally (a short window of recent tokens per step, not the whole reply), so a
    step costs the same at token 10 and at token 1000.
    """

    def __init__(self, tokenizer, params: SamplingParams, eos_ids: set[int]):
        self.tokenizer = tokenizer
        self.params = params
        self.eos_ids = eos_ids
        self.ids: list[int] = []
        self.text = ""
        self.emitted = 0
        self.finish_reason: str | None = None
        self._window = 0  # ids[_window:_read] decode to the text's tail already in self.text
        self._read = 0

    def push(self, token_id: int) -> None:
        if token_id in self.eos_ids:
            self.finish_reason = "stop"
            return
        self.ids.append(token_id)
        searched_to = len(self.text)
        self._decode_new()
        for stop in self.params.stop:
            cut = self.text.find(stop, max(0, searched_to - len(stop) + 1))
            if cut != -1:
                self.text = self.text[:cut]
                self.finish_reason = "stop"
                return
        if len(self.ids) >= self.params.max_new_tokens:
            self.finish_reason = "length"
            self.finish_text()

    def _decode_new(self) -> None:
        """Append the text the newest token completes. A window that starts a few tokens back keeps
        byte-level merges and leading-space rules right; an incomplete UTF-8 sequence waits for more."""
        if self.tokenizer is None:
            return
        before = self.tokenizer.decode(self.ids[self._window:self._read], skip_special_tokens=True)
        after = self.tokenizer.decode(self.ids[self._window:], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before):]
            self._window, self._read = self._read, len(self.ids)

    def finish_text(self) -> None:
        """At the end, text still held back for an incomplete character is decoded as it stands."""
        if self.tokenizer is None or self._read == len(self.ids) or self.finish_reason != "length":
            return
        before = self.tokenizer.decode(self.ids[self._window:self._read], skip_special_tokens=True)
        after = self.tokenizer.decode(self.ids[self._window:], skip_special_tokens=True)
        self.text += after[len(before):]
        self._window = self._read = len(self.ids)

    def new_text(self) -> str:
        """Text that is now final: everything but a tail that might start a stop string."""
        end = len(self.text) if self.finish_reason else max(self.emitted, len(self.text) - self._open_tail())
        delta = self.text[self.emitted:end]
        self.emitted = end
        return delta

    # A tail with more candidate starts than this (e.g. "aaaa..." against a stop "aaaa...b") is held back
    # whole rather than checked start by start: bounded work per token whatever the stop strings.
    MAX_TAIL_CANDIDATES = 64

    def _open_tail(self) -> int:
        """Length of the longest tail of the text that is the beginning of a stop string (it may still become
        one, so it must not be sent yet). Only that is held back: a reply whose text cannot start a stop
        string streams at once, rather than a stop string's length behind."""
        text, held = self.text, 0
        for stop in self.params.stop:
            begin = max(0, len(text) - len(stop) + 1)
            start, candidates = text.find(stop[0], begin), 0
            while start != -1 and len(text) - start > held:
                candidates += 1
                if candidates > self.MAX_TAIL_CANDIDATES:
                    held = max(held, len(text) - begin)
                    break
                if stop.startswith(text[start:]):
                    held = len(text) - start
                    break
                start = text.find(stop[0], start + 1)
        return held
