"""The generation engine: prefill and decode steps over sequences that join and leave freely.

`model.generate()` (and through it batch prediction) and the server's scheduler
(serve/engine.py) all drive a `Decoder`, so they run the same forward passes, the
same sampling and the same stopping rule (`RowState`: EOS, a stop string, or
max_new_tokens).

One padding convention. Each sequence's keys/values live in its own row of a
preallocated `SlotCache`, from time 0: the cache itself is never padded. Inside
one forward, the new tokens of several sequences are left-padded into one
[rows, width] tensor, so the last column holds every row's newest token (the LLM
computes logits there only); padding columns write into a scratch time slot and
a 4-D mask lets every token see exactly its own sequence's earlier tokens.
Position ids count real tokens, so a sequence's output does not depend on who
shares the batch.

Admission is bounded twice: at most `max_batch_size` sequences, and at most
`kv_tokens` key/value slots (rows x the longest reservation, prompt +
max_new_tokens). What does not fit waits; what could never fit is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from vinstruct.errors import VinstructError
from vinstruct.model.lean_forward import LeanForward
from vinstruct.model.sampling import RowState, SamplingParams, accepts_logits_to_keep, sample_token
from vinstruct.model.slots import TIME_STEP, LayerKV, SlotCache, kv_geometry


class KVBudgetError(VinstructError):
    """A request needs more key/value memory than the engine may ever hold."""


@dataclass(eq=False)  # rows are found by identity: two sequences with equal fields are still two
class Sequence:
    """One prompt being continued: its ids, sampling, streamed text and place in the cache."""

    prompt_ids: list[int]
    params: SamplingParams
    state: RowState
    generator: torch.Generator | None = None
    on_text: Callable[[str], None] | None = None  # final text deltas, as they appear
    pixel_values: torch.Tensor | None = None  # images whose slots are not cached, in prompt order
    cached: LayerKV | None = None  # keys/values of prompt_ids[:cached_length] (prefix reuse)
    cached_length: int = 0
    tag: object = None  # the caller's (the server keeps its request handle here)
    fed: list[int] = field(default_factory=list)  # ids whose keys/values are in the cache
    pending: int = -1  # sampled, not yet fed
    error: BaseException | None = None

    @property
    def reserve(self) -> int:
        """Cache slots this sequence may need: its prompt and every token it may generate."""
        return len(self.prompt_ids) + self.params.max_new_tokens

    @property
    def finished(self) -> bool:
        return self.error is not None or self.state.finish_reason is not None


def round_time(tokens: int) -> int:
    """The cache's time capacity for sequences up to `tokens` long (plus the scratch slot)."""
    return -(-(tokens + 1) // TIME_STEP) * TIME_STEP


class Decoder:
    """Sequences in one running batch: `admit` prefills newcomers, `step` advances everyone by a token."""

    def __init__(self, model, max_batch_size: int, kv_tokens: int, eos_ids, pad_id: int,
                 on_finish: Callable[[Sequence], None] | None = None, lean: bool = True, kernel: str = "auto"):
        self.model = model
        self.llm = model.llm
        self.max_batch_size = max_batch_size
        self.kv_tokens = kv_tokens
        self.eos_ids = set(eos_ids)
        self.pad_id = pad_id
        self.on_finish = on_finish
        self.device = model.device
        layers, kv_heads, head_dim = kv_geometry(self.llm.config)
        self.cache = SlotCache(layers, kv_heads, head_dim, model.dtype, self.device)
        self.rows: list[Sequence] = []
        self.steps = 0
        self._boolean_mask = getattr(self.llm.config, "_attn_implementation", "sdpa") in ("sdpa", "flex_attention")
        self._keep_last = {"logits_to_keep": 1} if accepts_logits_to_keep(self.llm) else {}
        # The same arithmetic as the transformers forward with far fewer operations per token, where the
        # architecture allows (see lean_forward.py); otherwise the transformers forward.
        # kernel: the lean pass's matrix products ("auto": oneDNN for float32 on a CPU; "aten": transformers'
        # own kernels, logits bit for bit).
        self.lean = LeanForward.build(self.llm, kernel) if lean else None

    # ---- admission ------------------------------------------------------------------------------
    def check_alone(self, reserve: int) -> None:
        """Refuse a request that could not run even with the batch to itself."""
        if round_time(reserve) > self.kv_tokens:
            raise KVBudgetError(
                f"the request needs {reserve} key/value slots (prompt + max_tokens), more than the engine's "
                f"budget of {self.kv_tokens} (kv_tokens); ask for fewer tokens or raise the budget"
            )

    def fits(self, reserves: list[int]) -> bool:
        """Whether sequences needing `reserves` slots can join now without passing either bound."""
        rows = len(self.rows) + len(reserves)
        if rows > self.max_batch_size:
            return False
        longest = max([s.reserve for s in self.rows] + list(reserves), default=0)
        return rows * round_time(longest) <= self.kv_tokens

    def admit(self, newcomers: list[Sequence]) -> list[Sequence]:
        """Prefill newcomers together and sample their first tokens; they join the batch.

        Returns the sequences that finished at once (they have already left). If the forward pass
        raises, the running batch is untouched.
        """
        if not newcomers:
            return []
        first = len(self.rows)
        rows = first + len(newcomers)
        longest = max(s.reserve for s in self.rows + newcomers)
        limit = min(self.kv_tokens, self.max_batch_size * round_time(longest))
        self.cache.reserve(rows, round_time(longest), len(self.rows), limit)
        for offset, seq in enumerate(newcomers):
            if seq.cached_length:
                self.cache.write_row(first + offset, seq.cached, seq.cached_length)
        chunks = [seq.prompt_ids[seq.cached_length:] for seq in newcomers]
        starts = torch.tensor([seq.cached_length for seq in newcomers], device=self.device)
        lengths = torch.tensor([len(c) for c in chunks], device=self.device)
        width = int(lengths.max())
        ids = torch.full((len(chunks), width), self.pad_id, dtype=torch.long)
        for row, chunk in enumerate(chunks):
            ids[row, width - len(chunk):] = torch.tensor(chunk, dtype=torch.long)
        pixels = [s.pixel_values for s in newcomers if s.pixel_values is not None]
        embeds = self.model.embed_inputs(ids.to(self.device), torch.cat(pixels).to(self.device) if pixels else None)
        logits = self._forward(first, embeds, starts, lengths, width)
        for seq in newcomers:
            seq.fed = list(seq.prompt_ids)
            seq.cached = None  # the slot holds it now
        self.rows.extend(newcomers)
        return self._advance(first, logits)

    # ---- decoding -------------------------------------------------------------------------------
    def step(self) -> list[Sequence]:
        """Feed every row its pending token and sample the next; returns the rows that finished (and left)."""
        if not self.rows:
            return []
        tokens = torch.tensor([[s.pending] for s in self.rows], dtype=torch.long, device=self.device)
        starts = torch.tensor([len(s.fed) for s in self.rows], device=self.device)
        embeds = self.llm.get_input_embeddings()(tokens)
        logits = self._forward(0, embeds, starts, torch.ones_like(starts), 1)
        for seq in self.rows:
            seq.fed.append(seq.pending)
        self.steps += 1
        return self._advance(0, logits)

    def _forward(self, first: int, embeds, starts, lengths, width) -> torch.Tensor:
        """One LLM pass over rows first.., new tokens left-padded to `width`; logits of each row's last token."""
        column = torch.arange(width, device=self.device)
        pad = (width - lengths).unsqueeze(1)
        times = starts.unsqueeze(1) + column - pad  # [rows, width]; negative where padding
        real = times >= starts.unsqueeze(1)
        scratch = self.cache.time - 1
        self.cache.bind(first, torch.where(real, times, scratch), int((starts + lengths).max()))
        span = self.cache._span
        positions = times.clamp(min=0)
        visible = torch.arange(span, device=self.device) <= positions.unsqueeze(-1)  # [rows, width, span]
        mask = visible.unsqueeze(1)
        if self.lean is not None and "forward" not in vars(self.llm):  # a forward replaced on the LM is called
            # A decode step of one sequence sees its whole cache: no mask. On a CPU the attention kernel then
            # computes exactly what it computes with an all-visible mask (checked in the tests), only faster.
            everything = width == 1 and embeds.shape[0] == 1 and self.device.type == "cpu"
            return self.lean(embeds, None if everything else mask, positions, self.cache)
        if not self._boolean_mask:
            mask = torch.zeros(mask.shape, dtype=embeds.dtype, device=self.device).masked_fill(
                ~mask, torch.finfo(embeds.dtype).min)
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                       past_key_values=self.cache, use_cache=True, **self._keep_last)
        return out.logits[:, -1, :]

    def _advance(self, first: int, logits: torch.Tensor) -> list[Sequence]:
        """Choose rows first..'s next tokens, stream their text, and let finished rows leave."""
        logits = logits.float()
        greedy = logits.argmax(dim=-1).tolist()
        finished = []
        for index, seq in enumerate(self.rows[first:]):
            try:
                params = seq.params
                seq.pending = greedy[index] if params.greedy else sample_token(logits[index], params, seq.generator)
                seq.state.push(seq.pending)
                if seq.on_text is not None:
                    seq.on_text(seq.state.new_text())  # also when empty: the first call marks the first token
            except Exception as err:  # a row that fails here fails alone
                seq.error = err
            if seq.finished:
                finished.append(seq)
        for seq in finished:
            if seq.error is None and self.on_finish is not None:
                try:
                    self.on_finish(seq)
                except Exception as err:
                    seq.error = err
        self.remove(finished)
        return finished

    # ---- leaving --------------------------------------------------------------------------------
    def kv(self, seq: Sequence, copy: bool = True) -> LayerKV:
        """A running sequence's keys/values ([1, heads, tokens fed, dim] per layer): a copy, or views of its
        slot (valid only until the batch next changes)."""
        return self.cache.read_row(next(i for i, s in enumerate(self.rows) if s is seq), len(seq.fed), copy)

    def remove(self, leaving: list[Sequence]) -> None:
        """Take sequences out of the batch; the last rows move into the freed slots (rows stay contiguous)."""
        for seq in leaving:
            slot = next((i for i, s in enumerate(self.rows) if s is seq), None)
            if slot is None:
                continue
            last = len(self.rows) - 1
            if slot != last:
                self.cache.move_row(last, slot, len(self.rows[last].fed))
                self.rows[slot] = self.rows[last]
            self.rows.pop()

    def clear(self) -> None:
        """Drop every sequence (after a failed forward pass the cache may be half-written)."""
        self.rows = []
