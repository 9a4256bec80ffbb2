"""A loaded model with its engine and chat template: what chat, the API and the UI talk to."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from vinstruct.data.encoding import EncodingSpec
from vinstruct.data.templates import get_template
from vinstruct.model.generation import SamplingParams
from vinstruct.serve.conversation import prompt_ids
from vinstruct.serve.engine import Engine, RequestHandle


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the whole machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Assistant:
    """Turns conversations into prompts, adds the template's stop strings, and submits to the engine."""

    def __init__(self, model, engine: Engine, name: str = "vinstruct"):
        self.model = model
        self.engine = engine
        self.name = name
        self.spec = EncodingSpec.for_model(model)
        eos = model.tokenizer.eos_token or ""
        self.template_stops = [s for s in get_template(self.spec.template).stop_strings(eos) if s]

    @classmethod
    def load(cls, model_dir: str | Path, max_batch_size: int = 8, prefix_cache_tokens: int = 8192,
             threads: int | None = None, name: str | None = None, kv_tokens: int | None = None) -> "Assistant":
        """Load a checkpoint behind an engine; torch uses `threads` CPU threads (default: all this process
        may run on, which torch's own default can undercount)."""
        from vinstruct import load

        torch.set_num_threads(threads or available_cpus())
        model = load(model_dir)
        engine = Engine(model, max_batch_size=max_batch_size, prefix_cache_tokens=prefix_cache_tokens,
                        kv_tokens=kv_tokens)
        return cls(model, engine, name or Path(model_dir).resolve().name)

    def describe(self) -> str:
        """One line for a startup log: threads, the forward and its matrix products, batch and cache bounds."""
        e = self.engine
        lean = e.decoder.lean
        if lean is None:
            forward = "the transformers forward"
        else:
            products = "oneDNN" if lean.kernel == "onednn" else "transformers'"
            forward = f"the lean forward with {products} matrix products"
            forward += ", q|k|v and gate|up stacked" if lean.fused else ""
        return (f"{torch.get_num_threads()} CPU threads (of {available_cpus()} available; --threads to change), "
                f"{forward}, "
                f"up to {e.max_batch_size} sequences per step, KV budget {e.kv_tokens} token slots, "
                f"prefix cache {e.prefix_store.max_tokens} tokens ({round(e.prefix_pool_bytes / 2**20)} MiB, "
                f"reserved at the first finished reply)")

    @property
    def context_length(self) -> int:
        return self.engine.context_length

    def prompt_ids(self, turns: Sequence[tuple[str, str]], system: str | None = None) -> list[int]:
        return prompt_ids(self.spec, turns, system)

    def with_template_stops(self, params: SamplingParams) -> SamplingParams:
        stops = list(params.stop) + [s for s in self.template_stops if s not in params.stop]
        return dataclasses.replace(params, stop=stops)

    def submit(self, prompt_ids, images=None, params: SamplingParams | None = None, listener=None) -> RequestHandle:
        params = self.with_template_stops(params or SamplingParams())
        return self.engine.submit(prompt_ids, images, params, listener)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> "Assistant":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

