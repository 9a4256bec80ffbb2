"""ScienceQA: read its files, ask the model, extract letters, score, and the judge ensemble.

Files (ScienceQA's own schema):
  problems.json    {pid: {"question", "choices": [...], "answer": index, "hint", "image": name|null,
                    "subject", "grade": "grade<N>", "task", "topic", "category", "skill", "lecture",
                    "solution", "split"}}
  pid_splits.json  {"train": [pid, ...], "val": [...], "test": [...], ...}
  images           <image root>/<pid>/<image>   (ScienceQA ships images/<split>/<pid>/image.png)
Breakdowns follow the paper: subject NAT/SOC/LAN, context TXT (has a hint) / IMG (has an
image) / NO (neither; a problem with both counts under TXT and IMG), grade G1-6 / G7-12.

Judge ensemble (the paper's "judge" scheme): a text-only judge answers each problem without
the image; where it and the model name different options, the judge sees both replies and
gives a final answer. Where only one of them names an option, that option stands.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vinstruct.data.formats import load_questions, read_json, write_jsonl
from vinstruct.errors import VinstructError
from vinstruct.eval import judge_prompts, report
from vinstruct.eval.extract import extract_letter, match_option_text, option_letters
from vinstruct.eval.predict import PredictOptions, predict, read_answers, resolve_model

SUBJECTS = {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}
ANSWER_INSTRUCTION = "Answer with the letter of the correct option."
REQUIRED = ("question", "choices", "answer")


@dataclass
class Problem:
    pid: str
    question: str
    choices: list[str]
    answer: int
    hint: str
    image: str | None
    subject: str
    grade: str

    @property
    def answer_letter(self) -> str:
        return option_letters(len(self.choices))[self.answer]

    def groups(self) -> list[str]:
        """The breakdown columns this problem counts in."""
        groups = [SUBJECTS.get(self.subject, self.subject.upper()[:3] or "?")]
        if self.hint.strip():
            groups.append("TXT")
        if self.image:
            groups.append("IMG")
        if not self.hint.strip() and not self.image:
            groups.append("NO")
        number = int(self.grade.removeprefix("grade")) if self.grade.removeprefix("grade").isdigit() else 0
        groups.append("G1-6" if 1 <= number <= 6 else "G7-12")
        return groups


def _problem(pid: str, raw, path: Path) -> Problem:
    where = f"{path}: problem {pid!r}"
    if not isinstance(raw, dict):
        raise VinstructError(f"{where}: expected an object")
    for key in REQUIRED:
        if key not in raw:
            raise VinstructError(f"{where}: missing field {key!r}")
    choices = raw["choices"]
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise VinstructError(f"{where}: 'choices' must be a list of at least two strings")
    if len(choices) > 26:
        raise VinstructError(f"{where}: {len(choices)} choices; at most 26 can be lettered")
    answer = raw["answer"]
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise VinstructError(f"{where}: 'answer' must be an index into 'choices' (0-{len(choices) - 1}), got {answer!r}")
    image = raw.get("image")
    if image is not None and not isinstance(image, str):
        raise VinstructError(f"{where}: 'image' must be a file name or null")
    return Problem(str(pid), str(raw["question"]), choices, answer, str(raw.get("hint") or ""), image or None,
                   str(raw.get("subject", "")), str(raw.get("grade", "")))


def load_problems(problems_path: str | os.PathLike, pid_splits_path: str | os.PathLike | None = None,
                  split: str = "test") -> list[Problem]:
    """The problems of one split (all problems when no pid_splits file is given)."""
    problems_path = Path(problems_path)
    problems = read_json(problems_path)
    if not isinstance(problems, dict):
        raise VinstructError(f"{problems_path}: expected an object mapping problem ids to problems")
    pids = list(problems)
    if pid_splits_path is not None:
        splits = read_json(pid_splits_path)
        if not isinstance(splits, dict) or not isinstance(splits.get(split), list):
            have = ", ".join(splits) if isinstance(splits, dict) else "nothing"
            raise VinstructError(f"{pid_splits_path}: no split {split!r} (has: {have})")
        pids = [str(p) for p in splits[split]]
        missing = [p for p in pids if p not in problems]
        if missing:
            raise VinstructError(f"{pid_splits_path}: split {split!r} lists {len(missing)} id(s) not in "
                                 f"{problems_path.name} (e.g. {missing[0]!r})")
        if len(set(pids)) < len(pids):
            raise VinstructError(f"{pid_splits_path}: split {split!r} lists a problem id twice")
    return [_problem(pid, problems[pid], problems_path) for pid in pids]


def prompt(problem: Problem) -> str:
    """The model's question: context, question, lettered options, the answer instruction."""
    lines = []
    if problem.hint.strip():
        lines.append(f"Context: {problem.hint.strip()}")
    lines.append(f"Question: {problem.question.strip()}")
    lines.append("Options:")
    lines += [f"{letter}. {choice}" for letter, choice in zip(option_letters(len(problem.choices)), problem.choices)]
    lines.append(ANSWER_INSTRUCTION)
    return "\n".join(lines)


