"""Randomly initialised base models (vision encoder + causal LM) of any size, saved as
standard transformers directories.

They stand in for CLIP and Vicuna in tests and benchmarks: same classes, same
files, just small and untrained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from vinstruct.model.tokenizer import train_bpe_tokenizer

_WORDS = (
    "a an the red green blue yellow purple orange white black gray small large big tiny circle square "
    "triangle star diamond hexagon cross heart left right top bottom middle of to in on and is are there "
    "what how many color shape image picture describe two three four one zero yes no object objects"
).split()


@dataclass
class PartSizes:
    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    llm_hidden: int = 64
    llm_layers: int = 2
    llm_heads: int = 4
    llm_kv_heads: int = 2
    llm_intermediate: int = 128
    vocab_size: int = 400
    max_positions: int = 512


def _corpus(seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    lines = []
    for _ in range(400):
        n = int(torch.randint(3, 12, (1,), generator=g))
        idx = torch.randint(0, len(_WORDS), (n,), generator=g).tolist()
        lines.append(" ".join(_WORDS[i] for i in idx) + ".")
    lines += ["USER: what is this? ASSISTANT: a red circle.", "Describe the image briefly."] * 20
    return lines


def random_llama(tokenizer, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int,
                 max_positions: int) -> LlamaForCausalLM:
    """A randomly initialised Llama of these sizes, its vocabulary and special ids the tokenizer's."""
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    ))


def make_random_parts(directory: str | Path, sizes: PartSizes | None = None, seed: int = 0) -> tuple[Path, Path]:
    """Write `directory/vision` (CLIPVisionModel + CLIPImageProcessor) and `directory/llm`
    (LlamaForCausalLM + BPE tokenizer); return both paths."""
    sizes = sizes or PartSizes()
    directory = Path(directory)
    vision_dir, llm_dir = directory / "vision", directory / "llm"
    torch.manual_seed(seed)
    vision = CLIPVisionModel(
        CLIPVisionConfig(
            image_size=sizes.image_size,
            patch_size=sizes.patch_size,
            hidden_size=sizes.vision_hidden,
            intermediate_size=sizes.vision_hidden * 2,
            num_hidden_layers=sizes.vision_layers,
            num_attention_heads=sizes.vision_heads,
            projection_dim=sizes.vision_hidden,
        )
    )
    vision.save_pretrained(str(vision_dir))
    # The PIL backend needs no torchvision; it saves as a plain "CLIPImageProcessor" config.
    CLIPImageProcessorPil(
        size={"shortest_edge": sizes.image_size},
        crop_size={"height": sizes.image_size, "width": sizes.image_size},
    ).save_pretrained(str(vision_dir))

    tokenizer = train_bpe_tokenizer(_corpus(seed), vocab_size=sizes.vocab_size)
    llm = random_llama(tokenizer, sizes.llm_hidden, sizes.llm_intermediate, sizes.llm_layers, sizes.llm_heads,
                       sizes.llm_kv_heads, sizes.max_positions)
    llm.save_pretrained(str(llm_dir))
    tokenizer.save_pretrained(str(llm_dir))
    return vision_dir, llm_dir
