"""Sizes of the end-to-end demo: how big a world, how long each stage trains.

"default" is what `make demo` runs (about 10 minutes on 2 CPU cores), "quick" a
smaller run (about 3 minutes), "tiny" a smoke-sized run for the test suite.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class DemoSettings:
    name: str
    images: int  # world size (split 80/10/10 into train/val/test)
    image_size: int = 64
    seed: int = 0
    # bootstrap (vinstruct.bootstrap.run.BootstrapSettings overrides)
    clip_steps: int = 1000
    lm_steps: int = 400
    # data
    captions_per_image: int = 2  # stage-1 caption-expansion pairs per image
    sqa_per_image: int = 1  # ScienceQA-format training problems per train scene (mixed into stage 2)
    # stage 1 / stage 2 (vinstruct.train.TrainConfig overrides)
    pool: int = 2
    stage1_epochs: float = 5.0
    stage2_epochs: float = 3.0
    stage2_lr: float = 1e-3
    stage2_batch: int = 16
    # evaluation (test-split images per suite) and ablations
    eval_images: int = 200
    bench_images: int = 30
    ablation_scale: float = 0.2  # ablations train this fraction of the full recipe's stage-2 epochs
    # "same_budget" (the full recipe trained as long as the ablations) is their fair reference.
    ablations: tuple[str, ...] = ("same_budget", "no_stage1", "caption_only", "linear_projector", "last_layer")
    examples: int = 5
    threads: int = 2
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS = {
    "default": DemoSettings(name="default", images=2000),
    "quick": DemoSettings(name="quick", images=600, clip_steps=250, lm_steps=200, stage2_epochs=2.0,
                          eval_images=60, bench_images=15),
    # Smoke size for the test suite: every step runs, nothing is expected to be learnt.
    "tiny": DemoSettings(name="tiny", images=40, clip_steps=4, lm_steps=4, captions_per_image=1,
                         stage1_epochs=1.0, stage2_epochs=1.0, stage2_batch=8, eval_images=4, bench_images=2,
                         ablation_scale=1.0, examples=2),
}


def preset(name: str) -> DemoSettings:
    from vinstruct.errors import VinstructError

    if name not in PRESETS:
        raise VinstructError(f"unknown demo size {name!r}; expected one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])
