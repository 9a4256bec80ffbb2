"""The state file of a batch run: which phase each input file has reached, written atomically.

One JSON file per run directory records, per input file (a "part"): written, upload begun,
uploaded file id, creation begun, batch id, last status seen, result file ids, results
downloaded. Every phase is saved before the next begins (temp file + rename), so a run killed
anywhere restarts from the last saved phase; the "begun" marks let a restart find an upload or a
batch whose id was never saved (the server is asked, nothing is sent twice).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vinstruct.data.formats import read_json, write_json
from vinstruct.errors import VinstructError

STATE_NAME = "batch_state.json"
STATE_VERSION = 1


@dataclass
class Part:
    index: int
    path: str  # the input file's name in the run directory
    requests: int
    bytes: int
    upload_begun: bool = False
    file_id: str | None = None
    create_begun: bool = False
    batch_id: str | None = None
    status: str | None = None  # the batch's status when last seen
    request_counts: dict | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict] | None = None  # why a failed batch failed (the API's errors.data)
    usage: dict | None = None
    downloaded: bool = False


@dataclass
class RunState:
    run_id: str  # in upload file names and batch metadata: how a restart finds its own uploads
    endpoint: str
    completion_window: str
    fingerprint: str  # of all request lines: a re-run with other requests is refused
    parts: list[Part] = field(default_factory=list)
    version: int = STATE_VERSION

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | os.PathLike) -> RunState | None:
        path = Path(path)
        if not path.is_file():
            return None
        data = read_json(path)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise VinstructError(f"{path}: not a batch state file of version {STATE_VERSION}")
        try:
            parts = [Part(**p) for p in data.pop("parts")]
            return cls(parts=parts, **data)
        except (TypeError, KeyError) as err:
            raise VinstructError(f"{path}: malformed batch state ({err})") from None
