"""Preallocated key/value buffers with one row ("slot") per sequence.

Every sequence writes its keys and values from time index 0 of its own row, so
there is no padding on the time axis: a sequence joins or leaves the running batch
without moving anyone else's cache, and a decode step writes one column per row in
place. Rows in use are kept contiguous (rows 0..n-1): a leaving row's slot is
filled by the last one, so the attention always reads a view, never a gathered copy.

The cache plugs into a transformers causal LM as its `past_key_values`; the caller
passes a 4-D mask (each row sees only its own written tokens) and position ids, so
the model needs no knowledge of the layout.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

# Per layer: (keys, values), each [batch, kv_heads, time, head_dim].
LayerKV = list[tuple[torch.Tensor, torch.Tensor]]

# Time capacity grows in steps of this many tokens, so joins rarely reallocate.
TIME_STEP = 128


def kv_geometry(llm_config) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of a transformers decoder config."""
    heads = llm_config.num_attention_heads
    kv_heads = getattr(llm_config, "num_key_value_heads", None) or heads
    head_dim = getattr(llm_config, "head_dim", None) or llm_config.hidden_size // heads
    return llm_config.num_hidden_layers, kv_heads, head_dim


class SlotCache(DynamicCache):
    """K/V buffers [slots, kv_heads, capacity, head_dim] per layer; `bind` says where the next forward writes."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device):
        super().__init__()
        self.geometry = (layers, kv_heads, head_dim)
        self.dtype, self.device = dtype, torch.device(device)
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.slots = 0
        self.time = 0
        self._first = 0
        self._rows: torch.Tensor | None = None  # [n, 1] slot index per row of the forward
        self._write: torch.Tensor | None = None  # [n, T] time index per input token
        self._span = 0

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def reserve(self, slots: int, time: int, in_use: int, limit: int) -> None:
        """Make room for `slots` rows of `time` tokens, keeping the first `in_use` rows.

        Rows grow geometrically (joins rarely reallocate) and the time axis in TIME_STEP steps; the
        buffers never hold more than `limit` token slots unless one row alone needs more.
        """
        time = -(-time // TIME_STEP) * TIME_STEP
        if slots <= self.slots and time <= self.time and self.slots * self.time <= limit:
            return
        if slots * self.time <= limit:  # keep a longer time axis while it fits: fewer reallocations
            time = max(time, self.time)
        new_slots = max(slots, min(max(2 * self.slots, slots), limit // time))
        layers, kv_heads, head_dim = self.geometry
        keep_rows, keep_time = min(in_use, self.slots), min(self.time, time)
        new_keys, new_values = [], []
        for layer in range(layers):
            # Zeros, not uninitialised memory: a masked slot still meets its value vector in the attention
            # product (weight 0), and 0 x NaN would be NaN.
            k = torch.zeros((new_slots, kv_heads, time, head_dim), dtype=self.dtype, device=self.device)
            v = torch.zeros_like(k)
            if keep_rows:
                k[:keep_rows, :, :keep_time] = self.keys[layer][:keep_rows, :, :keep_time]
                v[:keep_rows, :, :keep_time] = self.values[layer][:keep_rows, :, :keep_time]
            new_keys.append(k)
            new_values.append(v)
            if self.keys:  # free each old layer as soon as it is copied: peak memory stays near one copy
                self.keys[layer] = self.values[layer] = None
        self.keys, self.values, self.slots, self.time = new_keys, new_values, new_slots, time

    def release(self) -> None:
        """Free the buffers (the next reserve allocates afresh)."""
        self.keys, self.values, self.slots, self.time = [], [], 0, 0

    def bind(self, first: int, write: torch.Tensor, span: int) -> None:
        """The next forward covers slots first..first+n-1: input token (i, t) is stored at time write[i, t],
        and attention reads times 0..span-1 of each row (masked by the caller)."""
        self._first = first
        self._rows = torch.arange(first, first + write.shape[0], device=self.device).unsqueeze(1)
        self._write = write
        self._span = span
        # One row writing consecutive times (a single sequence's prefill or decode step): a plain slice
        # copy, much cheaper than the scatter the general case needs.
        self._slice = None
        if write.shape[0] == 1:
            begin = int(write[0, 0])
            if bool((write[0] == torch.arange(begin, begin + write.shape[1], device=write.device)).all()):
                self._slice = slice(begin, begin + write.shape[1])

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        k, v = self.keys[layer_idx], self.values[layer_idx]
        if key_states.shape[1] != k.shape[1] or key_states.shape[3] != k.shape[3]:
            raise ValueError(f"the model's keys are {list(key_states.shape)}, the cache was laid out for "
                             f"{k.shape[1]} heads x {k.shape[3]} dims")
        if self._slice is not None:
            k[self._first, :, self._slice] = key_states[0]
            v[self._first, :, self._slice] = value_states[0]
        else:
            k[self._rows, :, self._write] = key_states.transpose(1, 2).to(k.dtype)
            v[self._rows, :, self._write] = value_states.transpose(1, 2).to(v.dtype)
        rows = slice(self._first, self._first + self._rows.shape[0])
        return k[rows, :, : self._span], v[rows, :, : self._span]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._span

    def write_row(self, slot: int, kv: LayerKV, length: int) -> None:
        """Store a sequence's first `length` tokens of keys/values ([1, heads, >=length, dim]) in a slot."""
        for layer, (k, v) in enumerate(kv):
            self.keys[layer][slot, :, :length] = k[0, :, :length]
            self.values[layer][slot, :, :length] = v[0, :, :length]

    def read_row(self, slot: int, length: int, copy: bool = True) -> LayerKV:
        """One slot's first `length` tokens, [1, heads, length, dim] per layer: a copy, or views."""
        rows = [(k[slot:slot + 1, :, :length], v[slot:slot + 1, :, :length]) for k, v in zip(self.keys, self.values)]
        return [(k.clone(), v.clone()) for k, v in rows] if copy else rows

    def move_row(self, source: int, target: int, length: int) -> None:
        """Copy a slot's first `length` tokens into another slot (compaction when a row leaves)."""
        for k, v in zip(self.keys, self.values):
            k[target, :, :length] = k[source, :, :length]
            v[target, :, :length] = v[source, :, :length]