def questions(problems: list[Problem]) -> list[dict]:
    return [{"question_id": p.pid, "text": prompt(p), **({"image": f"{p.pid}/{p.image}"} if p.image else {}),
             "category": "IMG" if p.image else "TXT" if p.hint.strip() else "NO"} for p in problems]


def model_letter(text: str, problem: Problem, option_text: bool = False) -> str | None:
    letter = extract_letter(text, len(problem.choices))
    if letter is None and option_text:
        letter = match_option_text(text, problem.choices)
    return letter


def accuracy(problems: list[Problem], letters: dict[str, str | None]) -> dict:
    """{"overall": {...}, "groups": {NAT: {...}, ...}, "failed": n} over problems that have an entry."""
    groups: dict[str, dict] = {}
    total = correct = failed = 0
    for p in problems:
        if p.pid not in letters:
            continue
        hit = letters[p.pid] == p.answer_letter
        failed += letters[p.pid] is None
        total, correct = total + 1, correct + hit
        for g in p.groups():
            cell = groups.setdefault(g, {"correct": 0, "total": 0})
            cell["total"] += 1
            cell["correct"] += hit
    for cell in groups.values():
        cell["accuracy"] = 100.0 * cell["correct"] / cell["total"]
    order = ["NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12"]
    ordered = {g: groups[g] for g in order if g in groups} | {g: v for g, v in groups.items() if g not in order}
    return {"overall": {"correct": correct, "total": total, "accuracy": 100.0 * correct / total if total else 0.0},
            "groups": ordered, "failed": failed}


def ensemble(problems: list[Problem], model_replies: dict[str, str], judge, option_text: bool = False,
             progress: bool = True) -> dict:
    """The judge ensemble: text-only answers, then arbitration where the two disagree.

    A text-only reply that names no option is an abstention (not retried: the judge may
    rightly say the text is not enough); an arbitration reply must name one (retried).
    """
    asked = [p for p in problems if p.pid in model_replies]
    first = judge.run([judge_prompts.solve_messages(p.question, p.choices, p.hint, bool(p.image)) for p in asked],
                      lambda reply: reply, judge_prompts.LETTER_REMINDER, "judge: solve", progress)
    judge_letters, judge_replies = {}, {}
    for p, verdict in zip(asked, first.verdicts):
        judge_replies[p.pid] = verdict.reply or ""
        judge_letters[p.pid] = extract_letter(verdict.reply, len(p.choices)) if verdict.reply else None
    model_letters = {p.pid: model_letter(model_replies[p.pid], p, option_text) for p in asked}
    disputed = [p for p in asked if model_letters[p.pid] and judge_letters[p.pid]
                and model_letters[p.pid] != judge_letters[p.pid]]
    second = judge.run([judge_prompts.arbitrate_messages(p.question, p.choices, p.hint, judge_replies[p.pid],
                                                         model_replies[p.pid], bool(p.image)) for p in disputed],
                       lambda reply: reply if extract_letter(reply, 26) else None, judge_prompts.LETTER_REMINDER,
                       "judge: arbitrate", progress)
    final = {p.pid: model_letters[p.pid] or judge_letters[p.pid] for p in asked}
    for p, verdict in zip(disputed, second.verdicts):
        decided = extract_letter(verdict.reply, len(p.choices)) if verdict.reply else None
        final[p.pid] = decided or model_letters[p.pid]
    complement = {p.pid: judge_letters[p.pid] or model_letters[p.pid] for p in asked}
    incomplete = [r.gave_up for r in (first, second) if r.gave_up] + \
        [f"{sum(v.error is not None for v in r.verdicts)} judge request(s) unanswered"
         for r in (first, second) if any(v.error is not None for v in r.verdicts) and not r.gave_up]
    return {"judge_alone": accuracy(asked, judge_letters), "complement": accuracy(asked, complement),
            "ensemble": accuracy(asked, final), "disputed": len(disputed),
            "judge_stats": {"solve": first.stats, "arbitrate": second.stats}, "incomplete": incomplete}


