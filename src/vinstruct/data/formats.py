"""File formats shared by every stage, read with errors that name the file and line.

- LLaVA instruction data: a JSON list of {"id", "image"?, "conversations": [{"from", "value"}]}
- question files (official model_vqa style), JSONL: {"question_id", "image", "text", "category"?}
- answer files, JSONL: {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
All writers are atomic: a temp file beside the target, then rename.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from vinstruct.errors import VinstructError


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike):
    path = Path(path)
    if not path.is_file():
        raise VinstructError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise VinstructError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise VinstructError(f"{path}: not UTF-8 text ({err.reason})") from None


def iter_jsonl(path: str | os.PathLike, skip_bad_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-empty line.

    skip_bad_tail: tolerate an incomplete last line (a run killed mid-write).
    """
    path = Path(path)
    if not path.is_file():
        raise VinstructError(f"{path}: file not found")
    with path.open(encoding="utf-8") as handle:
        lines = handle.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            if skip_bad_tail and number == len(lines) and not line.endswith("\n"):
                return
            raise VinstructError(f"{path}:{number}: invalid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise VinstructError(f"{path}:{number}: expected a JSON object per line")
        yield number, obj


def read_jsonl(path: str | os.PathLike, skip_bad_tail: bool = False) -> list[dict]:
    return [obj for _, obj in iter_jsonl(path, skip_bad_tail)]


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(handle, row: dict, fsync: bool = True) -> None:
    """Append one row and flush it (journals that must survive kill -9).

    fsync=False leaves the row in the OS cache (safe against a killed process, not a
    power cut) so that a caller can sync many rows at once.
    """
    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    handle.flush()
    if fsync:
        os.fsync(handle.fileno())


# ---- LLaVA instruction data ---------------------------------------------------------------------
def sample_images(sample: dict) -> list[str]:
    """The image paths of a sample: none, one ("image": "x.png") or several (a list)."""
    image = sample.get("image")
    if image is None:
        return []
    if isinstance(image, str):
        return [image]
    if isinstance(image, list) and all(isinstance(x, str) for x in image):
        return list(image)
    raise VinstructError(f"sample {sample.get('id')!r}: 'image' must be a path or a list of paths")


def load_llava_json(path: str | os.PathLike) -> list[dict]:
    """Read LLaVA instruction data (a JSON list, or JSONL with one sample per line)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        samples = read_jsonl(path)
    else:
        samples = read_json(path)
    if not isinstance(samples, list):
        raise VinstructError(f"{path}: expected a JSON list of samples, got {type(samples).__name__}")
    for index, sample in enumerate(samples):
        if not isinstance(sample, dict):
            raise VinstructError(f"{path}: item {index}: expected an object, got {type(sample).__name__}")
        if "id" not in sample:
            sample["id"] = str(index)
    return samples


# ---- questions and answers (official model_vqa format) -----------------------------------------------
QUESTION_FIELDS = ("question_id", "text")


def load_questions(path: str | os.PathLike) -> list[dict]:
    """Read a question JSONL file; every line needs question_id and text, ids must be unique."""
    seen: dict = {}
    questions = []
    for number, obj in iter_jsonl(path):
        for field in QUESTION_FIELDS:
            if field not in obj:
                raise VinstructError(f"{path}:{number}: missing field {field!r}")
        qid = obj["question_id"]
        if qid in seen:
            raise VinstructError(f"{path}:{number}: duplicate question_id {qid!r} (first at line {seen[qid]})")
        seen[qid] = number
        questions.append(obj)
    return questions
