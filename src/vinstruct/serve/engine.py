"""The generation engine behind chat, the HTTP API and the web UI.

One scheduler thread owns the model and a `Decoder` (vinstruct.model.decoding,
the same engine `model.generate()` and batch prediction run). Requests are queued
by `submit` from any thread; between decode steps the scheduler admits waiting
requests (while the batch has room: `max_batch_size` sequences and `kv_tokens`
key/value slots), prefills them together, and from then on every step advances
all sequences at once. Requests join and leave between steps; a request that does
not fit waits in the queue, one that could never fit is refused at `submit`.

Each request has its own sampling parameters, seed, stop strings and stream of
text deltas, and can be cancelled at any time (its slot is freed before the next
step). A request that fails (its sampling, its text, or the prefill it joined)
fails alone: the rest of the batch goes on. Finished sequences leave their
key/value cache in a `PrefixStore`, so the next turn of a conversation only
computes its new tokens.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from vinstruct.errors import VinstructError
from vinstruct.machine import available_memory, release_free_memory
from vinstruct.model.decoding import Decoder, Sequence as Row
from vinstruct.model.generation import Generation, RowState, SamplingParams, default_eos_ids, pad_token_id, \
    seeded_generator
from vinstruct.model.slots import kv_geometry
from vinstruct.serve.prefix import PrefixStore, image_fingerprint, image_starts
from vinstruct.serve.request import Event, RequestHandle


class ContextLengthError(VinstructError):
    """The prompt plus the requested reply does not fit the model's context."""


