"""The evaluation hook of a run: held-out loss, a quick exact-QA score, any `fn(model) -> dict`.

- held-out loss: token-mean loss over (up to eval_max_samples of) a LLaVA JSON file,
  encoded like the training data; every process evaluates its share.
- quick exact QA: a JSONL of {"question_id", "image", "text", "answer"}; greedy answers
  are compared with `answer` after lower-casing and stripping punctuation/space.
- hooks: callables (Python API) or "module:function" names (config), given the model.
QA and hooks need the whole model in one process, so they run on rank 0 and are
skipped where the model is sharded (FSDP, DeepSpeed ZeRO-3).
"""

from __future__ import annotations

import importlib
import logging
import math
import re
from pathlib import Path

import torch

from vinstruct.data.encoding import EncodingSpec, encode_prompt
from vinstruct.data.formats import load_questions
from vinstruct.errors import VinstructError
from vinstruct.model.lean_forward import release_stacked_weights

log = logging.getLogger(__name__)


def held_out_loss(wrapped, source, env, batch_size: int, max_samples: int, autocast) -> float:
    """Token-mean loss over the first max_samples samples (sorted by length to pad little)."""
    order = sorted(range(min(len(source.dataset), max_samples)), key=lambda i: source.dataset.lengths[i])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    # Every process runs the same number of forwards (FSDP gathers weights collectively).
    rounds = math.ceil(len(batches) / env.world_size)
    mine = [(batches[(r * env.world_size + env.rank) % len(batches)], r * env.world_size + env.rank < len(batches))
            for r in range(rounds)]
    loss_sum, tokens = 0.0, 0
    was_training = wrapped.training
    wrapped.eval()
    with torch.no_grad():
        for batch, (_, counts) in zip(source.iterate([b for b, _ in mine]), mine):
            if batch.get("input_ids") is None:
                continue
            with autocast():
                loss, n = wrapped(**model_inputs(batch, env.device))
            if counts:
                loss_sum, tokens = loss_sum + float(loss), tokens + int(n)
    wrapped.train(was_training)
    loss_sum, tokens = env.sum(loss_sum), env.sum(tokens)
    return loss_sum / tokens if tokens else float("nan")


def model_inputs(batch: dict, device) -> dict:
    """The tensors of a collated batch that the training module takes, on `device`."""
    keys = ("input_ids", "attention_mask", "labels", "pixel_values", "vision_features", "turn_segments",
            "position_ids")
    return {k: batch[k].to(device) for k in keys if batch.get(k) is not None}


def normalize_answer(text: str) -> str:
    return re.sub(r"[^\w\s]", "", text.lower()).strip()


def quick_exact_qa(model, questions_path: str, image_dir: str | None, limit: int, max_new_tokens: int = 24) -> dict:
    """Share of questions whose greedy answer equals the reference answer (normalized)."""
    questions = load_questions(questions_path)[:limit]
    missing = [q["question_id"] for q in questions if "answer" not in q]
    if missing:
        raise VinstructError(f"{questions_path}: question {missing[0]!r} has no 'answer' (needed for exact QA)")
    root = Path(image_dir) if image_dir else Path(questions_path).parent
    spec = EncodingSpec.for_model(model)
    was_training = model.training
    model.eval()
    correct = 0
    for q in questions:
        text = q["text"] if "<image>" in q["text"] or not q.get("image") else f"<image>\n{q['text']}"
        prompt = encode_prompt(spec, [("human", text)])
        pixels = model.image_processor.load([root / q["image"]]).to(model.device) if q.get("image") else None
        answer = model.generate([prompt], pixels, max_new_tokens=max_new_tokens)[0].text
        correct += normalize_answer(answer) == normalize_answer(str(q["answer"]))
    release_stacked_weights(model.llm)  # training goes on: the engine's stacked copies would be stale
    model.train(was_training)
    return {"exact_qa": correct / max(len(questions), 1), "exact_qa_n": len(questions)}


def resolve_hook(hook):
    """A callable, or 'package.module:function'."""
    if hook is None or callable(hook):
        return hook
    module_name, _, name = str(hook).partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise VinstructError(f"eval_hook {hook!r}: cannot import ({err}); expected 'module:function'") from None


def run_hooks(model, hooks, env) -> dict:
    if env.sharded:
        if hooks:
            log.warning("evaluation hooks are skipped under %s (the model is sharded)", env.strategy)
        return {}
    results: dict = {}
    if env.is_main:
        for hook in hooks:
            out = hook(model)
            if not isinstance(out, dict):
                raise VinstructError(f"evaluation hook {hook!r} returned {type(out).__name__}, expected a dict")
            results.update(out)
    return results
