"""Whether a training checkpoint is intact: a checksum manifest written with it, checked before resuming.

  checkpoints/step-000120/manifest.json
    {"format": "vinstruct-checkpoint-manifest", "version": 1,
     "files": {"model/model.safetensors": {"size": 3473920, "sha256": "..."}, ...}}

The manifest covers every other file of the checkpoint and is written last, once the files are on
disk, so a checkpoint whose manifest matches holds exactly what the trainer wrote. Checkpoints of
earlier versions have no manifest: they are checked by reading every file instead (each safetensors
tensor loads and is finite, each JSON file parses), which finds truncation and non-finite weights
but not every changed byte.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors import safe_open

from vinstruct.data.formats import write_json

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "vinstruct-checkpoint-manifest"


def sha256_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)


def write_manifest(directory: Path) -> dict:
    """Hash every file under `directory` (read back from disk) and write manifest.json there, atomically."""
    files = {p.relative_to(directory).as_posix(): {"size": p.stat().st_size, "sha256": sha256_of(p)}
             for p in _files(directory)}
    manifest = {"format": MANIFEST_FORMAT, "version": 1, "files": files}
    write_json(directory / MANIFEST_FILE, manifest)
    return manifest


def read_manifest(directory: Path) -> dict | None:
    """The manifest, None when there is none (an earlier version's checkpoint); ValueError when unreadable."""
    path = directory / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{MANIFEST_FILE} cannot be read ({err})") from None
    if not (isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT
            and isinstance(manifest.get("files"), dict)):
        raise ValueError(f"{MANIFEST_FILE} is not a checkpoint manifest")
    return manifest


def size_problem(directory: Path, manifest: dict) -> str | None:
    """The first file that is missing or has another size than recorded (a quick check, no hashing)."""
    for name, entry in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != entry.get("size"):
            return f"{name} has {size} bytes, {entry.get('size')} were written"
    return None


def checksum_problem(directory: Path, manifest: dict) -> str | None:
    """The first file that is missing, resized or whose content differs from what was written."""
    problem = size_problem(directory, manifest)
    if problem:
        return problem
    for name, entry in manifest["files"].items():
        if sha256_of(directory / name) != entry.get("sha256"):
            return f"{name} does not match its checksum (changed since it was written)"
    return None


def loading_problem(directory: Path) -> str | None:
    """For a checkpoint without a manifest: the first file that does not read back whole and finite."""
    for path in _files(directory):
        name = path.relative_to(directory).as_posix()
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as handle:
                    for key in handle.keys():
                        tensor = handle.get_tensor(key)
                        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
                            return f"{name}: tensor {key!r} holds NaN or infinite values"
        except Exception as err:  # noqa: BLE001 - any failure to read is what this check looks for
            return f"{name} cannot be read ({type(err).__name__}: {_first_line(err)})"
    return None


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:160] if text else "no message"
