"""How well the audit finds errors planted on purpose (`vinstruct teacher --plant-errors`).

The teacher's log names each corrupted answer by the SHA-256 of the image text it was
written from. That text is rebuilt here for every annotated image (with and without boxes,
as `vinstruct generate --boxes` may have sent either), so each planted answer is found in
the data by (image, question, answer text); a detailed description's question is drawn after
the teacher answers, so it is found by (image, answer text). Then:

  precision  planted answers flagged contradicted / all answers flagged contradicted
  recall     planted answers flagged contradicted / planted answers in the data
"""

from __future__ import annotations

import hashlib
from collections import Counter

from vinstruct.audit.check import CONTRADICTED
from vinstruct.audit.run import AuditResult, ImageIndex
from vinstruct.data.coco import CocoSet
from vinstruct.data.formats import read_jsonl
from vinstruct.data.symbolic import symbolic_for_image
from vinstruct.errors import VinstructError


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _plain(question: str | None) -> str | None:
    return " ".join(question.replace("<image>", " ").split()) if question else None


def _pairs(turns: list[dict]) -> list[tuple[str | None, str]]:
    """(question, answer) for every gpt turn, in order."""
    out, question = [], None
    for turn in turns:
        if turn["from"] == "human":
            question = _plain(turn["value"])
        else:
            out.append((question, turn["value"].strip()))
    return out


def score_planted(result: AuditResult, log_path, coco: CocoSet) -> dict:
    rows = read_jsonl(log_path)
    for number, row in enumerate(rows, start=1):
        if not {"image_text_sha256", "corrupted", "kind"} <= row.keys():
            raise VinstructError(f"{log_path}:{number}: not a planted-error record (needs image_text_sha256, kind, corrupted)")
    image_of: dict[str, int] = {}
    for image in coco.images:
        for with_boxes in (True, False):
            image_of.setdefault(_digest(symbolic_for_image(image, with_boxes=with_boxes)), image.id)
    planted: dict[tuple, str] = {}
    for row in rows:
        image_id = image_of.get(row["image_text_sha256"])
        if image_id is not None:
            planted[(image_id, _plain(row.get("question")), row["corrupted"].strip())] = row["kind"]
    index = ImageIndex(coco)
    found, flagged_clean = Counter(), 0
    caught: Counter = Counter()
    for sample, statuses in zip(result.samples, result.statuses):
        if statuses is None:
            continue
        image = index.find(str(sample["image"] if isinstance(sample["image"], str) else sample["image"][0]))
        for (question, answer), status in zip(_pairs(sample["conversations"]), statuses):
            kind = planted.get((image.id, question, answer)) or planted.get((image.id, None, answer))
            if kind is not None:
                found[kind] += 1
                caught[kind] += status == CONTRADICTED
            elif status == CONTRADICTED:
                flagged_clean += 1
    true_positives, in_data = sum(caught.values()), sum(found.values())
    flagged = true_positives + flagged_clean
    return {
        "log": str(log_path), "planted": len(rows), "planted_in_data": in_data,
        "flagged": flagged, "true_positives": true_positives, "false_positives": flagged_clean,
        "precision": round(true_positives / flagged, 4) if flagged else None,
        "recall": round(true_positives / in_data, 4) if in_data else None,
        "recall_by_kind": {k: {"planted": found[k], "caught": caught[k], "recall": round(caught[k] / found[k], 4)}
                           for k in sorted(found)},
    }