def context_length(model) -> int:
    limits = [model.config.model_max_length, getattr(model.llm.config, "max_position_embeddings", None)]
    return min(x for x in limits if x)


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
    """Continuous-batching generation over one model; use as a context manager or call `close()`."""

    def __init__(
        self,
        model,
        max_batch_size: int = 8,
        prefix_cache_tokens: int = 8192,
        eos_token_ids: Sequence[int] | None = None,
        max_prefill_tokens: int = 8192,
        kv_tokens: int | None = None,
    ):
        if max_batch_size < 1:
            raise VinstructError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.model = model.eval()
        self.tokenizer = model.tokenizer
        self.max_batch_size = max_batch_size
        self.max_prefill_tokens = max_prefill_tokens
        self.context_length = context_length(model)
        self.eos_ids = set(default_eos_ids(self.tokenizer) if eos_token_ids is None else eos_token_ids)
        self.kv_tokens = kv_tokens or max_batch_size * (self.context_length + 1)
        if self.kv_tokens < 1:
            raise VinstructError(f"kv_tokens must be at least 1, got {kv_tokens}")
        self.decoder = Decoder(model, max_batch_size, self.kv_tokens, self.eos_ids,
                               pad_token_id(self.tokenizer, self.eos_ids, model), on_finish=self._finished)
        self.prefix_store = PrefixStore(prefix_cache_tokens, model.image_token_id, model.num_image_tokens)
        # The store reserves its whole pool at the first finished reply: refuse a bound that could never fit
        # now, not with a crash in the middle of serving.
        self.prefix_pool_bytes = pool = self.prefix_store.planned_bytes(kv_geometry(model.llm.config), model.dtype)
        free = available_memory(model.device)
        if free is not None and pool > free:
            raise VinstructError(
                f"a prefix cache of {prefix_cache_tokens} tokens needs {pool / 2**20:.0f} MiB of key/value memory, "
                f"more than the {free / 2**20:.0f} MiB available; lower prefix_cache_tokens "
                f"(--prefix-cache-tokens; 0 turns reuse off)")
        self.stats = EngineStats()
        self._waiting: list[RequestHandle] = []
        self._prefilling = 0  # taken off the queue, not yet in the batch
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
        self.decoder.check_alone(len(prompt_ids) + params.max_new_tokens)
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
            return len(self._waiting) + self._prefilling + len(self.decoder.rows)

    @property
    def running(self) -> int:
        """Sequences holding a slot in the running batch."""
        return len(self.decoder.rows)

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
        # Everything this thread does to the decoder (prefill, steps, and removing cancelled rows, which
        # moves K/V rows in place) must run in inference mode: its buffers are inference tensors.
        with torch.inference_mode():
            self._schedule()

    def _schedule(self) -> None:
        worked = False
        while True:
            if worked and not self.decoder.rows:
                with self._wakeup:
                    idle = not self._waiting
                if idle:
                    # Going idle: hand the pages of freed buffers (prefills of every length, a slot cache
                    # grown for a longer request) back to the OS, so a long-running server's resident size
                    # follows what it holds. Outside the lock and only when idle: no request waits for it.
                    release_free_memory()
                    worked = False
            with self._wakeup:
                while not self._stopping and not self._waiting and not self.decoder.rows:
                    self._wakeup.wait()
                worked = True
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
                self._fail([r.tag for r in self.decoder.rows] + admitted, err)
            finally:
                self._prefilling = 0
            if self.decoder.rows:
                try:
                    self._report(self.decoder.step())
                    self.stats.steps += 1
                except Exception as err:  # one forward pass for the whole batch: no single row to blame
                    self._fail([r.tag for r in self.decoder.rows], err)
        for handle in [r.tag for r in self.decoder.rows] + self._waiting:
            handle._fail(VinstructError("the engine was shut down"))

    def _fail(self, handles: list[RequestHandle], err: Exception) -> None:
        """Fail these requests and start the running batch afresh (its cache may be half-updated)."""
        for handle in handles:
            if not handle.done:
                handle._fail(err)
        self.decoder.clear()

    def _admit_isolated(self, handles: list[RequestHandle]) -> None:
        """Prefill `handles` together; if that fails, prefill them one by one so only the culprit fails.

        The decoder changes the running batch only once the prefill has worked, so a failed attempt
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
        """Requests to prefill now, in arrival order: as many as the batch, the KV budget and the prefill
        budget allow (the rest wait for running requests to leave)."""
        taken, tokens = [], 0
        while self._waiting:
            handle = self._waiting[0]
            if handle.cancelled:  # cancelled before it was ever prefilled: counted like any cancellation
                self._waiting.pop(0)
                self.stats.cancelled += 1
                handle._finish(Generation([], "", "cancelled", len(handle.prompt_ids)))
                continue
            if taken and tokens + len(handle.prompt_ids) > self.max_prefill_tokens:
                break
            reserves = [len(h.prompt_ids) + h.params.max_new_tokens for h in taken + [handle]]
            if not self.decoder.fits(reserves):
                break
            self._waiting.pop(0)
            taken.append(handle)
            tokens += len(handle.prompt_ids)
        return taken

    def _drop_cancelled(self) -> None:
        gone = [row for row in self.decoder.rows if row.tag.cancelled]
        if not gone:
            return
        self.decoder.remove(gone)
        for row in gone:
            self.stats.cancelled += 1
            row.tag._finish(self._generation(row, "cancelled"))

    def _admit(self, handles: list[RequestHandle]) -> None:
        """Prefill new requests together (each continuing its reusable prefix); they join the batch."""
        rows = []
        for handle in handles:
            hit = self.prefix_store.lookup(handle.prompt_ids, handle.image_keys)
            handle.cached_tokens = hit.length
            state = RowState(self.tokenizer, handle.params, self.eos_ids)
            rows.append(Row(list(handle.prompt_ids), handle.params, state,
                            seeded_generator(handle.params.seed, self.model.device), on_text=handle._text,
                            pixel_values=self._uncached_pixels(handle, hit.length), cached=hit.kv,
                            cached_length=hit.length, tag=handle))
        finished = self.decoder.admit(rows)  # in the scheduler thread's inference mode
        for handle in handles:
            self.stats.cached_prompt_tokens += handle.cached_tokens
            self.stats.computed_prompt_tokens += len(handle.prompt_ids) - handle.cached_tokens
        self.stats.prefills += 1
        self.stats.max_batch = max(self.stats.max_batch, len(self.decoder.rows) + len(finished))
        self._report(finished)

    def _uncached_pixels(self, handle: RequestHandle, cached: int) -> torch.Tensor | None:
        """Pixel values of the images whose slots still need computing."""
        if handle.pixel_values is None:
            return None
        starts = image_starts(handle.prompt_ids, self.model.image_token_id, self.model.num_image_tokens)
        first_new = sum(1 for s in starts if s < cached)
        return handle.pixel_values[first_new:] if first_new < len(starts) else None

    def _finished(self, row: Row) -> None:
        """A sequence is done (its slot still intact): keep its cache for the next turn, hand over the result."""
        if self.prefix_store.max_tokens > 0:
            self.prefix_store.insert(row.fed, row.tag.image_keys, self.decoder.kv(row, copy=False))  # it copies
        self.stats.finished += 1
        row.tag._text(row.state.new_text())
        row.tag._finish(self._generation(row, row.state.finish_reason))

    @staticmethod
    def _report(finished: list[Row]) -> None:
        """Rows that left with an error (their sampling or text failed) fail alone."""
        for row in finished:
            if row.error is not None and not row.tag.done:
                row.tag._fail(row.error)

    @staticmethod
    def _generation(row: Row, reason: str) -> Generation:
        return Generation(list(row.state.ids), row.state.text, reason, len(row.prompt_ids))
