"""The generation engine behind chat, the HTTP API and the web UI.

One scheduler thread owns the model. Requests are queued by `submit` from any
thread; between decode steps the scheduler admits waiting requests (up to
`max_batch_size` sequences in flight), prefills them together, and from then on
every step advances all sequences at once. A request that arrives while others
are decoding joins at the next step instead of waiting for the batch to drain.

Each request has its own sampling parameters, seed, stop strings and stream of
text deltas, and can be cancelled at any time. A request that fails (its sampling,
its text, or the prefill it joined) fails alone: the rest of the batch goes on.
Finished sequences leave their key/value cache in a `PrefixStore`, so the next
turn of a conversation only computes its new tokens.

Greedy outputs equal `vinstruct.model.generation.generate`'s token for token:
the same forward passes run over the same real tokens and positions; only the
amount of masked padding differs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from vinstruct.errors import VinstructError
from vinstruct.model.generation import (
    Generation,
    RowState,
    SamplingParams,
    accepts_logits_to_keep,
    default_eos_ids,
    left_pad,
    sample_token,
    seeded_generator,
)
from vinstruct.model.llava import positions_from_mask
from vinstruct.serve.kvbatch import KVBatch
from vinstruct.serve.prefix import PrefixStore, image_fingerprint, image_starts
from vinstruct.serve.request import Event, RequestHandle


class ContextLengthError(VinstructError):
    """The prompt plus the requested reply does not fit the model's context."""


def context_length(model) -> int:
    limits = [model.config.model_max_length, getattr(model.llm.config, "max_position_embeddings", None)]
    return min(x for x in limits if x)


@dataclass
class _Row:
    """A sequence in the running batch."""

    handle: RequestHandle
    state: RowState
    generator: torch.Generator | None
    fed: list[int]  # ids whose keys/values are in the cache
    pending: int = -1  # sampled, not yet fed
    images: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class EngineStats:
    steps: int = 0
    prefills: int = 0
    finished: int = 0
    cancelled: int = 0
    cached_prompt_tokens: int = 0
    computed_prompt_tokens: int = 0
    max_batch: int = 0


