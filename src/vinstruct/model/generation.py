"""Batched autoregressive generation with a KV cache, for LlavaModel.

Prompts are token-id lists (image tokens already expanded), left-padded into one
batch; images are encoded once in the prefill step. Each row has its own
sampling parameters, stop strings and streaming callback output, so the serving
engine can batch unrelated requests.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from vinstruct.model.llava import positions_from_mask


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    stop: Sequence[str] = field(default_factory=tuple)
    seed: int | None = None


@dataclass
class Generation:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int


# on_token(row, text_delta): called as text becomes final for a row (streaming).
TokenCallback = Callable[[int, str], None]


def filter_top_p(probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Zero out tokens outside the smallest set whose mass reaches top_p (per row)."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p.unsqueeze(-1), 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs)


def choose_tokens(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
) -> torch.Tensor:
    """Greedy for rows with temperature 0, temperature/top-p sampling for the others."""
    chosen = logits.argmax(dim=-1)
    for row, p in enumerate(params):
        if p.temperature <= 0:
            continue
        probs = torch.softmax(logits[row].float() / p.temperature, dim=-1)
        if p.top_p < 1.0:
            probs = filter_top_p(probs.unsqueeze(0), torch.tensor([p.top_p])).squeeze(0)
        chosen[row] = torch.multinomial(probs, 1, generator=generators[row]).squeeze(0)
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


def _accepts_logits_to_keep(llm) -> bool:
    return "logits_to_keep" in inspect.signature(llm.forward).parameters


class _RowState:
    """Decoded text, stop-string detection and streaming hold-back for one row."""

    def __init__(self, tokenizer, params: SamplingParams, eos_ids: set[int]):
        self.tokenizer = tokenizer
        self.params = params
        self.eos_ids = eos_ids
        self.ids: list[int] = []
        self.text = ""
        self.emitted = 0
        self.finish_reason: str | None = None
        self.holdback = max((len(s) for s in params.stop), default=1) - 1

    def push(self, token_id: int) -> None:
        if token_id in self.eos_ids:
            self.finish_reason = "stop"
            return
        self.ids.append(token_id)
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True) if self.tokenizer else ""
        for stop in self.params.stop:
            cut = self.text.find(stop)
            if cut != -1:
                self.text = self.text[:cut]
                self.finish_reason = "stop"
                return
        if len(self.ids) >= self.params.max_new_tokens:
            self.finish_reason = "length"

    def new_text(self) -> str:
        """Text that is now final: everything but a tail that might start a stop string."""
        end = len(self.text) if self.finish_reason else max(self.emitted, len(self.text) - self.holdback)
        # Never emit half of a multi-byte character that the next token completes.
        while end > self.emitted and self.text[end - 1] == "\ufffd" and not self.finish_reason:
            end -= 1
        delta = self.text[self.emitted:end]
        self.emitted = end
        return delta


@torch.no_grad()
def generate(
    model,
    prompts: Sequence[Sequence[int]],
    pixel_values: torch.Tensor | None = None,
    params: SamplingParams | Sequence[SamplingParams] | None = None,
    on_token: TokenCallback | None = None,
    eos_token_ids: Sequence[int] | None = None,
    image_features: torch.Tensor | None = None,
    **overrides,
) -> list[Generation]:
    """Generate continuations for a batch of prompts.

    `params` may be one SamplingParams for all rows or one per row; keyword
    overrides (max_new_tokens=..., temperature=...) build a shared one.
    """
    if not prompts:
        return []
    if params is None:
        params = SamplingParams(**overrides)
    if isinstance(params, SamplingParams):
        params = [params] * len(prompts)
    tokenizer = model.tokenizer
    if eos_token_ids is None:
        eos_token_ids = [tokenizer.eos_token_id] if tokenizer is not None and tokenizer.eos_token_id is not None else []
    eos = set(eos_token_ids)
    pad_id = next(iter(eos), 0)
    device = model.device
    generators = []
    for p in params:
        if p.seed is None:
            generators.append(None)
        else:
            g = torch.Generator(device=device)
            g.manual_seed(p.seed)
            generators.append(g)

    input_ids, attention_mask = left_pad(prompts, pad_id, device)
    rows = [_RowState(tokenizer, p, eos) for p in params]
    cache = DynamicCache()
    extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(model.llm) else {}
    out = model(
        input_ids,
        attention_mask=attention_mask,
        pixel_values=None if pixel_values is None else pixel_values.to(device),
        image_features=image_features,
        past_key_values=cache,
        position_ids=positions_from_mask(attention_mask),
        use_cache=True,
        **extra,
    )
    positions = attention_mask.sum(-1, keepdim=True) - 1
    logits = out.logits[:, -1, :]
    max_steps = max(p.max_new_tokens for p in params)
    for _ in range(max_steps):
        next_ids = choose_tokens(logits.float(), params, generators)
        for row, state in enumerate(rows):
            if state.finish_reason is None:
                state.push(int(next_ids[row]))
                if on_token is not None:
                    delta = state.new_text()
                    if delta:
                        on_token(row, delta)
            if state.finish_reason is not None:
                next_ids[row] = pad_id
        if all(state.finish_reason for state in rows):
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(rows), 1)], dim=1)
        positions = positions + 1
        out = model.llm(
            input_ids=next_ids.unsqueeze(-1),
            attention_mask=attention_mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1, :]
    results = []
    for row, (state, prompt) in enumerate(zip(rows, prompts)):
        if state.finish_reason is None:
            state.finish_reason = "length"
        if on_token is not None:
            delta = state.new_text()  # flush the held-back tail
            if delta:
                on_token(row, delta)
        results.append(Generation(state.ids, state.text, state.finish_reason, len(prompt)))
    return results
