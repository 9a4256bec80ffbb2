"""Reuse of computed key/value caches across requests that share a prefix.

When a sequence finishes, its cache (prompt plus the reply tokens fed back) is
kept with the token ids that produced it and a fingerprint of each image. The
next turn of the same conversation re-sends all of that as its prompt; the
longest stored prefix is then reused and only the new tokens are computed: the
image is not encoded again and the earlier turns are not recomputed.

Image slots are runs of one placeholder id, so equal ids do not mean equal
inputs: a match stops before the first image whose fingerprint differs, and
never ends inside an image (its features are spliced in whole).
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


@dataclass
class _Entry:
    ids: torch.Tensor  # [length] token ids whose keys/values `kv` holds
    images: tuple[str, ...]
    kv: LayerKV  # [1, heads, length, dim] per layer


@dataclass
class PrefixHit:
    length: int  # tokens of the prompt covered by `kv`
    kv: LayerKV | None


class PrefixStore:
    """Finished sequences' caches, least recently used evicted first, bounded by total tokens."""

    def __init__(self, max_tokens: int, image_token_id: int, tokens_per_image: int):
        self.max_tokens = max_tokens
        self.image_token_id = image_token_id
        self.tokens_per_image = tokens_per_image
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._next_key = 0
        self.tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

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
        kv = self._entries[best_key].kv
        return PrefixHit(best, [(k[:, :, :best], v[:, :, :best]) for k, v in kv])

    def insert(self, ids: Sequence[int], images: Sequence[str], kv: LayerKV) -> None:
        if not ids or len(ids) > self.max_tokens:
            return
        entry = _Entry(torch.tensor(list(ids), dtype=torch.long), tuple(images), kv)
        # An entry that the new one extends (same images, ids a prefix) is now redundant.
        for key in [k for k, e in self._entries.items() if self._covers(entry, e)]:
            self._remove(key)
        self._entries[self._next_key] = entry
        self._next_key += 1
        self.tokens += len(entry.ids)
        while self.tokens > self.max_tokens:
            self._remove(next(iter(self._entries)))

    def _covers(self, longer: _Entry, shorter: _Entry) -> bool:
        n = len(shorter.ids)
        return (
            n <= len(longer.ids)
            and bool(torch.equal(longer.ids[:n], shorter.ids))
            and longer.images[: len(shorter.images)] == shorter.images
        )

    def _remove(self, key: int) -> None:
        self.tokens -= len(self._entries.pop(key).ids)

    def clear(self) -> None:
        self._entries.clear()
        self.tokens = 0
