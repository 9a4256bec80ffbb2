"""Auditing a whole LLaVA data file against a COCO-format annotation set.

    result = audit_file("data/stage2.json", "world", "train")
    result.stats["claims"]            # {"grounded": ..., "contradicted": ..., "unverifiable": ...}
    cleaned = drop_contradicted(result)

Samples are matched to annotated images by file name (or by the number in it, as in
"COCO_train2014_000000123456.jpg"). What cannot be audited is counted and named, never
guessed: a sample without an image, an image the annotations do not have, an empty turn.
A file that is not LLaVA JSON stops the audit with a one-line error naming the sample.
"""

from __future__ import annotations

import heapq
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vinstruct.audit.check import CONTRADICTED, GROUNDED, STATUSES
from vinstruct.audit.claims import CLAIM_KINDS
from vinstruct.audit.engine import Auditor, TurnAudit
from vinstruct.audit.question import question_type
from vinstruct.data.coco import CocoImage, CocoSet
from vinstruct.data.formats import load_llava_json
from vinstruct.errors import VinstructError

DATA_TYPES = ("conversation", "detail", "complex", "caption", "packed", "other")
_TYPE_IN_ID = re.compile(r"-(conversation|detail|complex|caption|packed)-\d+$")
_DIGITS = re.compile(r"(\d+)")
EXAMPLES_PER_REASON = 5
IMAGE_MARKER = "<image>"


def sample_type(sample: dict) -> str:
    """The data type from our sample ids ('12-detail-0'), else from the shape of the sample."""
    match = _TYPE_IN_ID.search(str(sample.get("id", "")))
    if match:
        return match.group(1)
    turns = sample.get("conversations") or []
    answers = [t for t in turns if t.get("from") == "gpt"]
    if len(answers) > 1:
        return "conversation"
    questions = [t.get("value", "") for t in turns if t.get("from") == "human"]
    if questions and question_type(questions[0]) == "describe":
        return "detail"
    return "complex" if answers else "other"


def validate_sample(sample, index: int, path) -> None:
    """One-line error for anything that is not a LLaVA sample."""
    where = f"{path}: sample {sample.get('id')!r} (item {index})" if isinstance(sample, dict) else f"{path}: item {index}"
    turns = sample.get("conversations") if isinstance(sample, dict) else None
    if not isinstance(turns, list):
        raise VinstructError(f"{where}: no 'conversations' list; expected LLaVA JSON "
                             "[{\"id\", \"image\", \"conversations\": [{\"from\", \"value\"}]}]")
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt") or not isinstance(turn.get("value"), str):
            raise VinstructError(f"{where}: turn {number} must be {{\"from\": \"human\"|\"gpt\", \"value\": text}}")


class ImageIndex:
    """Annotated images by file name, and by the image id a file name carries."""

    def __init__(self, coco: CocoSet):
        self.by_name = {Path(img.file_name).name: img for img in coco.images}
        self.by_id = {img.id: img for img in coco.images}

    def find(self, reference: str) -> CocoImage | None:
        name = Path(reference).name
        image = self.by_name.get(name)
        if image is None:
            numbers = _DIGITS.findall(Path(name).stem)
            image = self.by_id.get(int(numbers[-1])) if numbers else None
        return image


@dataclass
class AuditResult:
    path: str
    mode: str
    samples: list[dict]
    statuses: list[tuple | None]  # per sample: the status of each gpt turn in order (None: not audited)
    stats: dict = field(default_factory=dict)


