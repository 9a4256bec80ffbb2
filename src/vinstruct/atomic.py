"""Atomic writes: readers see the old file (or directory) or the whole new one, never half of it.

Everything is written beside its destination (same filesystem, so the final rename is atomic)
and renamed into place only once complete; a failure removes the temporary copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temp file path beside `path`; renamed onto `path` when the block ends without an error.

    The temp name ends in `path`'s own suffix (.tmp.png, .tmp.safetensors), for writers that go by it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` (UTF-8), synced to disk before the rename."""
    with atomic_file(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path`, synced to disk before the rename."""
    with atomic_file(path) as tmp, tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


class AtomicDirectory:
    """A directory written at `.path` and moved onto `destination` by commit().

    temp: where to write (default: a fresh hidden directory beside the destination); name it
    when several processes fill the same directory (each rank of a training run).
    """

    def __init__(self, destination: str | os.PathLike, temp: str | os.PathLike | None = None):
        self.destination = Path(destination)
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        if temp is None:
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.destination.name}.tmp-", dir=self.destination.parent))
        else:
            self.path = Path(temp)
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.mkdir(parents=True)

    def commit(self) -> None:
        old = None
        if self.destination.exists():
            old = self.destination.with_name(f".{self.destination.name}.old-{os.getpid()}")
            os.replace(self.destination, old)
        os.replace(self.path, self.destination)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def atomic_directory(destination: str | os.PathLike) -> AtomicDirectory:
    """A temp directory beside `destination`; leaving the `with` block without an error replaces it."""
    return AtomicDirectory(destination)
