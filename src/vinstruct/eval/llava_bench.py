"""LLaVA-Bench-style judged evaluation on the world's scenes.

Per image, one question in each category:
  conversation  a short factual question ("What color is the star?")
  detail        a request for a detailed description
  complex       a question that needs reasoning over the scene
The reference answer (Assistant 1) comes from the text-only teacher reading the scene's
symbolic text; the candidate (Assistant 2) is the model's answer with the image. A judge
reads the symbolic text, the question and both answers and scores each 1-10 under the
category's rule. Per category and overall: mean reference score, mean candidate score and
the relative score mean(candidate) / mean(reference) x 100, as in the paper's table.
Reviews the judge's reply cannot be read from (after retries) or never came back are
counted and left out of the means.

Files in the output directory: questions.jsonl, context.jsonl ({"image", "caption"}: the
symbolic text), references.jsonl and answers.jsonl (answer format), reviews.jsonl.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from vinstruct.data.coco import CocoImage, CocoSet
from vinstruct.data.formats import load_questions, read_jsonl, write_jsonl
from vinstruct.data.symbolic import symbolic_for_image
from vinstruct.errors import VinstructError
from vinstruct.eval import judge_prompts, report
from vinstruct.eval.extract import parse_scores
from vinstruct.eval.predict import PredictOptions, predict, read_answers, resolve_model
from vinstruct.eval.scene import objects_of_image
from vinstruct.eval.world_qa import plural
from vinstruct.generate.prompts import TEACHER_TYPES

CATEGORIES = TEACHER_TYPES  # LLaVA-Bench asks one question of each instruction type
DETAIL_QUESTIONS = ("Describe this image in detail.", "What is in this picture? Describe everything you see.",
                    "Give a thorough description of the image.")


def _conversation(objects, rng) -> str:
    unique = [o for o in objects if sum(p.shape == o.shape for p in objects) == 1]
    options = ["What objects can you see in this image?"]
    if unique:
        options.append(f"What color is the {rng.choice(unique).shape} in the image?")
    shape = rng.choice(objects).shape
    options.append(f"How many {plural(shape)} are there in the image?")
    return rng.choice(options)


def _complex(objects, rng) -> str:
    target = rng.choice(objects)
    options = [f"If the {target.category} were taken away, what would be left in the picture, and where?",
               "Which object is furthest to the left, and how does it differ from the others?",
               "Could the objects in this picture be sorted into groups by color or by shape? Explain how."]
    return rng.choice(options)


def questions_for_image(image: CocoImage, seed: int = 0) -> list[tuple[str, str]]:
    objects = objects_of_image(image)
    if not objects:
        return []
    rng = random.Random(f"{seed}-bench-{image.id}")
    return [("conversation", _conversation(objects, rng)), ("detail", rng.choice(DETAIL_QUESTIONS)),
            ("complex", _complex(objects, rng))]


def build_questions(world_dir: str | os.PathLike, split: str, out_dir: str | os.PathLike, limit_images: int = 30,
                    seed: int = 0) -> tuple[Path, Path]:
    """Write questions.jsonl and context.jsonl (symbolic text per image) for up to `limit_images` scenes."""
    coco = CocoSet.load(world_dir, split)
    images = [img for img in coco.images if img.objects][:limit_images]
    if not images:
        raise VinstructError(f"{world_dir}: split {split!r} has no annotated scenes")
    questions, contexts = [], []
    for image in images:
        contexts.append({"image": image.file_name, "image_id": image.id, "caption": symbolic_for_image(image)})
        for category, text in questions_for_image(image, seed):
            questions.append({"question_id": f"{image.id}-{category}", "image": image.file_name, "text": text,
                              "category": category})
    out_dir = Path(out_dir)
    write_jsonl(out_dir / "questions.jsonl", questions)
    write_jsonl(out_dir / "context.jsonl", contexts)
    return out_dir / "questions.jsonl", out_dir / "context.jsonl"


def _contexts_by_image(path) -> dict[str, str]:
    rows = read_jsonl(path)
    for number, row in enumerate(rows, start=1):
        if "image" not in row or "caption" not in row:
            raise VinstructError(f"{path}:{number}: a context needs 'image' and 'caption'")
    return {row["image"]: row["caption"] for row in rows}


def summarize(questions: list[dict], scores: dict[str, tuple[float, float] | None]) -> dict:
    """Per category and "all": n, failed, reference/candidate means (1-10) and the relative score."""
    table = {}
    for name in list(CATEGORIES) + ["all"]:
        rows = [q for q in questions if name == "all" or q.get("category") == name]
        if not rows:
            continue
        got = [scores[q["question_id"]] for q in rows if scores.get(q["question_id"]) is not None]
        ref = sum(s[0] for s in got) / len(got) if got else None
        cand = sum(s[1] for s in got) / len(got) if got else None
        table[name] = {"n": len(got), "failed": len(rows) - len(got), "reference": ref, "candidate": cand,
                       "relative": 100.0 * cand / ref if got and ref else None}
    return table


def judge_answers(questions, contexts, references, answers, judge, progress=True):
    """Scores per question id (None when failed) and the judge run, for questions with both answers."""
    jobs = [q for q in questions if q["question_id"] in references and q["question_id"] in answers]
    for q in jobs:
        if q.get("image") not in contexts:
            raise VinstructError(f"question {q['question_id']!r}: no context for image {q.get('image')!r}")
    requests = [judge_prompts.review_messages(contexts[q["image"]], q["text"], references[q["question_id"]]["text"],
                                              answers[q["question_id"]]["text"], q.get("category", "conversation"))
                for q in jobs]
    run = judge.run(requests, parse_scores, judge_prompts.SCORE_REMINDER, "judge: review", progress)
    scores = {q["question_id"]: v.parsed for q, v in zip(jobs, run.verdicts)}
    reviews = [{"question_id": q["question_id"], "category": q.get("category"),
                "scores": list(v.parsed) if v.parsed else None, "review": v.reply, "attempts": v.attempts,
                "error": v.error} for q, v in zip(jobs, run.verdicts)]
    return scores, reviews, run


def build_references(questions: list[dict], contexts: dict[str, str], teacher, path: str | os.PathLike,
                     progress: bool = True) -> tuple[dict, dict]:
    """Teacher answers from the symbolic text (the generation area's `answer` prompts and client),
    written to `path` in the answer format. Answers already in `path` for the same question text
    are kept, so a rerun asks only for the missing ones. Returns (answers by id, stats)."""
    from vinstruct.endpoint.client import RequestFailure
    from vinstruct.generate.answers import answer_questions_sync

    path = Path(path)
    known = read_answers(path)
    rows = {q["question_id"]: known[q["question_id"]] for q in questions
            if q["question_id"] in known and known[q["question_id"]].get("prompt") == q["text"]}
    todo = [q for q in questions if q["question_id"] not in rows]
    failures: list[str] = []
    if todo:
        replies = answer_questions_sync(teacher, [(contexts[q["image"]], q["text"]) for q in todo], progress=progress)
        for q, reply in zip(todo, replies):
            if isinstance(reply, RequestFailure) or not reply.text.strip():
                failures.append(str(reply) if isinstance(reply, RequestFailure) else "empty reply")
                continue
            rows[q["question_id"]] = {"question_id": q["question_id"], "prompt": q["text"], "text": reply.text.strip(),
                                      "answer_id": f"ref-{q['question_id']}", "model_id": teacher.model,
                                      "metadata": {"finish_reason": reply.finish_reason}}
    write_jsonl(path, [rows[q["question_id"]] for q in questions if q["question_id"] in rows])
    stats = {"requests": len(todo), "reused": len(questions) - len(todo), "failed": len(failures),
             "failure_examples": failures[:3]}
    return rows, stats


def _table(summary: dict) -> str:
    rows = [[name, v["relative"], v["reference"], v["candidate"], v["n"], v["failed"]] for name, v in summary.items()]
    return report.markdown_table(["category", "relative %", "reference (1-10)", "candidate (1-10)", "judged",
                                  "failed"], rows)


def evaluate(model, world_dir: str | os.PathLike, out_dir: str | os.PathLike, judge, teacher, split: str = "test", *,
             limit_images: int = 30, batch_size: int = 16, max_new_tokens: int = 128, conv_mode: str | None = None,
             seed: int = 0, progress: bool = True) -> dict:
    """Questions, teacher references, model answers, judge reviews, summary and report files.

    judge: a `vinstruct.eval.judge.Judge`; teacher: a `vinstruct.endpoint.client.EndpointConfig`
    (see `vinstruct.eval.endpoints` for both, hosted or scripted).
    """
    model, model_id = resolve_model(model)
    out_dir = Path(out_dir)
    questions_path, context_path = build_questions(world_dir, split, out_dir, limit_images, seed)
    questions, contexts = load_questions(questions_path), _contexts_by_image(context_path)
    references, teacher_stats = build_references(questions, contexts, teacher, out_dir / "references.jsonl", progress)
    image_dir = CocoSet.load(world_dir, split).images[0].path.parent
    options = PredictOptions(batch_size=batch_size, max_new_tokens=max_new_tokens, conv_mode=conv_mode,
                             model_id=model_id)
    stats = predict(model, questions, out_dir / "answers.jsonl", image_dir, options, progress)
    answers = read_answers(out_dir / "answers.jsonl")
    scores, reviews, judge_run = judge_answers(questions, contexts, references, answers, judge, progress)
    write_jsonl(out_dir / "reviews.jsonl", reviews)
    summary = summarize(questions, scores)
    reasons = [judge_run.gave_up] if judge_run.gave_up else []
    missing_refs = len(questions) - len(references)
    if missing_refs:
        reasons.append(f"{missing_refs} reference answer(s) missing")
    if summary.get("all", {}).get("failed"):
        reasons.append(f"{summary['all']['failed']} question(s) not judged")
    metrics = {"relative score": summary.get("all", {}).get("relative")}
    metrics.update({f"{name} relative": v["relative"] for name, v in summary.items() if name != "all"})
    metrics["reference mean"] = summary.get("all", {}).get("reference")
    metrics["candidate mean"] = summary.get("all", {}).get("candidate")
    results = {"suite": "llava-bench", "model": model_id, "split": split, "complete": not reasons,
               "questions": len(questions), "metrics": metrics, "summary": summary, "predict": stats.to_dict(),
               "judge": {"model": judge.model, **judge_run.stats},
               "teacher": {"model": teacher.model, **teacher_stats}}
    if reasons:
        results["incomplete_reason"] = "; ".join(reasons)
    chart = {name: {"relative": v["relative"] or 0.0} for name, v in summary.items()}
    report.save_run(out_dir, results, _table(summary), chart, f"LLaVA-Bench style ({split})", "relative score %",
                    ylim=None)
    return results


# ---- the "llava-bench" suite (vinstruct.eval.suites) ---------------------------------------------
DEFAULT_IMAGES = 30  # LLaVA-Bench (COCO) has 30 images


def evaluate_suite(model, out: Path, request) -> dict:
    return evaluate(model, request.world_dir, out, request.judge, request.teacher, request.split,
                    limit_images=request.limit or DEFAULT_IMAGES, seed=request.seed, **request.generation_options())


def suite_questions(out: Path, request) -> list[Path]:
    return list(build_questions(request.world_dir, request.split, out, request.limit or DEFAULT_IMAGES, request.seed))
