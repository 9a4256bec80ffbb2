"""POPE-style object hallucination: "Is there a <object> in the image?" with yes/no answers.

For each image, up to `per_image` categories it contains are asked (answer yes) and as many
it does not contain (answer no). The negatives are drawn three ways, as in POPE:
  random       uniformly among the absent categories
  popular      the absent categories that are most frequent in the whole split
  adversarial  the absent categories that most often co-occur with the image's own
Replies are read with `extract_yes_no` (the first yes/no word decides; a reply with neither
is "unclear", counted as not asserting the object, and reported). Metrics treat "yes" as
the positive class: accuracy, precision, recall, F1 and the yes-ratio, in percent.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from itertools import combinations
from pathlib import Path

from vinstruct.data.coco import CocoSet
from vinstruct.data.formats import load_questions, read_jsonl, write_jsonl
from vinstruct.data.templates import with_hint
from vinstruct.errors import VinstructError
from vinstruct.eval import report
from vinstruct.eval.extract import extract_yes_no
from vinstruct.eval.predict import PredictOptions, predict, read_answers, resolve_model
from vinstruct.eval.scene import with_article

STRATEGIES = ("random", "popular", "adversarial")


def _negatives(strategy: str, present: set[str], k: int, all_cats: list[str], frequency: Counter,
               cooccur: Counter, rng: random.Random) -> list[str]:
    absent = [c for c in all_cats if c not in present]
    if strategy == "random":
        return rng.sample(absent, min(k, len(absent)))
    if strategy == "popular":
        ranked = sorted(absent, key=lambda c: (-frequency[c], c))
    elif strategy == "adversarial":
        ranked = sorted(absent, key=lambda c: (-sum(cooccur[frozenset((c, p))] for p in present), -frequency[c], c))
    else:
        raise VinstructError(f"unknown POPE strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    return ranked[:k]


def build_questions(coco_dir: str | os.PathLike, split: str, out_dir: str | os.PathLike,
                    strategies=STRATEGIES, per_image: int = 3, limit_images: int | None = None,
                    seed: int = 0, answer_hint: str = "", hint_position: str = "after") -> dict[str, tuple[Path, Path]]:
    """Write pope_<strategy>.jsonl (questions) and pope_<strategy>_gold.jsonl per strategy."""
    coco = CocoSet.load(coco_dir, split, require_captions=False)
    frequency: Counter = Counter()
    cooccur: Counter = Counter()
    per_image_cats = {}
    for image in coco.images:
        cats = sorted({o.category for o in image.objects})
        per_image_cats[image.id] = cats
        frequency.update(cats)
        cooccur.update(frozenset(pair) for pair in combinations(cats, 2))
    images = [img for img in coco.images if per_image_cats[img.id]]
    images = images[:limit_images] if limit_images else images
    if not images:
        raise VinstructError(f"{coco_dir}: split {split!r} has no image with objects to ask about")
    out_dir = Path(out_dir)
    paths = {}
    for strategy in strategies:
        rng = random.Random(f"{seed}-{strategy}")
        questions, gold = [], []
        for image in images:
            present = per_image_cats[image.id]
            positives = rng.sample(present, min(per_image, len(present)))
            negatives = _negatives(strategy, set(present), len(positives), coco.categories, frequency, cooccur, rng)
            asked = [(c, "yes") for c in positives] + [(c, "no") for c in negatives]
            rng.shuffle(asked)
            for category, answer in asked:
                qid = f"{strategy}-{len(questions)}"
                questions.append({"question_id": qid, "image": image.file_name,
                                  "text": with_hint(f"Is there {with_article(category)} in the image?", answer_hint,
                                                    hint_position),
                                  "category": strategy})
                gold.append({"question_id": qid, "answer": answer, "object": category, "image_id": image.id})
        paths[strategy] = (out_dir / f"pope_{strategy}.jsonl", out_dir / f"pope_{strategy}_gold.jsonl")
        write_jsonl(paths[strategy][0], questions)
        write_jsonl(paths[strategy][1], gold)
    return paths


def metrics(pairs: list[tuple[str, str | None]]) -> dict:
    """[(gold, predicted)] with predicted 'yes', 'no' or None (unclear, counted as 'no')."""
    tp = sum(1 for g, p in pairs if g == "yes" and p == "yes")
    fp = sum(1 for g, p in pairs if g == "no" and p == "yes")
    tn = sum(1 for g, p in pairs if g == "no" and p != "yes")
    fn = sum(1 for g, p in pairs if g == "yes" and p != "yes")
    n = len(pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": 100.0 * (tp + tn) / n if n else 0.0, "precision": 100.0 * precision,
            "recall": 100.0 * recall, "f1": 100.0 * f1, "yes_ratio": 100.0 * (tp + fp) / n if n else 0.0,
            "unclear": sum(1 for _, p in pairs if p is None), "total": n,
            "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def score(gold: list[dict], answers: dict) -> dict:
    pairs = [(row["answer"], extract_yes_no(answers[row["question_id"]]["text"]))
             for row in gold if row["question_id"] in answers]
    result = metrics(pairs)
    result["unanswered"] = len(gold) - len(pairs)
    return result


def evaluate(model, coco_dir: str | os.PathLike, out_dir: str | os.PathLike, split: str = "test", *,
             strategies=STRATEGIES, per_image: int = 3, limit_images: int | None = None, batch_size: int = 16,
             max_new_tokens: int = 6, conv_mode: str | None = None, seed: int = 0, progress: bool = True,
             answer_hint: str = "", hint_position: str = "after") -> dict:
    model, model_id = resolve_model(model)
    out_dir = Path(out_dir)
    paths = build_questions(coco_dir, split, out_dir, strategies, per_image, limit_images, seed, answer_hint,
                            hint_position)
    image_dir = CocoSet.load(coco_dir, split, require_captions=False).images[0].path.parent
    options = PredictOptions(batch_size=batch_size, max_new_tokens=max_new_tokens, conv_mode=conv_mode,
                             model_id=model_id)
    per_strategy, stats, unanswered = {}, {}, 0
    for strategy, (questions_path, gold_path) in paths.items():
        answers_path = out_dir / f"answers_{strategy}.jsonl"
        run = predict(model, load_questions(questions_path), answers_path, image_dir, options, progress)
        per_strategy[strategy] = score(read_jsonl(gold_path), read_answers(answers_path))
        stats[strategy] = run.to_dict()
        unanswered += per_strategy[strategy]["unanswered"]
    metric_names = ("accuracy", "precision", "recall", "f1", "yes_ratio")
    headline = {f"{s} {m}": v[m] for s, v in per_strategy.items() for m in ("f1", "accuracy", "yes_ratio")}
    results = {"suite": "pope", "model": model_id, "split": split, "complete": unanswered == 0,
               "metrics": headline, "strategies": per_strategy, "predict": stats}
    if unanswered:
        results["incomplete_reason"] = f"{unanswered} question(s) unanswered"
    rows = [[s] + [v[m] for m in metric_names] + [v["unclear"], v["total"]] for s, v in per_strategy.items()]
    table = report.markdown_table(["negatives", "accuracy", "precision", "recall", "F1", "yes %", "unclear", "n"], rows)
    chart = {s: {m: v[m] for m in ("accuracy", "precision", "recall", "f1")} for s, v in per_strategy.items()}
    report.save_run(out_dir, results, table, chart, f"POPE ({split})")
    return results


# ---- the "pope" suite (vinstruct.eval.suites) ----------------------------------------------------
def evaluate_suite(model, out: Path, request) -> dict:
    return evaluate(model, request.world_dir, out, request.split, limit_images=request.limit, seed=request.seed,
                    answer_hint=request.answer_hint, hint_position=request.hint_position,
                    **request.generation_options())


def suite_questions(out: Path, request) -> list[Path]:
    pairs = build_questions(request.world_dir, request.split, out, limit_images=request.limit, seed=request.seed,
                            answer_hint=request.answer_hint, hint_position=request.hint_position)
    return [path for pair in pairs.values() for path in pair]
