"""Which samples go into which micro-batch, on which process, at which step.

An epoch is a seeded list of micro-batches (lists of sample indices) that does not
depend on the number of processes. Optimizer step `s` of an epoch consumes the
micro-batches [s*A*W, (s+1)*A*W) for A accumulation steps and W processes:
process r takes micro-batch s*A*W + a*W + r at accumulation step a. So 2
processes x 1 accumulation step see exactly the samples 1 process x 2
accumulation steps see, and a resumed run picks up at the step it stopped at.

Length grouping (as the official `group_by_modality_length`): image samples and
text-only samples are shuffled apart, cut into windows of `window` micro-batches,
sorted by length inside each window and cut into micro-batches of similar
length (less padding); the micro-batch order is then shuffled, so a batch holds
one modality and training still sees a random order of lengths.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def epoch_micro_batches(lengths: list[int], has_image: list[bool], batch_size: int, seed: int, epoch: int,
                        group_by_length: bool = True, window: int = 32) -> list[list[int]]:
    """The micro-batches of one epoch, in the order they are consumed."""
    rng = random.Random(seed * 1_000_003 + epoch)
    indices = list(range(len(lengths)))
    if not group_by_length:
        rng.shuffle(indices)
        return _chunks(indices, batch_size)
    batches: list[list[int]] = []
    for modality in (True, False):
        group = [i for i in indices if has_image[i] == modality]
        rng.shuffle(group)
        for block in _chunks(group, batch_size * window):
            block.sort(key=lambda i: lengths[i], reverse=True)
            batches += _chunks(block, batch_size)
    rng.shuffle(batches)
    return batches


@dataclass
class StepPlan:
    """Maps (global step, accumulation index, rank) to a micro-batch of sample indices."""

    lengths: list[int]
    has_image: list[bool]
    batch_size: int
    grad_accum: int
    world_size: int
    seed: int
    group_by_length: bool = True
    window: int = 32

    def __post_init__(self):
        self._cache: dict[int, list[list[int]]] = {}
        self.micro_per_epoch = math.ceil(len(self.lengths) / self.batch_size)
        self.micro_per_step = self.grad_accum * self.world_size
        self.steps_per_epoch = max(1, math.ceil(self.micro_per_epoch / self.micro_per_step))

    def total_steps(self, epochs: float, max_steps: int = 0) -> int:
        if max_steps > 0:
            return max_steps
        return max(1, math.ceil(epochs * self.steps_per_epoch))

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        if epoch not in self._cache:
            self._cache = {epoch: epoch_micro_batches(self.lengths, self.has_image, self.batch_size, self.seed,
                                                      epoch, self.group_by_length, self.window)}
        return self._cache[epoch]

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def micro_batch(self, step: int, accum_index: int, rank: int) -> list[int]:
        """Sample indices for `rank` at accumulation index `accum_index` of global step `step` (0-based).

        The last step of an epoch wraps around to the epoch's first micro-batches so that every
        process always has work (as DistributedSampler pads)."""
        batches = self.epoch_batches(self.epoch_of(step))
        in_epoch = step % self.steps_per_epoch
        position = in_epoch * self.micro_per_step + accum_index * self.world_size + rank
        return batches[position % len(batches)]

    def step_batches(self, step: int, rank: int) -> list[list[int]]:
        return [self.micro_batch(step, a, rank) for a in range(self.grad_accum)]
