"""Reuse of computed key/value caches across requests that share a prefix.

When a sequence finishes, its cache (prompt plus the reply tokens fed back) is
kept with the token ids that produced it and a fingerprint of each image. The
next turn of the same conversation re-sends all of that as its prompt; the
longest stored prefix is then reused and only the new tokens are computed: the
image is not encoded again and the earlier turns are not recomputed.

Image slots are runs of one placeholder id, so equal ids do not mean equal
inputs: a match stops before the first image whose fingerprint differs, and
never ends inside an image (its features are spliced in whole).

The keys and values live in one pool of fixed-size blocks, allocated whole when
the first sequence is stored: the store's memory is its bound from then on, and
entries of every length come and go without the allocator seeing a new size (a
store of separate tensors grew the server's resident memory long after the
store itself had stopped growing).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vinstruct.model.slots import LayerKV


def image_fingerprint(pixel_values: torch.Tensor) -> str:
    """A digest of one preprocessed image: equal digests mean equal model inputs."""
    data = pixel_values.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def image_starts(ids: Sequence[int], image_token_id: int, tokens_per_image: int) -> list[int]:
    """Where each image's block of feature slots begins."""
    slots = [i for i, t in enumerate(ids) if t == image_token_id]
    return slots[::tokens_per_image] if tokens_per_image else []


# Tokens per block of the pool.
BLOCK = 16


@dataclass
class _Entry:
    ids: torch.Tensor  # [length] token ids whose keys/values the blocks hold
    images: tuple[str, ...]
    blocks: list[int]  # pool blocks holding tokens 0..15, 16..31, ... of the entry

    def token_index(self, length: int) -> torch.Tensor:
        """Pool token positions of the entry's first `length` tokens."""
        starts = torch.tensor(self.blocks, dtype=torch.long).unsqueeze(1) * BLOCK
        return (starts + torch.arange(BLOCK)).flatten()[:length]


@dataclass
class PrefixHit:
    length: int  # tokens of the prompt covered by `kv`
    kv: LayerKV | None


class PrefixStore:
    """Finished sequences' caches, least recently used evicted first, bounded by the blocks of one pool."""

    def __init__(self, max_tokens: int, image_token_id: int, tokens_per_image: int):
        self.max_tokens = max_tokens
        self.image_token_id = image_token_id
        self.tokens_per_image = tokens_per_image
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._next_key = 0
        self.blocks = max_tokens // BLOCK
        self._free: list[int] = []  # every block, once the pool is reserved
        self._keys: list[torch.Tensor] = []  # per layer [kv_heads, blocks * BLOCK, dim], once the first entry comes
        self._values: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """Memory the pool holds (0 until the first entry)."""
        return sum(t.numel() * t.element_size() for t in self._keys + self._values)

    def planned_bytes(self, geometry: tuple[int, int, int], dtype: torch.dtype) -> int:
        """What the pool takes once reserved, for an LM of (layers, kv_heads, head_dim) keys/values in `dtype`."""
        layers, kv_heads, head_dim = geometry
        return self.blocks * BLOCK * 2 * layers * kv_heads * head_dim * dtype.itemsize

    def _allocate(self, kv: LayerKV) -> bool:
        """Reserve the pool shaped like `kv`; if memory has run out since start-up, turn the store off
        (requests go on without reuse) rather than fail the request whose reply just finished."""
        _, heads, _, dim = kv[0][0].shape
        like = kv[0][0]
        try:
            # Zeros, so the pages are committed now: the resident size is the bound from the first entry on.
            self._keys = [torch.zeros((heads, self.blocks * BLOCK, dim), dtype=like.dtype, device=like.device)
                          for _ in kv]
            self._values = [torch.zeros_like(k) for k in self._keys]
        except (RuntimeError, MemoryError):
            self._keys, self._values, self.blocks = [], [], 0
            return False
        self._free = list(range(self.blocks))
        return True

    def _usable_length(self, entry: _Entry, ids: torch.Tensor, images: Sequence[str]) -> int:
        n = min(len(entry.ids), len(ids))
        differ = (entry.ids[:n] != ids[:n]).nonzero()
        common = int(differ[0]) if len(differ) else n
        starts = image_starts(ids[:common].tolist(), self.image_token_id, self.tokens_per_image)
        for k, start in enumerate(starts):
            same_image = k < len(entry.images) and k < len(images) and entry.images[k] == images[k]
            if not same_image or start + self.tokens_per_image > common:
                return start
        return common

    def lookup(self, ids: Sequence[int], images: Sequence[str]) -> PrefixHit:
        """The longest reusable prefix for a prompt; at least its last token is always left to compute
        (its logits start the reply)."""
        if not self._entries or len(ids) < 2:
            return PrefixHit(0, None)
        query = torch.tensor(list(ids), dtype=torch.long)
        best_key, best = None, 0
        for key, entry in self._entries.items():
            usable = min(self._usable_length(entry, query, images), len(ids) - 1)
            if usable > best:
                best_key, best = key, usable
        if best_key is None:
            return PrefixHit(0, None)
        self._entries.move_to_end(best_key)
        index = self._entries[best_key].token_index(best).to(self._keys[0].device)
        return PrefixHit(best, [(k.index_select(1, index).unsqueeze(0), v.index_select(1, index).unsqueeze(0))
                                for k, v in zip(self._keys, self._values)])

    def insert(self, ids: Sequence[int], images: Sequence[str], kv: LayerKV) -> None:
        """Keep a finished sequence's keys/values ([1, heads, >= len(ids), dim] per layer) for `ids`."""
        needed = -(-len(ids) // BLOCK)
        if not ids or needed > self.blocks:
            return
        if not self._keys and not self._allocate(kv):
            return
        entry = _Entry(torch.tensor(list(ids), dtype=torch.long), tuple(images), [])
        # An entry that the new one extends (same images, ids a prefix) is now redundant.
        for key in [k for k, e in self._entries.items() if self._covers(entry, e)]:
            self._remove(key)
        while len(self._free) < needed:  # least recently used first
            self._remove(next(iter(self._entries)))
        entry.blocks = [self._free.pop() for _ in range(needed)]
        index = entry.token_index(len(ids)).to(self._keys[0].device)
        for (k, v), pool_k, pool_v in zip(kv, self._keys, self._values):
            pool_k.index_copy_(1, index, k[0, :, :len(ids)].to(pool_k.dtype))
            pool_v.index_copy_(1, index, v[0, :, :len(ids)].to(pool_v.dtype))
        self._entries[self._next_key] = entry
        self._next_key += 1

    def _covers(self, longer: _Entry, shorter: _Entry) -> bool:
        n = len(shorter.ids)
        return (
            n <= len(longer.ids)
            and bool(torch.equal(longer.ids[:n], shorter.ids))
            and longer.images[: len(shorter.images)] == shorter.images
        )

    def _remove(self, key: int) -> None:
        self._free.extend(self._entries.pop(key).blocks)

    def clear(self) -> None:
        """Forget every entry (the pool stays allocated)."""
        self._entries.clear()
        self._free = list(range(self.blocks)) if self._keys else []
