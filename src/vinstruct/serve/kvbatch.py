"""Key/value caches of unrelated sequences kept as one padded batch.

Every sequence in the running batch shares one time axis: shorter sequences are
padded on the left (and, after a prefix-reusing prefill, possibly in the
middle), and a 0/1 mask records which slots hold real tokens. Attention never
looks at a masked slot and position ids count only real tokens, so a sequence's
outputs do not depend on who it shares the batch with. Padding is added only
when sequences join (`concat`) and trimmed when they leave (`select`); decode
steps just append one column, into spare room reserved in advance (transformers'
DynamicLayer reallocates and copies the whole cache on every step, which costs
more than the attention itself once several sequences share the batch).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# Per layer (keys, values), each [batch, kv_heads, time, head_dim].
LayerKV = list[tuple[torch.Tensor, torch.Tensor]]


def cache_layers(cache: DynamicCache) -> LayerKV:
    return [(layer.keys, layer.values) for layer in cache.layers if getattr(layer, "is_initialized", True)]


def _pad_left(tensor: torch.Tensor, amount: int, dim: int) -> torch.Tensor:
    if amount == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = amount
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class SlackLayer(DynamicLayer):
    """A cache layer that appends into preallocated spare room, growing it in steps when full.

    `keys`/`values` are views of the first `length` slots of larger buffers, so decode steps write one
    column in place instead of copying everything that came before.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, spare: int = 64):
        super().__init__()
        self.lazy_initialization(keys, values)
        self.spare = spare
        self._length = keys.shape[2]
        self._key_buffer = self._allocate(keys, self._length + spare)
        self._value_buffer = self._allocate(values, self._length + spare)
        self._publish()

    @staticmethod
    def _allocate(tensor: torch.Tensor, capacity: int) -> torch.Tensor:
        batch, heads, length, dim = tensor.shape
        buffer = tensor.new_empty((batch, heads, capacity, dim))
        buffer[:, :, :length] = tensor
        return buffer

    def _publish(self) -> None:
        self.keys = self._key_buffer[:, :, : self._length]
        self.values = self._value_buffer[:, :, : self._length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        new = key_states.shape[2]
        if self._length + new > self._key_buffer.shape[2]:
            capacity = self._length + new + max(self.spare, self._length // 4)
            self._key_buffer = self._allocate(self.keys, capacity)
            self._value_buffer = self._allocate(self.values, capacity)
        self._key_buffer[:, :, self._length:self._length + new] = key_states
        self._value_buffer[:, :, self._length:self._length + new] = value_states
        self._length += new
        self._publish()
        return self.keys, self.values


class KVBatch:
    """A DynamicCache over several sequences plus the mask of real slots ([batch, time], long)."""

    def __init__(self, cache: DynamicCache, mask: torch.Tensor):
        self.cache = cache
        self.mask = mask

    @classmethod
    def empty(cls, rows: int = 0, device: torch.device | str = "cpu") -> "KVBatch":
        return cls(DynamicCache(), torch.zeros((rows, 0), dtype=torch.long, device=device))

    @classmethod
    def from_layers(cls, layers: LayerKV, mask: torch.Tensor) -> "KVBatch":
        cache = DynamicCache()
        if layers and mask.shape[1] > 0:
            cache.layers = [SlackLayer(k, v) for k, v in layers]
        return cls(cache, mask)

    @property
    def size(self) -> int:
        return self.mask.shape[0]

    @property
    def length(self) -> int:
        return self.mask.shape[1]

    def real_lengths(self) -> torch.Tensor:
        """Real tokens per row: also the position id the next token of each row gets."""
        return self.mask.sum(-1)

    def layers(self) -> LayerKV:
        return cache_layers(self.cache) if self.length else []

    def append_column(self) -> torch.Tensor:
        """Extend the mask by one real slot per row (the next decode step); return the new mask."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.size, 1)], dim=1)
        return self.mask

    def select(self, rows: Sequence[int]) -> "KVBatch":
        """Keep `rows` (in that order) and drop leading columns that became padding for every row."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        used = (mask.sum(0) > 0).nonzero()
        start = int(used[0]) if len(used) else mask.shape[1]
        layers = [(k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:])
                  for k, v in self.layers()]
        return KVBatch.from_layers(layers, mask[:, start:])

    def row(self, index: int) -> LayerKV:
        """One sequence's cache without its padding: [1, heads, real_length, dim] per layer (copies)."""
        real = self.mask[index].bool()
        return [(k[index:index + 1, :, real].clone(), v[index:index + 1, :, real].clone()) for k, v in self.layers()]

    @staticmethod
    def concat(batches: Sequence["KVBatch"]) -> "KVBatch":
        """Stack batches along the batch axis, left-padding the shorter ones to a common length."""
        batches = [b for b in batches if b.size]
        if not batches:
            return KVBatch.empty()
        if len(batches) == 1:
            return batches[0]
        width = max(b.length for b in batches)
        mask = torch.cat([_pad_left(b.mask, width - b.length, 1) for b in batches], dim=0)
        if width == 0:
            return KVBatch.from_layers([], mask)
        # A batch with no history has no tensors yet: borrow the shapes of one that has.
        template = next(b.layers() for b in batches if b.length)
        layers: LayerKV = []
        for layer, (k0, v0) in enumerate(template):
            keys, values = [], []
            for b in batches:
                if b.length:
                    k, v = b.layers()[layer]
                else:
                    k = k0.new_zeros((b.size, k0.shape[1], 0, k0.shape[3]))
                    v = v0.new_zeros((b.size, v0.shape[1], 0, v0.shape[3]))
                keys.append(_pad_left(k, width - b.length, 2))
                values.append(_pad_left(v, width - b.length, 2))
            layers.append((torch.cat(keys, dim=0), torch.cat(values, dim=0)))
        return KVBatch.from_layers(layers, mask)

    @staticmethod
    def from_rows(rows: Sequence[LayerKV | None], lengths: Sequence[int], device) -> "KVBatch":
        """A batch from per-sequence caches (None or length 0: no history yet)."""
        parts = []
        for kv, length in zip(rows, lengths):
            mask = torch.ones((1, length), dtype=torch.long, device=device)
            parts.append(KVBatch.from_layers(kv if length else [], mask))
        combined = KVBatch.concat(parts)
        if combined.size != len(rows):  # every row was empty
            combined = KVBatch.empty(len(rows), device)
        return combined
