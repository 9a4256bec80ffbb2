"""The prefix store: one pool reserved at the first entry, exact keys/values back, bounded by blocks."""

import torch

from vinstruct.serve.prefix import BLOCK, PrefixStore

IMAGE = 99  # the image placeholder id (no images in these prompts)


def _kv(length: int, seed: int, layers: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(1, 2, length, 4, generator=g), torch.randn(1, 2, length, 4, generator=g))
            for _ in range(layers)]


def test_a_hit_returns_exactly_the_stored_keys_and_values_of_the_shared_prefix():
    store = PrefixStore(8 * BLOCK, IMAGE, 0)
    ids = list(range(1, 41))  # 40 tokens: three blocks, the last one part-filled
    kv = _kv(len(ids), 0)
    store.insert(ids, (), kv)
    hit = store.lookup(ids[:30] + [7, 7, 7], ())
    assert hit.length == 30
    for (k, v), (hk, hv) in zip(kv, hit.kv):
        assert torch.equal(hk, k[:, :, :30]) and torch.equal(hv, v[:, :, :30])
    assert store.lookup(ids, ()).length == len(ids) - 1  # the last token is always left to compute


def test_the_pool_is_reserved_once_and_entries_of_any_length_reuse_its_blocks():
    store = PrefixStore(10 * BLOCK, IMAGE, 0)
    assert store.bytes == 0
    store.insert([1, 2, 3], (), _kv(3, 1))
    reserved = store.bytes
    assert reserved == 3 * 2 * (2 * 10 * BLOCK * 4) * 4  # layers x (K, V) x heads x tokens x dim x fp32
    pools = [t.data_ptr() for t in store._keys]
    for n in range(200):  # many entries of varying lengths, far more than the pool holds at once
        length = 5 + (n * 37) % 70
        store.insert([1000 + n] + list(range(length - 1)), (), _kv(length, n))
        assert store.bytes == reserved and [t.data_ptr() for t in store._keys] == pools
        assert sum(-(-len(e.ids) // BLOCK) for e in store._entries.values()) + len(store._free) == store.blocks
    newest = 1000 + 199
    assert store.lookup([newest] + list(range(10)), ()).length > 0  # the most recent entry is kept
    assert store.lookup([1000] + list(range(4)), ()).length == 0  # the oldest was evicted


def test_an_entry_longer_than_the_whole_pool_is_not_kept_and_an_empty_store_reserves_nothing():
    store = PrefixStore(2 * BLOCK, IMAGE, 0)
    store.insert(list(range(2 * BLOCK + 1)), (), _kv(2 * BLOCK + 1, 0))
    assert len(store) == 0 and store.bytes == 0
    off = PrefixStore(0, IMAGE, 0)
    off.insert([1, 2], (), _kv(2, 0))
    assert len(off) == 0 and off.lookup([1, 2, 3], ()).length == 0


def test_an_entry_extended_by_a_later_turn_gives_back_its_blocks():
    store = PrefixStore(4 * BLOCK, IMAGE, 0)
    first = list(range(1, 20))
    store.insert(first, (), _kv(len(first), 0))
    store.insert(first + list(range(50, 70)), (), _kv(len(first) + 20, 1))
    assert len(store) == 1 and len(store._free) == store.blocks - 3
