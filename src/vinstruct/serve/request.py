"""A request in the engine, as its submitter sees it: stream, result, cancel.

The engine thread reports through `_text`, `_finish` and `_fail`; the submitter
either iterates the handle (text deltas from a thread-safe queue) or passes a
listener that receives every event in the engine thread (the HTTP API forwards
them to its event loop).
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable

from vinstruct.errors import VinstructError
from vinstruct.model.generation import Generation

# Events a handle receives: ("text", str) as text becomes final, then ("done", Generation) or ("error", exc).
Event = tuple[str, object]


class RequestHandle:
    """A submitted request: iterate it for text deltas, `result()` for the whole Generation, `cancel()`."""

    _ids = itertools.count()

    def __init__(self, prompt_ids, pixel_values, images, params, listener: Callable[[Event], None] | None):
        self.id = next(self._ids)
        self.prompt_ids = list(prompt_ids)
        self.pixel_values = pixel_values
        self.image_keys = images
        self.params = params
        self.submitted_at = time.perf_counter()
        self.first_token_at: float | None = None
        self.cached_tokens = 0  # prompt tokens served from the prefix store
        self._listener = listener
        self._events: queue.Queue[Event] = queue.Queue()
        self._cancelled = threading.Event()
        self._finished = threading.Event()
        self._result: Generation | None = None
        self._error: BaseException | None = None

    # ---- consumer side ---------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop generating for this request (e.g. its client went away); waiting callers get 'cancelled'."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def __iter__(self):
        """Text deltas as they become final (only when no listener was given)."""
        if self._listener is not None:
            raise VinstructError("this request's events go to its listener; use result() or the listener")
        while True:
            kind, payload = self._events.get()
            if kind == "text":
                yield payload
            elif kind == "error":
                raise payload
            else:
                return

    def result(self, timeout: float | None = None) -> Generation:
        if not self._finished.wait(timeout):
            raise TimeoutError(f"request {self.id} not finished after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._result

    # ---- engine side --------------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        if self._listener is None:
            self._events.put(event)
            return
        try:
            self._listener(event)
        except RuntimeError:
            pass  # the listener's event loop is gone: nobody is waiting any more

    def _text(self, delta: str) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if delta:
            self._emit(("text", delta))

    def _finish(self, generation: Generation) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self._result = generation
        self._finished.set()
        self._emit(("done", generation))

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._finished.set()
        self._emit(("error", error))