class Engine:
    """Dynamic-batching generation over one model; use as a context manager or call `close()`."""

    def __init__(
        self,
        model,
        max_batch_size: int = 8,
        prefix_cache_tokens: int = 8192,
        eos_token_ids: Sequence[int] | None = None,
        max_prefill_tokens: int = 8192,
    ):
        if max_batch_size < 1:
            raise VinstructError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.model = model.eval()
        self.tokenizer = model.tokenizer
        self.max_batch_size = max_batch_size
        self.max_prefill_tokens = max_prefill_tokens
        self.context_length = context_length(model)
        self.eos_ids = set(default_eos_ids(self.tokenizer) if eos_token_ids is None else eos_token_ids)
        self.pad_id = next(iter(self.eos_ids), self.tokenizer.pad_token_id or 0)
        self.prefix_store = PrefixStore(prefix_cache_tokens, model.image_token_id, model.num_image_tokens)
        self.stats = EngineStats()
        self._logits_to_keep = {"logits_to_keep": 1} if accepts_logits_to_keep(model.llm) else {}
        self._waiting: list[RequestHandle] = []
        self._rows: list[_Row] = []
        self._prefilling = 0  # taken off the queue, not yet in the batch
        self._batch = KVBatch.empty(device=model.device)
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="vinstruct-engine", daemon=True)
        self._thread.start()

    # ---- public API -----------------------------------------------------------------------------
    def submit(
        self,
        prompt_ids: Sequence[int],
        images: Sequence | torch.Tensor | None = None,
        params: SamplingParams | None = None,
        listener: Callable[[Event], None] | None = None,
    ) -> RequestHandle:
        """Queue one request. `images`: PIL images or preprocessed pixel values, one per image in the
        prompt. `listener`, if given, receives every event (from the engine thread) instead of the
        handle's own queue."""
        params = params or SamplingParams()
        params.check()
        pixel_values = self._pixel_values(images)
        n_images = 0 if pixel_values is None else pixel_values.shape[0]
        expected_shape = (3, *self.model.image_processor.input_size)
        if pixel_values is not None and tuple(pixel_values.shape[1:]) != expected_shape:
            raise VinstructError(f"pixel values must be [images, {', '.join(map(str, expected_shape))}], "
                                 f"got {list(pixel_values.shape)}")
        n_slots = sum(1 for t in prompt_ids if t == self.model.image_token_id)
        if n_slots != n_images * self.model.num_image_tokens:
            raise VinstructError(
                f"the prompt has {n_slots} image token(s) but {n_images} image(s) x "
                f"{self.model.num_image_tokens} tokens were given"
            )
        if not prompt_ids:
            raise VinstructError("empty prompt")
        if len(prompt_ids) + params.max_new_tokens > self.context_length:
            raise ContextLengthError(
                f"the prompt has {len(prompt_ids)} tokens and {params.max_new_tokens} more were requested, "
                f"but the model's context is {self.context_length} tokens"
            )
        keys = tuple(image_fingerprint(p) for p in pixel_values) if pixel_values is not None else ()
        handle = RequestHandle(prompt_ids, pixel_values, keys, params, listener)
        with self._wakeup:
            if self._stopping:
                raise VinstructError("the engine is shut down")
            self._waiting.append(handle)
            self._wakeup.notify()
        return handle

    def generate(self, prompts, images=None, params=None) -> list[Generation]:
        """Submit several requests at once and wait for all (the batch-prediction entry point)."""
        images = images if images is not None else [None] * len(prompts)
        per_row = params if isinstance(params, (list, tuple)) else [params] * len(prompts)
        handles = [self.submit(p, i, s) for p, i, s in zip(prompts, images, per_row)]
        return [h.result() for h in handles]

    @property
    def load(self) -> int:
        """Requests queued or running."""
        with self._wakeup:
            return len(self._waiting) + self._prefilling + len(self._rows)

    def close(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        self._thread.join()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _pixel_values(self, images) -> torch.Tensor | None:
        if images is None or len(images) == 0:
            return None
        if isinstance(images, torch.Tensor):
            return images
        return self.model.image_processor(list(images))

    # ---- scheduler --------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._stopping and not self._waiting and not self._rows:
                    self._wakeup.wait()
                if self._stopping:
                    break
                admitted = self._take_waiting()
                self._prefilling = len(admitted)
            # Nothing may end this thread: without it every request, now and later, would wait forever.
            try:
                self._drop_cancelled()
                if admitted:
                    self._admit_isolated(admitted)
            except Exception as err:
                self._fail([r.handle for r in self._rows] + admitted, err)
            finally:
                self._prefilling = 0
            if self._rows:
                try:
                    self._decode_step()
                except Exception as err:  # one forward pass for the whole batch: no single row to blame
                    self._fail([r.handle for r in self._rows], err)
        for handle in [r.handle for r in self._rows] + self._waiting:
            handle._fail(VinstructError("the engine was shut down"))

    def _fail(self, handles: list[RequestHandle], err: Exception) -> None:
        """Fail these requests and start the running batch afresh (its cache may be half-updated)."""
        for handle in handles:
            if not handle.done:
                handle._fail(err)
        self._rows, self._batch = [], KVBatch.empty(device=self.model.device)

    def _admit_isolated(self, handles: list[RequestHandle]) -> None:
        """Prefill `handles` together; if that fails, prefill them one by one so only the culprit fails.

        `_admit` changes the running batch only once everything else has worked, so a failed attempt
        leaves the requests already decoding untouched.
        """
        try:
            self._admit(handles)
        except Exception as err:
            for handle in handles:
                if handle.done:
                    continue
                if len(handles) == 1 or handle.first_token_at is not None:  # alone, or already streaming
                    handle._fail(err)
                else:
                    self._admit_isolated([handle])

    def _take_waiting(self) -> list[RequestHandle]:
        """Requests to prefill now: as many as free batch slots and the prefill budget allow."""
        taken, tokens = [], 0
        free = self.max_batch_size - len(self._rows)
        while self._waiting and len(taken) < free:
            handle = self._waiting[0]
            if taken and tokens + len(handle.prompt_ids) > self.max_prefill_tokens:
                break
            self._waiting.pop(0)
            if handle.cancelled:  # cancelled before it was ever prefilled: counted like any cancellation
                self.stats.cancelled += 1
                handle._finish(Generation([], "", "cancelled", len(handle.prompt_ids)))
                continue
            taken.append(handle)
            tokens += len(handle.prompt_ids)
        return taken

    def _drop_cancelled(self) -> None:
        keep = [i for i, row in enumerate(self._rows) if not row.handle.cancelled]
        if len(keep) == len(self._rows):
            return
        for row in self._rows:
            if row.handle.cancelled:
                self.stats.cancelled += 1
                row.handle._finish(self._generation(row, "cancelled"))
        self._rows = [self._rows[i] for i in keep]
        self._batch = self._batch.select(keep) if keep else KVBatch.empty(device=self.model.device)

    @torch.no_grad()
    def _admit(self, handles: list[RequestHandle]) -> None:
        """Prefill new requests together (each continuing its reusable prefix) and add them to the batch."""
        device = self.model.device
        hits = [self.prefix_store.lookup(h.prompt_ids, h.image_keys) for h in handles]
        past = KVBatch.from_rows([hit.kv for hit in hits], [hit.length for hit in hits], device)
        chunks = [h.prompt_ids[hit.length:] for h, hit in zip(handles, hits)]
        chunk_ids, chunk_mask = left_pad(chunks, self.pad_id, device)
        mask = torch.cat([past.mask, chunk_mask], dim=1)
        positions = positions_from_mask(mask)[:, past.length:]
        pixel_values = self._uncached_pixels(handles, hits)
        out = self.model(
            chunk_ids,
            attention_mask=mask,
            pixel_values=pixel_values,
            past_key_values=past.cache,
            position_ids=positions,
            use_cache=True,
            **self._logits_to_keep,
        )
        batch = KVBatch(past.cache, mask)
        rows = []
        for h, hit in zip(handles, hits):
            h.cached_tokens = hit.length
            self.stats.cached_prompt_tokens += hit.length
            self.stats.computed_prompt_tokens += len(h.prompt_ids) - hit.length
            state = RowState(self.tokenizer, h.params, self.eos_ids)
            rows.append(_Row(h, state, seeded_generator(h.params.seed, device), list(h.prompt_ids),
                             images=h.image_keys))
        self.stats.prefills += 1
        survivors = self._sample(rows, out.logits[:, -1, :], batch)
        if survivors:  # the new batch first: the running one changes only if building it worked
            self._batch = KVBatch.concat([self._batch, batch.select(survivors)])
            self._rows = self._rows + [rows[i] for i in survivors]
        self.stats.max_batch = max(self.stats.max_batch, len(self._rows))

    def _uncached_pixels(self, handles, hits) -> torch.Tensor | None:
        """Pixel values of the images whose slots still need computing, in batch order."""
        parts = []
        for h, hit in zip(handles, hits):
            if h.pixel_values is None:
                continue
            starts = image_starts(h.prompt_ids, self.model.image_token_id, self.model.num_image_tokens)
            first_new = sum(1 for s in starts if s < hit.length)
            if first_new < len(starts):
                parts.append(h.pixel_values[first_new:])
        return torch.cat(parts).to(self.model.device) if parts else None

    @torch.no_grad()
    def _decode_step(self) -> None:
        tokens = torch.tensor([[row.pending] for row in self._rows], dtype=torch.long, device=self.model.device)
        positions = self._batch.real_lengths().unsqueeze(-1)
        mask = self._batch.append_column()
        out = self.model.llm(
            input_ids=tokens,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=self._batch.cache,
            use_cache=True,
        )
        for row in self._rows:
            row.fed.append(row.pending)
        self.stats.steps += 1
        survivors = self._sample(self._rows, out.logits[:, -1, :], self._batch)
        if len(survivors) < len(self._rows):
            self._rows = [self._rows[i] for i in survivors]
            self._batch = self._batch.select(survivors) if survivors else KVBatch.empty(device=self.model.device)

    def _sample(self, rows: list[_Row], logits: torch.Tensor, batch: KVBatch) -> list[int]:
        """Choose each row's next token, stream its text, finish rows that are done; return the rest.

        A row that fails here (sampling, decoding its text) fails alone and leaves the batch.
        """
        logits = logits.float()
        greedy = logits.argmax(dim=-1).tolist()
        survivors = []
        for index, row in enumerate(rows):
            try:
                params = row.handle.params
                row.pending = greedy[index] if params.greedy else sample_token(logits[index], params, row.generator)
                row.state.push(row.pending)
                row.handle._text(row.state.new_text())
                if row.state.finish_reason is None:
                    survivors.append(index)
                    continue
                self._finish(row, batch, index)
            except Exception as err:
                if not row.handle.done:
                    row.handle._fail(err)
        return survivors

    def _finish(self, row: _Row, batch: KVBatch, index: int) -> None:
        if self.prefix_store.max_tokens > 0:
            self.prefix_store.insert(row.fed, row.images, batch.row(index))
        self.stats.finished += 1
        row.handle._text(row.state.new_text())
        row.handle._finish(self._generation(row, row.state.finish_reason))

    def _generation(self, row: _Row, reason: str) -> Generation:
        return Generation(list(row.state.ids), row.state.text, reason, len(row.handle.prompt_ids))
