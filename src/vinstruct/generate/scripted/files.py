"""The scripted teacher's file store: what `/v1/files` uploads, lists, serves and deletes.

Files are kept in memory, or under a state directory (one file per upload, named by its id) so
that a restarted server still serves them. Metadata has the shape of the API's File object.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from vinstruct.atomic import atomic_write_bytes

# What the API accepts as `purpose` on upload; "batch_output" is the server's own, for result files.
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
FILE_EXPIRY_S = 30 * 24 * 3600  # batch files expire after 30 days, as the API's do


class FileStore:
    def __init__(self, directory: Path | None = None):
        self.directory = Path(directory) if directory is not None else None
        self.files: dict[str, dict] = {}  # id -> File object, in upload order
        self._contents: dict[str, bytes] = {}

    def add(self, content: bytes, filename: str, purpose: str) -> dict:
        now = int(time.time())
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        record = {"id": file_id, "object": "file", "bytes": len(content), "created_at": now, "filename": filename,
                  "purpose": purpose, "status": "processed", "status_details": None,
                  "expires_at": now + FILE_EXPIRY_S if purpose.startswith("batch") else None}
        if self.directory is not None:
            atomic_write_bytes(self.directory / file_id, content)
        else:
            self._contents[file_id] = content
        self.files[file_id] = record
        return record

    def get(self, file_id: str) -> dict | None:
        return self.files.get(file_id)

    def content(self, file_id: str) -> bytes:
        if self.directory is not None:
            return (self.directory / file_id).read_bytes()
        return self._contents[file_id]

    def delete(self, file_id: str) -> bool:
        if self.files.pop(file_id, None) is None:
            return False
        self._contents.pop(file_id, None)
        if self.directory is not None:
            (self.directory / file_id).unlink(missing_ok=True)
        return True

    def listing(self, purpose: str | None = None, order: str = "desc") -> list[dict]:
        """The files (of one purpose), newest first for order='desc' (the API's default)."""
        files = [f for f in self.files.values() if purpose is None or f["purpose"] == purpose]
        return files[::-1] if order == "desc" else files

    # ---- persistence (state directory) ------------------------------------------------------------
    def to_state(self) -> list[dict]:
        return list(self.files.values())

    def load_state(self, records: list[dict]) -> None:
        self.files = {r["id"]: r for r in records if self.directory is not None and (self.directory / r["id"]).is_file()}
