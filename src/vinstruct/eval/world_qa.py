"""Exact QA on the world's held-out split: one definite short answer per question.

Question types (at most one of each per image, existence twice: one present, one absent):
  count      "How many circles are there in the image?"            -> "2" (also "0")
  color      "What color is the triangle?"  (only one triangle)     -> "red"
  shape      "What shape is the blue object?" (only one blue one)   -> "square"
  position   "Is the red circle on the left or on the right side of the image?"  -> "left"
             (asked only for objects in the outer thirds)
  existence  "Is there a green star in the image?"                  -> "yes" / "no"
             (the absent object shares the colour or the shape of a present one)
A question is in the *unseen* subset when the object it asks about (for count: any object
of that shape; for existence: the asked-for category) is a shape/colour pair that
world.json holds out of training.

Files: questions.jsonl (official question format; "category" is the type), gold.jsonl
({"question_id", "answer", "type", "unseen", "image_id"}), kept apart so `predict` never
sees the answers.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from vinstruct.data.coco import CocoImage, CocoSet
from vinstruct.data.formats import load_questions, read_jsonl, write_jsonl
from vinstruct.data.templates import with_hint
from vinstruct.errors import VinstructError
from vinstruct.eval import exact, report
from vinstruct.eval.predict import PredictOptions, predict, read_answers, resolve_model
from vinstruct.eval.scene import SceneObject, WorldInfo, objects_of_image, with_article

# Put under every question, on its own line, when given (LLaVA-1.5 style short-answer prompt); empty by default
# because the world's instruction data already answers exact questions with the short answer first.
ANSWER_HINT = ""


def plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def _count_question(objects, world, rng):
    present = sorted({o.shape for o in objects})
    shape = rng.choice(present) if rng.random() < 0.7 else rng.choice(world.shapes)
    counted = [o for o in objects if o.shape == shape]
    return (f"How many {plural(shape)} are there in the image?", str(len(counted)),
            any(world.is_unseen(o) for o in counted))


def _color_question(objects, world, rng):
    unique = [o for o in objects if sum(p.shape == o.shape for p in objects) == 1]
    if not unique:
        return None
    target = rng.choice(unique)
    return f"What color is the {target.shape}?", target.color, world.is_unseen(target)


def _shape_question(objects, world, rng):
    unique = [o for o in objects if sum(p.color == o.color for p in objects) == 1]
    if not unique:
        return None
    target = rng.choice(unique)
    return f"What shape is the {target.color} object?", target.shape, world.is_unseen(target)


def _position_question(objects, world, rng):
    unique = [o for o in objects if sum(p.category == o.category for p in objects) == 1]
    options = [(o, axis) for o in unique for axis in ("x", "y") if o.side(axis)]
    if not options:
        return None
    target, axis = rng.choice(options)
    ask = "on the left or on the right side" if axis == "x" else "at the top or at the bottom"
    return f"Is the {target.category} {ask} of the image?", target.side(axis), world.is_unseen(target)


def _existence_questions(objects, world, rng):
    """One present object and one absent one that shares its colour or its shape (so answering
    needs both attributes, not just one)."""
    present = rng.choice(objects)
    questions = [(f"Is there {with_article(present.category)} in the image?", "yes", world.is_unseen(present))]
    categories = {o.category for o in objects}
    near = [(present.shape, c) for c in world.colors] + [(s, present.color) for s in world.shapes]
    absent = [(s, c) for s, c in dict.fromkeys(near) if f"{c} {s}" not in categories]
    if absent:
        shape, color = rng.choice(absent)
        questions.append((f"Is there {with_article(f'{color} {shape}')} in the image?", "no",
                          (shape, color) in world.held_out))
    return questions


def questions_for_image(image: CocoImage, world: WorldInfo, seed: int = 0) -> list[tuple[str, str, str, bool]]:
    """[(type, question, answer, unseen)] for one image; deterministic given the seed and image id."""
    objects: list[SceneObject] = objects_of_image(image)
    if not objects:
        return []
    rng = random.Random(f"{seed}-{image.id}")
    out = []
    for kind, build in (("count", _count_question), ("color", _color_question),
                        ("shape", _shape_question), ("position", _position_question)):
        made = build(objects, world, rng)
        if made:
            out.append((kind, *made))
    out += [("existence", *q) for q in _existence_questions(objects, world, rng)]
    return out


def build_questions(world_dir: str | os.PathLike, split: str, out_dir: str | os.PathLike, seed: int = 0,
                    limit_images: int | None = None, answer_hint: str = ANSWER_HINT,
                    hint_position: str = "after") -> tuple[Path, Path]:
    """Write questions.jsonl and gold.jsonl for the split; returns both paths."""
    world = WorldInfo.load(world_dir)
    coco = CocoSet.load(world_dir, split)
    images = coco.images[:limit_images] if limit_images else coco.images
    questions, gold = [], []
    for image in images:
        for index, (kind, text, answer, unseen) in enumerate(questions_for_image(image, world, seed)):
            qid = f"{image.id}-{index}"
            questions.append({"question_id": qid, "image": image.file_name,
                              "text": with_hint(text, answer_hint, hint_position), "category": kind})
            gold.append({"question_id": qid, "answer": answer, "type": kind, "unseen": unseen, "image_id": image.id})
    if not questions:
        raise VinstructError(f"{world_dir}: split {split!r} has no annotated objects to ask about")
    out_dir = Path(out_dir)
    write_jsonl(out_dir / "questions.jsonl", questions)
    write_jsonl(out_dir / "gold.jsonl", gold)
    return out_dir / "questions.jsonl", out_dir / "gold.jsonl"


def score(gold: list[dict], answers: dict, world: WorldInfo, questions: dict | None = None) -> dict:
    """Accuracy overall, per type, and on the unseen subset; unanswered questions are counted apart."""
    vocabulary = {"color": world.colors, "shape": world.shapes}
    records = []
    for row in gold:
        answer = answers.get(row["question_id"])
        if answer is None:
            continue
        asked = (questions or {}).get(row["question_id"], {}).get("text")
        correct = exact.is_correct(answer["text"], row["answer"], row["type"], vocabulary, asked)
        records.append({**row, "correct": correct})
    unseen = [r for r in records if r["unseen"]]
    return {"overall": exact.overall(records), "by_type": exact.accuracy_table(records, "type"),
            "unseen": exact.overall(unseen), "unseen_by_type": exact.accuracy_table(unseen, "type"),
            "unanswered": len(gold) - len(records)}


def _table(scores: dict, blind: dict | None) -> str:
    rows = []
    types = list(scores["by_type"]) + ["all"]
    for kind in types:
        main = scores["overall"] if kind == "all" else scores["by_type"][kind]
        unseen = scores["unseen"] if kind == "all" else scores["unseen_by_type"].get(kind)
        row = [kind, main["total"], main["accuracy"], unseen["accuracy"] if unseen and unseen["total"] else None]
        if blind is not None:
            b = blind["overall"] if kind == "all" else blind["by_type"].get(kind)
            bu = blind["unseen"] if kind == "all" else blind["unseen_by_type"].get(kind)
            row += [b["accuracy"] if b else None, bu["accuracy"] if bu and bu["total"] else None]
        rows.append(row)
    headers = ["type", "questions", "accuracy %", "unseen %"]
    if blind is not None:
        headers += ["image-blind %", "image-blind unseen %"]
    return report.markdown_table(headers, rows)


def evaluate(model, world_dir: str | os.PathLike, out_dir: str | os.PathLike, split: str = "test", *,
             limit_images: int | None = None, batch_size: int = 16, max_new_tokens: int = 8,
             conv_mode: str | None = None, blind: bool = True, seed: int = 0, answer_hint: str = ANSWER_HINT,
             hint_position: str = "after", progress: bool = True) -> dict:
    """Build the questions, answer them with (and without) the image, score, write the report files."""
    model, model_id = resolve_model(model)
    out_dir = Path(out_dir)
    questions_path, gold_path = build_questions(world_dir, split, out_dir, seed, limit_images, answer_hint,
                                                   hint_position)
    questions, gold = load_questions(questions_path), read_jsonl(gold_path)
    world = WorldInfo.load(world_dir)
    coco_images = Path(CocoSet.load(world_dir, split).images[0].path).parent
    options = PredictOptions(batch_size=batch_size, max_new_tokens=max_new_tokens, conv_mode=conv_mode,
                             model_id=model_id)
    stats = predict(model, questions, out_dir / "answers.jsonl", coco_images, options, progress)
    by_id = {q["question_id"]: q for q in questions}
    scores = score(gold, read_answers(out_dir / "answers.jsonl"), world, by_id)
    blind_scores, blind_stats = None, None
    if blind:
        blind_options = PredictOptions(**{**options.__dict__, "image_blind": True})
        blind_stats = predict(model, questions, out_dir / "answers_blind.jsonl", coco_images, blind_options, progress)
        blind_scores = score(gold, read_answers(out_dir / "answers_blind.jsonl"), world, by_id)
    metrics = {"accuracy": scores["overall"]["accuracy"], "unseen accuracy": scores["unseen"]["accuracy"]}
    metrics.update({f"{kind} accuracy": v["accuracy"] for kind, v in scores["by_type"].items()})
    if blind_scores:
        metrics["image-blind accuracy"] = blind_scores["overall"]["accuracy"]
        metrics["image-blind unseen accuracy"] = blind_scores["unseen"]["accuracy"]
    results = {"suite": "world", "model": model_id, "split": split, "complete": scores["unanswered"] == 0,
               "questions": len(gold), "metrics": metrics, "scores": scores, "image_blind": blind_scores,
               "predict": stats.to_dict(), "predict_blind": blind_stats.to_dict() if blind_stats else None}
    if not results["complete"]:
        results["incomplete_reason"] = f"{scores['unanswered']} question(s) unanswered (see predict.skipped)"
    chart = {kind: {"with image": v["accuracy"]} for kind, v in scores["by_type"].items()}
    chart["unseen"] = {"with image": scores["unseen"]["accuracy"]}
    if blind_scores:
        for kind in chart:
            source = blind_scores["unseen"] if kind == "unseen" else blind_scores["by_type"].get(kind)
            chart[kind]["image-blind"] = source["accuracy"] if source else 0.0
    report.save_run(out_dir, results, _table(scores, blind_scores), chart, f"World exact QA ({split})",
                    "accuracy %")
    return results


# ---- the "world" suite (vinstruct.eval.suites) ---------------------------------------------------
def evaluate_suite(model, out: Path, request) -> dict:
    return evaluate(model, request.world_dir, out, request.split, limit_images=request.limit, blind=request.blind,
                    seed=request.seed, answer_hint=request.answer_hint, hint_position=request.hint_position,
                    **request.generation_options())


def suite_questions(out: Path, request) -> list[Path]:
    return list(build_questions(request.world_dir, request.split, out, request.seed, request.limit,
                                request.answer_hint, request.hint_position))