def _table(results: dict) -> str:
    columns = list(results["scores"]["groups"])
    rows = [["model"] + [results["scores"]["overall"]["accuracy"]] +
            [results["scores"]["groups"][g]["accuracy"] for g in columns] + [results["scores"]["failed"]]]
    for name in ("judge_alone", "complement", "ensemble"):
        part = (results.get("ensemble") or {}).get(name)
        if part:
            rows.append([name.replace("_", " ")] + [part["overall"]["accuracy"]] +
                        [part["groups"].get(g, {}).get("accuracy") for g in columns] + [part["failed"]])
    return report.markdown_table(["answers", "all"] + columns + ["failed"], rows)


def evaluate(model, problems_path: str | os.PathLike, out_dir: str | os.PathLike, *,
             pid_splits: str | os.PathLike | None = None, split: str = "test",
             image_root: str | os.PathLike | None = None, judge=None, limit: int | None = None,
             batch_size: int = 16, max_new_tokens: int = 16, conv_mode: str | None = None,
             option_text: bool = False, progress: bool = True) -> dict:
    """Answer a ScienceQA split, score it, and run the judge ensemble when a `Judge` is given.

    option_text: also accept a reply that is exactly one option's text (off for the
    standard metric; useful for small models that answer with the option itself).
    """
    model, model_id = resolve_model(model)
    out_dir = Path(out_dir)
    problems = load_problems(problems_path, pid_splits, split)[:limit]
    image_root = Path(image_root) if image_root else Path(problems_path).parent / "images" / split
    write_jsonl(out_dir / "questions.jsonl", questions(problems))
    options = PredictOptions(batch_size=batch_size, max_new_tokens=max_new_tokens, conv_mode=conv_mode,
                             model_id=model_id)
    stats = predict(model, load_questions(out_dir / "questions.jsonl"), out_dir / "answers.jsonl", image_root,
                    options, progress)
    replies = {qid: row["text"] for qid, row in read_answers(out_dir / "answers.jsonl").items()}
    letters = {p.pid: model_letter(replies[p.pid], p, option_text) for p in problems if p.pid in replies}
    scores = accuracy(problems, letters)
    results = {"suite": "scienceqa", "model": model_id, "split": split, "problems": len(problems),
               "scores": scores, "predict": stats.to_dict(), "ensemble": None,
               "metrics": {"accuracy": scores["overall"]["accuracy"],
                           **{f"{g} accuracy": v["accuracy"] for g, v in scores["groups"].items()}}}
    unanswered = len(problems) - len(letters)
    reasons = [f"{unanswered} problem(s) unanswered by the model"] if unanswered else []
    if judge is not None:
        results["ensemble"] = ensemble(problems, replies, judge, option_text, progress)
        results["metrics"]["judge-alone accuracy"] = results["ensemble"]["judge_alone"]["overall"]["accuracy"]
        results["metrics"]["ensemble accuracy"] = results["ensemble"]["ensemble"]["overall"]["accuracy"]
        reasons += results["ensemble"]["incomplete"]
    results["complete"] = not reasons
    if reasons:
        results["incomplete_reason"] = "; ".join(reasons)
    chart = {g: {"model": v["accuracy"]} for g, v in scores["groups"].items()}
    chart["all"] = {"model": scores["overall"]["accuracy"]}
    if results["ensemble"]:
        for g in chart:
            part = results["ensemble"]["ensemble"]
            chart[g]["ensemble"] = part["overall"]["accuracy"] if g == "all" else part["groups"].get(g, {}).get("accuracy", 0.0)
    report.save_run(out_dir, results, _table(results), chart, f"ScienceQA ({split})", "accuracy %")
    return results
