"""Batched answers to a question file, in the official `model_vqa` formats, resumable.

Questions (JSONL): {"question_id", "image"?, "text", "category"?}. Each answer is appended
to the answer file (JSONL: {"question_id", "prompt", "text", "answer_id", "model_id",
"metadata"}) as soon as its batch finishes, so a killed run loses at most one batch; a
rerun skips the question ids already answered. Prompts are sorted by length before
batching so that rows in a batch need little padding. Missing or unreadable images are
skipped and counted (a later run answers them once the image is there).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vinstruct.data.encoding import EncodingSpec, encode_prompt
from vinstruct.data.formats import iter_jsonl, load_questions, write_jsonl
from vinstruct.data.images import open_image
from vinstruct.data.templates import IMAGE_MARKER, get_template
from vinstruct.errors import VinstructError


@dataclass
class PredictOptions:
    batch_size: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    conv_mode: str | None = None  # chat template; the model's own when None
    image_blind: bool = False  # the question alone: no <image> marker, no pixels
    model_id: str | None = None
    seed: int = 0


@dataclass
class PredictStats:
    answered: int = 0  # answered in this run
    reused: int = 0  # already in the answer file
    skipped: list[dict] = field(default_factory=list)  # {"question_id", "reason"}
    seconds: float = 0.0
    new_tokens: int = 0

    def to_dict(self) -> dict:
        return {"answered": self.answered, "reused": self.reused, "skipped": len(self.skipped),
                "skipped_examples": self.skipped[:10], "seconds": round(self.seconds, 3),
                "new_tokens": self.new_tokens}


@dataclass
class _Job:
    question: dict
    prompt_ids: list[int]
    image_path: Path | None


def prompt_text(question: dict, with_image: bool) -> str:
    """The user turn: `<image>` then the question (as model_vqa does), or the question alone."""
    text = question["text"]
    if not with_image:
        return text.replace(IMAGE_MARKER, "").strip()
    return text if IMAGE_MARKER in text else f"{IMAGE_MARKER}\n{text}"




def answer_id(model_id: str, question_id, text: str) -> str:
    return hashlib.sha1(f"{model_id}\x00{question_id}\x00{text}".encode()).hexdigest()[:22]


def read_answers(path: str | os.PathLike) -> dict:
    """{question_id: answer} from an answer file; repairs a last line cut short by a crash."""
    path = Path(path)
    if not path.exists():
        return {}
    answers: dict = {}
    for number, row in iter_jsonl(path, skip_bad_tail=True):
        if "question_id" not in row or "text" not in row:
            raise VinstructError(f"{path}:{number}: an answer needs 'question_id' and 'text'")
        answers.setdefault(row["question_id"], row)
    raw = path.read_text(encoding="utf-8")
    if raw and not raw.endswith("\n"):
        write_jsonl(path, answers.values())  # drop the torn line before appending
    return answers


def _row_seed(seed: int, job: _Job) -> int:
    """A per-question seed, so sampled answers do not depend on batch composition or order."""
    digest = hashlib.sha1(str(job.question["question_id"]).encode()).digest()
    return (seed + int.from_bytes(digest[:4], "big")) % 2**31


def _check_question(question: dict, where: str) -> None:
    if not isinstance(question["text"], str):
        raise VinstructError(f"{where}: question {question['question_id']!r}: 'text' must be a string")
    image = question.get("image")
    if image is not None and not isinstance(image, str):
        raise VinstructError(f"{where}: question {question['question_id']!r}: 'image' must be a file name")


def _plan(model, questions, image_dir, options, done, where) -> tuple[list[_Job], list[dict]]:
    spec = EncodingSpec.for_model(model, template=options.conv_mode)
    jobs, skipped = [], []
    for question in questions:
        _check_question(question, where)
        if question["question_id"] in done:
            continue
        image = None if options.image_blind else question.get("image")
        path = None
        if image:
            path = Path(image_dir) / image if image_dir is not None else Path(image)
            if not path.is_file():
                skipped.append({"question_id": question["question_id"], "reason": f"image not found: {path}"})
                continue
        ids = encode_prompt(spec, [("human", prompt_text(question, path is not None))])
        jobs.append(_Job(question, ids, path))
    jobs.sort(key=lambda job: len(job.prompt_ids), reverse=True)
    return jobs, skipped


def _load_pixels(model, batch: list[_Job], skipped: list[dict]):
    """Pixels for the rows that have an image; rows whose image cannot be read are dropped."""
    kept, images = [], []
    for job in batch:
        if job.image_path is None:
            kept.append(job)
            continue
        try:
            images.append(open_image(job.image_path, job.question["question_id"]))
            kept.append(job)
        except VinstructError as err:
            skipped.append({"question_id": job.question["question_id"], "reason": str(err)})
    pixels = model.image_processor(images).to(model.dtype) if images else None
    return kept, pixels


def predict(model, questions: list[dict], answers_path: str | os.PathLike, image_dir=None,
            options: PredictOptions | None = None, progress: bool = True, where: str = "questions") -> PredictStats:
    """Answer `questions` with `model`, appending to `answers_path`; returns what happened."""
    options = options or PredictOptions()
    if options.batch_size < 1:
        raise VinstructError(f"batch size must be at least 1, got {options.batch_size}")
    model.eval()
    model_id = options.model_id or "vinstruct"
    answers_path = Path(answers_path)
    done = read_answers(answers_path)
    by_id = {q["question_id"]: q for q in questions}
    for qid, row in done.items():
        if qid in by_id and row.get("prompt") not in (None, by_id[qid]["text"]):
            raise VinstructError(
                f"{answers_path}: the answer to question {qid!r} was made for different question text; "
                "use a new answer file for a new question set"
            )
    stats = PredictStats(reused=sum(1 for q in questions if q["question_id"] in done))
    jobs, stats.skipped = _plan(model, questions, image_dir, options, done, where)
    template = get_template(options.conv_mode or model.config.template)
    stop = tuple(s for s in template.stop_strings(model.tokenizer.eos_token or "") if s)
    start = time.perf_counter()
    answers_path.parent.mkdir(parents=True, exist_ok=True)
    with answers_path.open("a", encoding="utf-8") as handle, \
            tqdm(total=len(jobs), desc="predict", unit="q", disable=not progress) as bar:
        for first in range(0, len(jobs), options.batch_size):
            batch, pixels = _load_pixels(model, jobs[first:first + options.batch_size], stats.skipped)
            rows, tokens = _answer_batch(model, batch, pixels, options, stop, model_id)
            stats.new_tokens += tokens
            _append_batch(handle, rows)
            stats.answered += len(batch)
            bar.update(min(options.batch_size, len(jobs) - first))
    stats.seconds = time.perf_counter() - start
    _rewrite_in_question_order(answers_path, questions)
    return stats


def _answer_batch(model, batch: list[_Job], pixels, options: PredictOptions, stop, model_id: str):
    """Generate one batch; returns (answer rows in the official format, new tokens)."""
    from vinstruct.model.generation import SamplingParams

    if not batch:
        return [], 0
    params = [SamplingParams(max_new_tokens=options.max_new_tokens, temperature=options.temperature,
                             top_p=options.top_p, stop=stop, seed=_row_seed(options.seed, job)) for job in batch]
    with torch.inference_mode():
        outputs = model.generate([job.prompt_ids for job in batch], pixels, params=params)
    rows = []
    for job, out in zip(batch, outputs):
        qid, text = job.question["question_id"], out.text.strip()
        rows.append({"question_id": qid, "prompt": job.question["text"], "text": text,
                     "answer_id": answer_id(model_id, qid, text), "model_id": model_id,
                     "metadata": {"image_blind": options.image_blind, "finish_reason": out.finish_reason,
                                  "temperature": options.temperature, "max_new_tokens": options.max_new_tokens}})
    return rows, sum(len(out.token_ids) for out in outputs)


def _append_batch(handle, rows: list[dict]) -> None:
    """Append a batch's answers with one flush + fsync: a crash loses at most this batch."""
    if rows:
        handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        handle.flush()
        os.fsync(handle.fileno())


