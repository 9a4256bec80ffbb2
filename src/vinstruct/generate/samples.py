"""Building LLaVA samples: caption expansion (stage 1) and teacher replies (stage 2).

A sample is {"id", "image", "conversations": [{"from": "human"|"gpt", "value"}]} with
`<image>` once, at the start or the end of the first human turn (seeded).
"""

from __future__ import annotations

import hashlib
import json
import random

from vinstruct.data.coco import CocoImage

IMAGE_MARKER = "<image>"


def stable_seed(*parts) -> int:
    """A seed from any JSON-able parts, the same on every machine and Python version."""
    blob = json.dumps([str(p) for p in parts], ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(blob.encode("utf-8")).digest()[:8], "big") >> 1


def with_image(text: str, rng: random.Random) -> str:
    """Put `<image>` before or after the first question (both occur in LLaVA data)."""
    return f"{IMAGE_MARKER}\n{text}" if rng.random() < 0.5 else f"{text}\n{IMAGE_MARKER}"


def sample_id(image: CocoImage, task: str, index: int) -> str:
    return f"{image.id}-{task}-{index}"


def to_conversations(pairs: list[tuple[str, str]], rng: random.Random) -> list[dict]:
    conversations = []
    for number, (question, answer) in enumerate(pairs):
        value = with_image(question, rng) if number == 0 else question
        conversations += [{"from": "human", "value": value}, {"from": "gpt", "value": answer}]
    return conversations


def caption_samples(image: CocoImage, image_ref: str, instructions: list[str], count: int, seed: int) -> list[dict]:
    """Stage-1 samples: a brief-description instruction (drawn, seeded) answered by a caption."""
    rng = random.Random(stable_seed(seed, image.id, "caption"))
    captions = [c for c in image.captions if c.strip()]
    chosen = captions if count >= len(captions) else rng.sample(captions, count)
    samples = []
    for index, caption in enumerate(chosen):
        pairs = [(rng.choice(instructions), caption.strip())]
        samples.append({"id": sample_id(image, "caption", index), "image": image_ref,
                        "conversations": to_conversations(pairs, rng)})
    return samples


def teacher_sample(image: CocoImage, image_ref: str, task: str, index: int, pairs: list[tuple[str | None, str]],
                   detail_questions: list[str], seed: int) -> dict:
    """A sample from parsed teacher turns; a detail reply gets a question drawn from the list."""
    rng = random.Random(stable_seed(seed, image.id, task, index, "sample"))
    if task == "detail":
        pairs = [(rng.choice(detail_questions), pairs[0][1])]
    return {"id": sample_id(image, task, index), "image": image_ref, "conversations": to_conversations(pairs, rng)}


def pack_by_image(samples: list[dict], keep_separate: tuple[str, ...] = ("caption",)) -> list[dict]:
    """One multi-turn sample per image from all its samples (many more supervised tokens per sequence).

    Samples of the `keep_separate` types stay as they are. `<image>` stays in the first turn only.
    Ids become '<image id>-packed-0'.
    """
    packed: dict[str, dict] = {}
    out: list[dict] = []
    for sample in samples:
        image_id, task, _ = str(sample["id"]).rsplit("-", 2)
        if task in keep_separate or "image" not in sample:
            out.append(sample)
            continue
        turns = [dict(t) for t in sample["conversations"]]
        if image_id in packed:
            first = turns[0]["value"].replace(IMAGE_MARKER, "").strip()
            turns[0]["value"] = first
            packed[image_id]["conversations"] += turns
        else:
            packed[image_id] = {"id": f"{image_id}-packed-0", "image": sample["image"], "conversations": turns}
            out.append(packed[image_id])
    return out
