"""A small causal LM (transformers `LlamaForCausalLM`) trained from scratch on world text.

Shallow and fairly wide on purpose: later stages fine-tune it with image
features spliced in, and on this world a 2-layer model learns that far faster
than a deeper one of the same cost (docs/world.md, design notes).
Documents are packed into fixed-length blocks (GPT-style pretraining).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm
from transformers import LlamaForCausalLM

from vinstruct.bootstrap.schedule import adamw, warmup_cosine
from vinstruct.model.random_parts import random_llama


@dataclass
class LmSettings:
    hidden: int = 192
    layers: int = 2
    heads: int = 4
    intermediate: int = 512
    max_positions: int = 2048
    block: int = 256
    steps: int = 400
    batch_size: int = 8
    lr: float = 2e-3
    warmup: int = 30
    weight_decay: float = 0.1


def build_lm(tokenizer, settings: LmSettings) -> LlamaForCausalLM:
    return random_llama(tokenizer, settings.hidden, settings.intermediate, settings.layers, settings.heads,
                        settings.heads, settings.max_positions)


def pack(tokenizer, documents: list[str], block: int) -> torch.Tensor:
    """Token blocks [n, block]: documents (BOS ... EOS) concatenated and cut; the tail is dropped."""
    stream: list[int] = []
    eos = tokenizer.eos_token_id
    for ids in tokenizer(documents)["input_ids"]:
        stream += ids if ids and ids[-1] == eos else ids + [eos]
    n = len(stream) // block
    if n == 0:  # tiny corpora (tests): one short block
        return torch.tensor([stream])
    return torch.tensor(stream[: n * block]).view(n, block)


def train_lm(model: LlamaForCausalLM, blocks: torch.Tensor, settings: LmSettings, seed: int,
             progress: bool = True) -> list[dict]:
    """Next-token training over shuffled blocks; returns the loss log (one row per step)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = adamw(model, settings.lr, settings.weight_decay)
    scheduler = warmup_cosine(optimizer, settings.warmup, settings.steps)
    model.train()
    order: list[int] = []
    log, start = [], time.time()
    bar = tqdm(range(settings.steps), desc="lm", unit="step", disable=not progress)
    for step in bar:
        if len(order) < settings.batch_size:
            order += torch.randperm(len(blocks), generator=generator).tolist()
        batch = blocks[order[: settings.batch_size]]
        del order[: settings.batch_size]
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        value = float(loss.detach())
        log.append({"step": step + 1, "loss": round(value, 4), "lr": scheduler.get_last_lr()[0],
                    "seconds": round(time.time() - start, 2)})
        bar.set_postfix(loss=f"{value:.3f}")
    model.eval()
    return log


@torch.no_grad()
def perplexity(model: LlamaForCausalLM, blocks: torch.Tensor, batch: int = 32) -> float:
    """Per-token perplexity over held-out blocks."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch):
        chunk = blocks[start:start + batch]
        tokens = chunk.numel() - chunk.shape[0]  # predictions made (the first token of a block is not)
        total += float(model(input_ids=chunk, labels=chunk).loss) * tokens
        count += tokens
    return round(math.exp(total / max(1, count)), 3)


@torch.no_grad()
def complete(model: LlamaForCausalLM, tokenizer, prompts: list[str], max_new_tokens: int = 48) -> list[str]:
    """Greedy continuations of each prompt (stopping at EOS), as text."""
    model.eval()
    outputs = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        outputs.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return outputs


def settings_dict(settings: LmSettings) -> dict:
    return asdict(settings)


@torch.no_grad()
def text_qa_accuracy(model: LlamaForCausalLM, tokenizer, prompts: list[str], answers: list[str]) -> float:
    """Percent of prompts whose greedy reply starts with the expected answer (case-insensitive)."""
    replies = complete(model, tokenizer, prompts, max_new_tokens=4)
    right = sum(reply.lower().startswith(answer.lower()) for reply, answer in zip(replies, answers))
    return round(100 * right / max(1, len(prompts)), 1)