def _rewrite_in_question_order(path: Path, questions: list[dict]) -> None:
    """Batches finish in length order; leave the file in question order (other ids kept at the end)."""
    answers = read_answers(path)
    order = [q["question_id"] for q in questions if q["question_id"] in answers]
    in_order = set(order)
    rest = [qid for qid in answers if qid not in in_order]
    write_jsonl(path, [answers[qid] for qid in order + rest])


def predict_files(model_or_dir, questions_path, answers_path, image_dir=None,
                  options: PredictOptions | None = None, progress: bool = True) -> PredictStats:
    """`vinstruct predict`: read the question file, load the model if given a directory, answer."""
    questions = load_questions(questions_path)
    model = model_or_dir
    options = options or PredictOptions()
    if isinstance(model_or_dir, (str, os.PathLike)):
        import vinstruct

        model = vinstruct.load(model_or_dir)
        options.model_id = options.model_id or Path(model_or_dir).name
    return predict(model, questions, answers_path, image_dir, options, progress, where=str(questions_path))


def resolve_model(model_or_dir):
    """(model, model_id): load a checkpoint directory, or take an already loaded model."""
    if isinstance(model_or_dir, (str, os.PathLike)):
        import vinstruct

        return vinstruct.load(model_or_dir), Path(model_or_dir).name
    return model_or_dir, getattr(model_or_dir, "name_or_path", None) or "vinstruct"
