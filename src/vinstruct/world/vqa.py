"""Short-answer visual questions about a split's scenes, as LLaVA training samples.

LLaVA-1.5 adds academic VQA data (VQAv2, GQA, ...) to the paper's instruction data, each
question followed by a short-answer prompt so the model learns when to answer in one word.
GQA's questions are written by a program from scene graphs; this is the same thing for the
shapes world: the questions of `world.questions` (counts, colours, shapes, sides, relations,
existence) written from each scene's annotations, with one-word answers ("Red.", "Two.").

One sample per scene packs several of its questions (the image is encoded once for many
supervised answers), in a seeded random order per scene: a fixed order would let the model
answer by turn position instead of by the question. Packed as an ordinary multi-turn
conversation, later questions can be answered from earlier answers ("What color is the
star?" "Red." "Is there a red star?"), and the model learns to read the conversation instead
of the image; with `independent=True` (the default) the sample is marked
"independent_turns": every exchange is trained as the first one about the image (see
data/encoding.py), as the questions are asked at evaluation.
Only the split asked for is read; the evaluation's test split never is.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vinstruct.data.coco import CocoSet
from vinstruct.data.templates import with_hint
from vinstruct.world.describe import ObjectView
from vinstruct.world.questions import scene_questions

# LLaVA-1.5's prompt for short-answer VQA data, on its own line after each question.
SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."


def vqa_samples(world_dir: str | os.PathLike, split: str = "train", *, seed: int = 0, max_turns: int = 10,
                prompt: str = SHORT_ANSWER_PROMPT, prompt_position: str = "after", repeats: int = 1,
                independent: bool = True) -> list[dict]:
    """LLaVA JSON samples (image paths relative to `world_dir`), `repeats` per scene with fresh draws.

    prompt_position: the prompt's line "after" each question (LLaVA-1.5) or "before" it. Before, with
    independent turns, the prompt becomes part of the prefix every packed exchange shares (system,
    image, prompt), so it is encoded once per sample instead of once per question: about 30 % fewer
    tokens for the demo's ten one-word questions. The model must then be asked the same way
    (`with_hint(..., position="before")`, `vinstruct eval --answer-hint-position before`).
    """

    root = Path(world_dir)
    coco = CocoSet.load(world_dir, split)
    samples = []
    for image in coco.images:
        objects = [ObjectView.from_coco_object(o) for o in image.objects]
        if not objects:
            continue
        for repeat in range(repeats):
            rng = np.random.default_rng([seed, image.id, repeat])
            questions = scene_questions(objects, image.width, rng)
            order = rng.permutation(len(questions))[:max_turns]
            turns = []
            for k, index in enumerate(order):
                question = questions[index]
                # Independent exchanges each carry the prompt, as each evaluation question does; in an
                # ordinary conversation it is said once, with the first question.
                text = with_hint(question.text, prompt, prompt_position) if (k == 0 or independent) \
                    else question.text
                turns.append({"from": "human", "value": f"<image>\n{text}" if k == 0 else text})
                turns.append({"from": "gpt", "value": question.reply})
            sample = {"id": f"vqa-{image.id}-{repeat}", "image": Path(os.path.relpath(image.path, root)).as_posix(),
                      "conversations": turns}
            if independent:
                sample["independent_turns"] = True
            samples.append(sample)
    return samples