class _Tally:
    def __init__(self, worst: int):
        self.claims = Counter()
        self.turns = Counter()
        self.by_kind = {k: Counter() for k in CLAIM_KINDS}
        self.by_type: dict[str, Counter] = {}
        self.skipped_samples, self.skipped_turns = Counter(), Counter()
        self.examples: dict[str, list] = {}
        self.worst: list = []
        self.keep = worst
        self.flagged_samples = 0

    def skip(self, counter: Counter, reason: str, sample_id) -> None:
        counter[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES_PER_REASON:
            shown.append(sample_id)

    def row(self, data_type: str) -> Counter:
        row = self.by_type.get(data_type)
        if row is None:
            row = self.by_type[data_type] = Counter()
        return row

    def add_turn(self, data_type: str, audit: TurnAudit) -> None:
        row = self.row(data_type)
        self.turns[audit.status] += 1
        row[f"turns_{audit.status}"] += 1
        for verdict in audit.verdicts:
            self.claims[verdict.status] += 1
            self.by_kind[verdict.kind][verdict.status] += 1
            row[f"claims_{verdict.status}"] += 1

    def add_worst(self, index: int, sample: dict, data_type: str, bad: list) -> None:
        self.flagged_samples += 1
        count = sum(len(audit.contradictions) for _, _, audit in bad)
        entry = (count, -index, {"id": sample.get("id"), "type": data_type, "contradicted_claims": count, "turns": [
            {"question": (q or "").replace(IMAGE_MARKER, "").strip(), "answer": a,
             "claims": [{"text": v.claim.text, "kind": v.kind, "evidence": v.evidence} for v in audit.contradictions]}
            for q, a, audit in bad]})
        if len(self.worst) < self.keep:
            heapq.heappush(self.worst, entry)
        elif self.keep:
            heapq.heappushpop(self.worst, entry)


def audit_samples(samples: list[dict], coco: CocoSet, path: str = "data", worst: int = 10) -> AuditResult:
    started, cpu = time.perf_counter(), time.process_time()
    auditor = Auditor.for_set(coco)
    images = ImageIndex(coco)
    tally = _Tally(worst)
    statuses: list[tuple | None] = []
    for index, sample in enumerate(samples):
        validate_sample(sample, index, path)
        statuses.append(_audit_sample(index, sample, auditor, images, tally))
    audited = sum(s is not None for s in statuses)
    result = AuditResult(str(path), auditor.mode, samples, statuses)
    result.stats = _stats(result, tally, audited, time.perf_counter() - started, time.process_time() - cpu)
    return result


def _audit_sample(index: int, sample: dict, auditor: Auditor, images: ImageIndex, tally: _Tally) -> tuple | None:
    sample_id = sample.get("id", index)
    image_ref = sample.get("image")
    if not image_ref:
        tally.skip(tally.skipped_samples, "no image", sample_id)
        return None
    if isinstance(image_ref, list):
        if len(image_ref) != 1:
            tally.skip(tally.skipped_samples, "several images", sample_id)
            return None
        image_ref = image_ref[0]
    image = images.find(str(image_ref))
    if image is None:
        tally.skip(tally.skipped_samples, "image not in the annotations", sample_id)
        return None
    data_type = sample_type(sample)
    tally.row(data_type)["samples"] += 1
    question, out, bad = None, [], []
    for turn in sample["conversations"]:
        text = turn["value"]
        if turn["from"] == "human":
            question = text
            if not text.replace(IMAGE_MARKER, "").strip():
                tally.skip(tally.skipped_turns, "empty question", sample_id)
            continue
        if not text.strip():
            tally.skip(tally.skipped_turns, "empty answer", sample_id)
            out.append(None)
            continue
        audit = auditor.audit_turn(question, text, image)
        tally.add_turn(data_type, audit)
        out.append(audit.status)
        if audit.status == CONTRADICTED:
            bad.append((question, text, audit))
    if bad:
        tally.add_worst(index, sample, data_type, bad)
    return tuple(out)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _stats(result: AuditResult, tally: _Tally, audited: int, seconds: float, cpu_seconds: float) -> dict:
    claims = {s: tally.claims[s] for s in STATUSES}
    checkable = claims[GROUNDED] + claims[CONTRADICTED]
    turns = {s: tally.turns[s] for s in STATUSES}
    by_type = {}
    for data_type in sorted(tally.by_type, key=lambda t: DATA_TYPES.index(t) if t in DATA_TYPES else 99):
        row = tally.by_type[data_type]
        g, c = row["claims_grounded"], row["claims_contradicted"]
        by_type[data_type] = {"samples": row["samples"], **{f"turns_{s}": row[f"turns_{s}"] for s in STATUSES},
                              **{f"claims_{s}": row[f"claims_{s}"] for s in STATUSES}, "grounded_rate": _rate(g, g + c)}
    by_kind = {}
    for kind, row in tally.by_kind.items():
        g, c = row[GROUNDED], row[CONTRADICTED]
        by_kind[kind] = {s: row[s] for s in STATUSES} | {"grounded_rate": _rate(g, g + c)}
    worst = [entry[2] for entry in sorted(tally.worst, reverse=True)]
    return {
        "data": result.path, "mode": result.mode, "samples": len(result.samples), "audited_samples": audited,
        "skipped_samples": dict(tally.skipped_samples), "skipped_turns": dict(tally.skipped_turns),
        "skipped_examples": tally.examples, "turns": turns, "claims": claims,
        "grounded_rate": _rate(claims[GROUNDED], checkable),
        "contradicted_turn_rate": _rate(turns[CONTRADICTED], sum(turns.values())),
        "samples_with_contradiction": tally.flagged_samples, "by_type": by_type, "by_kind": by_kind, "worst": worst,
        "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
        "samples_per_second": round(len(result.samples) / seconds, 1) if seconds else None,
    }


def audit_file(data_path, coco_dir, split: str, worst: int = 10, image_dir=None) -> AuditResult:
    coco = CocoSet.load(coco_dir, split, image_dir, require_captions=False)
    return audit_samples(load_llava_json(data_path), coco, str(data_path), worst)


def drop_contradicted(result: AuditResult) -> tuple[list[dict], dict]:
    """The data without contradicted answers: each goes with its question; a sample left empty goes.

    Samples that could not be audited are kept as they are. Returns (samples, counts).
    """
    kept, counts = [], Counter()
    for sample, statuses in zip(result.samples, result.statuses):
        if not statuses or CONTRADICTED not in statuses:
            kept.append(sample)
            continue
        turns, answer_index, marker_at_end = [], 0, None
        pending = None
        for turn in sample["conversations"]:
            if turn["from"] == "human":
                if IMAGE_MARKER in turn["value"]:
                    marker_at_end = not turn["value"].lstrip().startswith(IMAGE_MARKER)
                pending = turn
                continue
            status = statuses[answer_index]
            answer_index += 1
            if status == CONTRADICTED:
                counts["answers_dropped"] += 1
                pending = None
                continue
            if pending is not None:
                turns.append(dict(pending))
            turns.append(dict(turn))
            pending = None
        if not turns:
            counts["samples_dropped"] += 1
            continue
        _put_image_first(turns, marker_at_end)
        kept.append({**sample, "conversations": turns})
    return kept, dict(counts)


def _put_image_first(turns: list[dict], marker_at_end: bool | None) -> None:
    """Keep `<image>` once, in the first human turn, where it stood before (start or end)."""
    if marker_at_end is None:
        return
    for turn in turns:
        if turn["from"] == "human":
            turn["value"] = turn["value"].replace(IMAGE_MARKER, "").strip()
    first = next((t for t in turns if t["from"] == "human"), None)
    if first is not None:
        first["value"] = f"{first['value']}\n{IMAGE_MARKER}" if marker_at_end else f"{IMAGE_MARKER}\n{first['value']}"

