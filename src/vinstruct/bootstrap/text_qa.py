"""Zero-shot text QA: how well a causal LM answers exact questions about a scene told in words.

The quiz is the bootstrap's (`corpus.text_qa_questions`): one question per val scene, question
categories in turn, the scene's two complete captions as its description, asked in one user turn of
the LM's chat template. It measures what a later LLaVA model must at least match from pixels, so it
is the base LM's own figure in a report: the from-scratch LM learnt exactly this format, a pretrained
chat LM meets it cold.

Two scores over the same greedy replies:
  accuracy         the world exact-QA rule (eval/exact.py): the reply's first answer word counts, so
                   "There are two stars." answers "two" — fair to a chat LM that writes sentences;
  accuracy_prefix  the reply must start with the answer, the bootstrap report's rule (its LM was
                   trained to reply "Two.").
"""

from __future__ import annotations

import os
import time

import torch

from vinstruct.bootstrap.corpus import text_qa_questions
from vinstruct.data.templates import DEFAULT_TEMPLATE, get_template
from vinstruct.errors import VinstructError
from vinstruct.eval import exact

QA_QUESTIONS = 120  # as many as the bootstrap report asks
QA_SEED = 2  # the bootstrap report's quiz (its seed 0 + 2): the same questions for both LMs
RELATION_WORDS = ("yes", "no", "above", "below")


def guess_template(tokenizer) -> str:
    """'chatml' for a tokenizer that knows ChatML's markers, else 'vicuna_v1' (the bootstrap LM's)."""
    vocab = tokenizer.get_vocab()
    return "chatml" if "<|im_start|>" in vocab and "<|im_end|>" in vocab else DEFAULT_TEMPLATE


@torch.no_grad()
def greedy_replies(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
                   stop_strings: list[str]) -> list[str]:
    """Greedy replies to `prompts`, batched with left padding, cut at the template's stop strings."""
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    replies = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True)
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id)
            for row in out[:, batch["input_ids"].shape[1]:]:
                text = tokenizer.decode(row, skip_special_tokens=False)
                for stop in stop_strings:
                    text = text.split(stop)[0]
                replies.append(text.strip())
    finally:
        tokenizer.padding_side = side
    return replies


def score_text_qa(model, tokenizer, val, shapes, colors, *, template: str | None = None, system: str | None = None,
                  hint: str = "", questions: int = QA_QUESTIONS, seed: int = QA_SEED, max_new_tokens: int = 16,
                  batch_size: int = 16) -> dict:
    """The zero-shot text-QA figures of a loaded causal LM on a world split (`bootstrap.worlddata`)."""
    start = time.time()
    template = template or guess_template(tokenizer)
    chat = get_template(template)
    eos = tokenizer.eos_token or ""
    quiz = text_qa_questions(val, seed, questions)
    prompts = [chat.generation_prompt([("human", f"{context}\n{q.text}{hint}")], system, eos) for context, q in quiz]
    replies = greedy_replies(model, tokenizer, prompts, max_new_tokens, batch_size,
                             [s for s in chat.stop_strings(eos) if s])
    vocabulary = {"color": list(colors), "shape": list(shapes), "relation": list(RELATION_WORDS)}
    records = []
    for (_, q), reply in zip(quiz, replies):
        records.append({
            "question": q.text, "answer": q.answer, "category": q.category, "reply": reply,
            "correct": exact.is_correct(reply, q.answer, q.category, vocabulary, question=q.text),
            "correct_prefix": reply.lower().startswith(q.answer.lower()),
        })
    n = max(1, len(records))
    return {
        "accuracy": round(100 * sum(r["correct"] for r in records) / n, 1),
        "accuracy_prefix": round(100 * sum(r["correct_prefix"] for r in records) / n, 1),
        "questions": len(records),
        "by_category": {k: round(v["accuracy"], 1) for k, v in exact.accuracy_table(records, "category").items()},
        "template": template,
        "system": chat.system if system is None else system,
        "hint": hint,
        "seconds": round(time.time() - start, 1),
        "examples": records[:6],
    }


def text_qa_score(llm_dir: str | os.PathLike, world_dir: str | os.PathLike, split: str = "val", **options) -> dict:
    """Zero-shot text QA of the causal-LM directory `llm_dir` on a world's `split` (see score_text_qa).

    The template defaults to the one the tokenizer's markers suggest ('chatml' for a pretrained
    ChatML model such as the packaged SmolLM2, 'vicuna_v1' for the bootstrapped LM).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vinstruct.bootstrap.worlddata import load_split
    from vinstruct.world.manifest import load_manifest

    manifest = load_manifest(world_dir)
    data = load_split(world_dir, split, int(manifest["image_size"]))
    try:
        model = AutoModelForCausalLM.from_pretrained(str(llm_dir), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
    except OSError as err:
        raise VinstructError(f"language model {str(llm_dir)!r}: cannot load ({err})") from None
    return score_text_qa(model, tokenizer, data, manifest["shapes"], manifest["colors"], **options)
