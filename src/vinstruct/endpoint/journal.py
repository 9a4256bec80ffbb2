"""The on-disk cache of an endpoint's replies: an append-only JSONL journal, one row per finished request.

A row is keyed by its request's stable key (the caller's: the teacher pipeline hashes model,
task type, image id, index and prompt; a judge hashes model and messages): a re-run, or a run
after kill -9, reuses every row and asks only for the rest. Rows reach the OS with
every append (a killed process loses nothing written); fsync runs in batches from a
worker thread (`sync()`), so durability against power loss costs no event-loop time.
A torn last line (killed mid-write) is cut off on open. A file lock keeps two runs
from writing the same journal at once.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from vinstruct.data.formats import append_jsonl
from vinstruct.errors import VinstructError

try:
    import fcntl
except ImportError:  # not on POSIX: no cross-process lock
    fcntl = None


class Journal:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")
        self._lock()
        self.rows: dict[str, dict] = {}
        self.repaired = False  # a torn last line was cut off on open
        self.duplicates = 0  # rows whose key was already present (kept: the first)
        self._load()
        self._unsynced = False

    def _lock(self) -> None:
        if fcntl is None:
            return
        try:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.close()
            raise VinstructError(f"{self.path}: in use by another running process (one run per journal file)") from None

    def _load(self) -> None:
        data = self.path.read_bytes()
        good_end = data.rfind(b"\n") + 1
        if good_end < len(data):
            # The process died while writing the last row: drop the partial row so appends start clean
            # (the append handle writes at the end of the file, wherever that now is).
            os.truncate(self.path, good_end)
            self.repaired = True
        for number, line in enumerate(data[:good_end].decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key = row["key"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise VinstructError(f"{self.path}:{number}: not a journal row (delete the file to start over)") from None
            if key in self.rows:
                self.duplicates += 1
                continue
            self.rows[key] = row

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, key: str) -> dict | None:
        return self.rows.get(key)

    def append(self, row: dict) -> None:
        """Record a finished request once; a key already present is ignored."""
        if row["key"] in self.rows:
            return
        append_jsonl(self._handle, row, fsync=False)
        self.rows[row["key"]] = row
        self._unsynced = True

    async def sync(self) -> None:
        if self._unsynced:
            self._unsynced = False
            await asyncio.to_thread(os.fsync, self._handle.fileno())

    def close(self) -> None:
        if self._handle.closed:
            return
        if self._unsynced:
            os.fsync(self._handle.fileno())
        self._handle.close()  # closing releases the lock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
