"""Sizes of the end-to-end demo: how big a world, how long each stage trains.

"default" is what `make demo` runs (about 25 minutes on 2 CPU cores with AMX, 35 without), "quick" a
smaller run (8 to 11 minutes), "tiny" a smoke-sized run for the test suite.

The base LM is the pretrained SmolLM2-135M-Instruct that a pip package ships ("packaged")
or, for the tiny size and the ablation, the small Llama bootstrapped from scratch on the
world ("scratch"). The two need different recipes: the pretrained LM reads two tokens per image
region and is tuned through LoRA adapters on every linear layer (see docs/results/demo_quality.md
for the numbers behind each choice); the from-scratch LM is trained whole at a large learning rate.
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
    # 2000 CLIP steps: shape probe 91.7 % (84.3 at 1000), the warm-started tokens name the right shape in
    # 61 % of cells (54 %) and for 84 % of objects (76 %), for about 3 more minutes.
    clip_steps: int = 2000
    lm_steps: int = 400
    # data
    captions_per_image: int = 2  # stage-1 caption-expansion pairs per image
    sqa_per_image: int = 1  # ScienceQA-format training problems per train scene (mixed into stage 2)
    vqa_turns: int = 10  # short-answer questions packed into each scene's VQA sample
    # Where the short-answer prompt's line stands, in the VQA data and the exact questions alike: "after"
    # each question (LLaVA-1.5), or "before" it, where the packed questions of a sample share it (30 %
    # fewer tokens). Measured on the default size (docs/results/demo_quality.md): "before" made stage 2
    # about 9 % faster, left exact QA equal (67.6 %) and lowered POPE (75 against 80-83 %) and the
    # LLaVA-Bench-style score (61 against 76 %); the default keeps LLaVA-1.5's form.
    hint_position: str = "after"
    stage2_instruct: int = 200  # teacher samples (conversation + detail + complex, packed) mixed into stage 2
    stage2_sqa: int = 200  # ScienceQA-format problems mixed into stage 2
    # base LM: "packaged" (SmolLM2-135M-Instruct from its pip package) or "scratch" (bootstrapped)
    llm: str = "packaged"
    projector_warm_start: bool = True  # packaged LM only (vinstruct.bootstrap.projector_init)
    warm_start_steps: int = 1500  # its optimizer steps (batches of 1024 region tokens)
    # stage 1 / stage 2 (vinstruct.train.TrainConfig overrides), in optimizer steps
    # Vision patch grid pooling: 2 averages the encoder's 8x8 grid to 4x4 (16 image tokens). 64 tokens (pool 1)
    # scored within noise of 16 in the full recipe (53.1 vs 52.8 %) for 10 more minutes (docs/results/demo_quality.md).
    pool: int = 2
    # LM tokens per pooled cell. 2: the warm start fits a cell's colour word and shape word to two tokens
    # apart, which the LM learns to read about as fast as a sentence naming them; one token holding both
    # words it does not (measured: docs/results/demo_quality.md). 32 image tokens in all with pool 2.
    projector_tokens: int = 2
    stage1_steps: int = 60
    # Gentle: from the warm start, 60 steps at the paper's 2e-3 (5e-4) leave the tokens naming the right colour
    # in 51 % (66 %) of cells instead of 86 %, the shape in 42 % (49 %) instead of 54 %.
    stage1_lr: float = 2e-4
    stage1_batch: int = 16
    stage2_steps: int = 40
    stage2_lr: float = 1e-3
    stage2_batch: int = 16
    # Stage-2 samples per forward pass; stage2_batch / stage2_micro_batch passes are accumulated into each
    # step (the same gradient). 8 halves the activations held at once (peak memory 8.5 -> 6.8 GB over 30
    # steps) for about 11 % more time.
    stage2_micro_batch: int = 8
    # Stage 2 tunes LoRA adapters of this rank on every linear layer of the LM (merged into the saved model),
    # or, with 0, the top `stage2_llm_layers` decoder layers (0: all). LoRA costs about twice a top-10-layer
    # step and learns to bind a colour to its shape in far fewer (docs/results/demo_quality.md).
    stage2_lora_r: int = 32
    stage2_llm_layers: int = 10  # (without LoRA) top decoder layers tuned; the projector stays as stage 1 left it
    # "auto": bf16 (autocast in training, bf16 weights in evaluation) where the machine multiplies bf16 natively
    # (AMX, CUDA), else fp32. About 2.2x the training steps per minute on such a CPU; a CPU with AVX-512 BF16 but
    # no AMX trains 1.4x faster in fp32, at the cost of memory (stage 2 peaks higher with fp32 activations).
    precision: str = "auto"
    # Return freed memory to the OS every K training steps (see TrainConfig.release_memory_every).
    release_memory_every: int = 5
    # evaluation (test-split images per suite) and ablations
    eval_images: int = 100
    pope_images: int = 60
    bench_images: int = 10
    ablation_scale: float = 1.0  # ablations train this fraction of the full recipe's steps
    # "same_budget" (the full recipe trained as long as the ablations) is their fair reference; it is
    # only trained when ablation_scale < 1.
    ablations: tuple[str, ...] = ()
    examples: int = 5
    threads: int = 2
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resume_conflicts(self, recorded: dict) -> list[str]:
        """The settings that make a run's outputs which differ from those `recorded` by an earlier run
        in the same directory, as "field: was -> now" (threads and the ablation options may change)."""
        free = {"threads", "ablations", "ablation_scale", "release_memory_every"}
        now = self.to_dict()
        return [f"{key}: {recorded[key]!r} -> {now[key]!r}" for key in now
                if key not in free and key in recorded and _plain(recorded[key]) != _plain(now[key])]


def _plain(value):
    """A settings value as JSON gives it back (tuples come back as lists)."""
    return list(value) if isinstance(value, tuple) else value


# `--ablations` (make demo-ablations) trains these beside the full recipe.
ALL_ABLATIONS = ("no_stage1", "caption_only", "scratch_lm", "no_warm_start", "linear_projector", "last_layer")

PRESETS = {
    "default": DemoSettings(name="default", images=2000),
    "quick": DemoSettings(name="quick", images=600, clip_steps=250, lm_steps=200, stage1_steps=20, stage2_steps=8,
                          stage2_instruct=60, stage2_sqa=60, eval_images=30, pope_images=20, bench_images=4),
    # Smoke size for the test suite: every step runs, nothing is expected to be learnt. The bootstrapped
    # LM keeps it fast and needs no package.
    "tiny": DemoSettings(name="tiny", images=40, clip_steps=4, lm_steps=4, captions_per_image=1, llm="scratch",
                         projector_tokens=1, stage2_lora_r=0,
                         stage1_steps=2, stage1_lr=1e-2, stage2_steps=2, stage2_lr=1e-3, stage2_batch=8, precision="fp32",
                         stage2_llm_layers=0, stage2_instruct=32, stage2_sqa=32, eval_images=4, pope_images=4, bench_images=2,
                         examples=2),
}

# The from-scratch LM's recipe (tiny size and the scratch_lm ablation): everything trained, large steps.
SCRATCH_LM_RECIPE = {"stage1_lr": 1e-2, "stage2_lr": 1e-3, "stage2_llm_layers": 0, "stage2_lora_r": 0,
                     "projector_tokens": 1, "projector_warm_start": False}


def resolved_precision(s: DemoSettings) -> str:
    """"fp32" or "bf16" for this machine (see DemoSettings.precision)."""
    if s.precision != "auto":
        return s.precision
    from vinstruct.machine import bf16_is_fast

    return "bf16" if bf16_is_fast() else "fp32"


def preset(name: str) -> DemoSettings:
    from vinstruct.errors import VinstructError

    if name not in PRESETS:
        raise VinstructError(f"unknown demo size {name!r}; expected one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])


def eval_hint(s: DemoSettings) -> str:
    """Exact questions (world QA, POPE) are asked with the short-answer prompt that stage 2's VQA data
    teaches, on its own line where the data put it (`s.hint_position`)."""
    from vinstruct.world.vqa import SHORT_ANSWER_PROMPT

    return SHORT_ANSWER_PROMPT if s.vqa_turns else ""
