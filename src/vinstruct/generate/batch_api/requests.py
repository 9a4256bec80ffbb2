"""Batch API input files: one JSONL line per request, split at the service's limits.

A line is {"custom_id", "method": "POST", "url": <endpoint>, "body": <chat-completions body>}.
Files are cut before they pass `max_requests` lines or `max_bytes` bytes (the API takes at most
50,000 requests and 200 MB per file) and written atomically, so a killed run leaves whole files
or none. The same requests always give the same bytes, hence the same fingerprint: a re-run
can tell its own files from another run's.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vinstruct.atomic import atomic_file
from vinstruct.errors import VinstructError

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
CHAT_ENDPOINT = "/v1/chat/completions"


@dataclass(frozen=True)
class BatchRequest:
    custom_id: str  # a stable key of the request: results are matched to requests by it
    body: dict  # the chat-completions request (model, messages, sampling parameters)


def request_line(request: BatchRequest, endpoint: str = CHAT_ENDPOINT) -> bytes:
    row = {"custom_id": request.custom_id, "method": "POST", "url": endpoint, "body": request.body}
    return (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _lines(requests: Iterable[BatchRequest], endpoint: str, max_bytes: int) -> Iterator[tuple[str, bytes]]:
    seen: set[str] = set()
    for request in requests:
        if not isinstance(request.custom_id, str) or not request.custom_id:
            raise VinstructError(f"batch request custom_id must be a non-empty string, got {request.custom_id!r}")
        if request.custom_id in seen:
            raise VinstructError(f"batch request custom_id {request.custom_id!r} appears twice; each request needs its own")
        seen.add(request.custom_id)
        line = request_line(request, endpoint)
        if len(line) > max_bytes:
            raise VinstructError(f"batch request {request.custom_id!r} is {len(line)} bytes, more than a whole input "
                                 f"file may hold ({max_bytes})")
        yield request.custom_id, line


def split_lines(requests: Iterable[BatchRequest], endpoint: str = CHAT_ENDPOINT, max_requests: int = MAX_REQUESTS,
                max_bytes: int = MAX_BYTES) -> Iterator[list[bytes]]:
    """The request lines in groups that respect both limits (in request order)."""
    if max_requests < 1 or max_bytes < 1:
        raise VinstructError(f"batch file limits must be at least 1, got {max_requests} requests, {max_bytes} bytes")
    group: list[bytes] = []
    size = 0
    for _, line in _lines(requests, endpoint, max_bytes):
        if group and (len(group) == max_requests or size + len(line) > max_bytes):
            yield group
            group, size = [], 0
        group.append(line)
        size += len(line)
    if group:
        yield group


def fingerprint(requests: Iterable[BatchRequest], endpoint: str = CHAT_ENDPOINT) -> str:
    """sha256 of all request lines: equal for equal requests in equal order."""
    digest = hashlib.sha256()
    for _, line in _lines(requests, endpoint, max_bytes=2**63):
        digest.update(line)
    return digest.hexdigest()


def _atomic_lines(path: Path, lines: list[bytes]) -> None:
    with atomic_file(path) as tmp, tmp.open("wb") as handle:
        handle.writelines(lines)
        handle.flush()
        os.fsync(handle.fileno())


def write_request_files(requests: Iterable[BatchRequest], directory: str | os.PathLike, stem: str,
                        endpoint: str = CHAT_ENDPOINT, max_requests: int = MAX_REQUESTS,
                        max_bytes: int = MAX_BYTES) -> tuple[list[dict], str]:
    """Write DIR/<stem>-000.jsonl, -001, ...; returns (one record per file, fingerprint of all lines).

    A record: {"index", "path" (the file name), "requests", "bytes"}. Only one file's lines are
    held in memory at a time.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    parts = []
    for index, lines in enumerate(split_lines(requests, endpoint, max_requests, max_bytes)):
        name = f"{stem}-{index:03d}.jsonl"
        _atomic_lines(directory / name, lines)
        for line in lines:
            digest.update(line)
        parts.append({"index": index, "path": name, "requests": len(lines), "bytes": sum(map(len, lines))})
    if not parts:
        raise VinstructError("no requests to send as a batch")
    return parts, digest.hexdigest()


def read_request_file(path: str | os.PathLike) -> Iterator[BatchRequest]:
    """The requests of a file written by write_request_files (for retrying some of them)."""
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
                yield BatchRequest(row["custom_id"], row["body"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise VinstructError(f"{path}:{number}: not a batch request line (custom_id, body)") from None
