"""A batch run: requests -> input files -> uploads -> batches -> polling -> result files -> results.

    from openai import OpenAI
    from vinstruct.generate.batch_api import BatchRequest, BatchRun

    run = BatchRun(OpenAI(base_url=url, api_key=key), "runs/stage2-batch")
    for result in run.run(requests):          # one BatchResult per request
        print(result.custom_id, result.content if result.ok else result.error)

Every phase is recorded in DIR/batch_state.json before the next begins (state.py). Run again in
the same directory with the same requests, after a crash or kill -9 at any point, and it goes on
from there: files already uploaded and batches already created are reused, never sent twice.
Requests other than the recorded ones are refused (a run directory belongs to one request set).
Works with any `openai.OpenAI`-compatible client (files and batches resources).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import openai
from tqdm import tqdm

from vinstruct.atomic import atomic_file
from vinstruct.errors import VinstructError
from vinstruct.generate.batch_api.requests import (CHAT_ENDPOINT, MAX_BYTES, MAX_REQUESTS, BatchRequest, fingerprint,
                                                   read_request_file, write_request_files)
from vinstruct.generate.batch_api.results import BatchResult, read_result_file
from vinstruct.generate.batch_api.state import STATE_NAME, Part, RunState

TERMINAL = ("completed", "failed", "expired", "cancelled")
# Errors a poll may meet over a day of waiting that say nothing about the batches: try again later.
TRANSIENT = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)


class BatchRun:
    def __init__(self, client, directory: str | os.PathLike, *, endpoint: str = CHAT_ENDPOINT,
                 completion_window: str = "24h", max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES,
                 poll_s: float = 5.0, poll_max_s: float = 300.0, backoff: float = 1.5, progress: bool = True,
                 max_poll_errors: int = 20, sleep: Callable[[float], None] = time.sleep):
        """poll_s: the first wait between looks at the batches; it grows by `backoff` while nothing
        changes, up to poll_max_s, and starts again from poll_s when rows get done. Up to
        max_poll_errors polls in a row may fail on connection, rate-limit or server errors."""
        self.client = client
        self.directory = Path(directory)
        self.endpoint, self.completion_window = endpoint, completion_window
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self.poll_s, self.poll_max_s, self.backoff = poll_s, poll_max_s, backoff
        self.progress, self.sleep, self.max_poll_errors = progress, sleep, max_poll_errors
        self.state_path = self.directory / STATE_NAME
        self.state: RunState | None = RunState.load(self.state_path)

    # ---- the whole run ----------------------------------------------------------------------------
    def run(self, requests: Iterable[BatchRequest], timeout_s: float | None = None) -> Iterator[BatchResult]:
        """Submit (or find the submitted batches), wait for them, download, yield one result per request."""
        self.submit(requests)
        self.wait(timeout_s)
        self.download()
        yield from self.results()

    def submit(self, requests: Iterable[BatchRequest]) -> RunState:
        self.write(requests)
        self.upload()
        self.create()
        return self.state

    # ---- phase 1: input files ---------------------------------------------------------------------
    def write(self, requests: Iterable[BatchRequest]) -> RunState:
        if self.state is not None:
            if fingerprint(requests, self.state.endpoint) != self.state.fingerprint:
                raise VinstructError(f"{self.state_path}: this directory holds a batch run of other requests; "
                                     "use another directory for these (or remove it to start over)")
            return self.state
        parts, digest = write_request_files(requests, self.directory, "requests", self.endpoint, self.max_requests,
                                            self.max_bytes)
        self.state = RunState(uuid.uuid4().hex[:12], self.endpoint, self.completion_window, digest,
                              [Part(**part) for part in parts])
        self._save()
        return self.state

    # ---- phase 2: uploads -------------------------------------------------------------------------
    def _upload_name(self, part: Part) -> str:
        return f"vinstruct-{self._state().run_id}-{part.index:03d}.jsonl"

    def upload(self) -> None:
        for part in self._state().parts:
            if part.file_id is not None:
                continue
            if part.upload_begun:  # killed during the upload: did it arrive?
                part.file_id = self._find_upload(part)
            if part.file_id is None:
                part.upload_begun = True
                self._save()
                with open(self.directory / part.path, "rb") as handle:
                    part.file_id = self.client.files.create(file=(self._upload_name(part), handle), purpose="batch").id
            self._save()

    def _find_upload(self, part: Part) -> str | None:
        name = self._upload_name(part)
        for record in self.client.files.list(purpose="batch"):
            if record.filename == name and record.bytes == part.bytes:
                return record.id
        return None

    # ---- phase 3: batches -------------------------------------------------------------------------
    def create(self) -> None:
        state = self._state()
        for part in state.parts:
            if part.batch_id is not None:
                continue
            if part.create_begun:  # killed while creating: was it created?
                part.batch_id = self._find_batch(part)
            if part.batch_id is None:
                part.create_begun = True
                self._save()
                batch = self.client.batches.create(
                    input_file_id=part.file_id, endpoint=state.endpoint, completion_window=state.completion_window,
                    metadata={"vinstruct_run": state.run_id, "vinstruct_part": str(part.index)})
                part.batch_id = batch.id
                self._note(part, batch)
            self._save()

    def _find_batch(self, part: Part) -> str | None:
        for batch in self.client.batches.list(limit=100):
            if batch.input_file_id == part.file_id:
                return batch.id
        return None

    # ---- phase 4: polling -------------------------------------------------------------------------
    def poll(self) -> list[Part]:
        """One look at every unfinished batch; what it sees goes to the state file."""
        for part in self._state().parts:
            if part.batch_id is not None and part.status not in TERMINAL:
                try:
                    self._note(part, self.client.batches.retrieve(part.batch_id))
                except openai.NotFoundError:
                    raise VinstructError(f"{self.state_path}: the server does not know batch {part.batch_id}; if it "
                                         "lost it, move this directory away to submit the requests again") from None
        self._save()
        return self._state().parts

    @staticmethod
    def _note(part: Part, batch) -> None:
        part.status = batch.status
        part.request_counts = batch.request_counts.model_dump() if batch.request_counts else None
        part.output_file_id, part.error_file_id = batch.output_file_id, batch.error_file_id
        part.errors = [e.model_dump() for e in batch.errors.data] if batch.errors and batch.errors.data else None
        part.usage = batch.usage.model_dump() if getattr(batch, "usage", None) else None

    @staticmethod
    def _done_rows(part: Part) -> int:
        if part.status in TERMINAL:
            return part.requests  # every row is accounted for, in a result file or as never run
        counts = part.request_counts or {}
        return counts.get("completed", 0) + counts.get("failed", 0)

    def wait(self, timeout_s: float | None = None) -> list[Part]:
        """Poll until every batch has ended, with backoff and a progress bar over all requests."""
        parts = self._state().parts
        if any(part.batch_id is None for part in parts):
            raise VinstructError(f"{self.state_path}: some input files have no batch yet; submit first")
        start, interval, last_done, errors = time.monotonic(), self.poll_s, -1, 0
        bar = tqdm(total=sum(p.requests for p in parts), desc="batch", unit="req", disable=not self.progress)
        try:
            while True:
                try:
                    self.poll()
                    errors = 0
                except TRANSIENT as err:
                    errors += 1
                    if errors > self.max_poll_errors:
                        raise VinstructError(f"{errors} polls in a row failed, the last with {type(err).__name__}: "
                                             f"{err}; run again to keep waiting (state in {self.state_path})") from None
                done = sum(self._done_rows(p) for p in parts)
                bar.update(done - bar.n)
                bar.set_postfix_str(summary_line(parts), refresh=False)
                if all(p.status in TERMINAL for p in parts):
                    return parts
                interval = self.poll_s if done != last_done else min(interval * self.backoff, self.poll_max_s)
                last_done = done
                if timeout_s is not None and time.monotonic() - start + interval > timeout_s:
                    raise VinstructError(f"batches still running after {timeout_s:g} s ({summary_line(parts)}); "
                                         f"run again to keep waiting (state in {self.state_path})")
                self.sleep(interval)
        finally:
            bar.close()

    # ---- phase 5: result files --------------------------------------------------------------------
    def download(self) -> None:
        """Fetch the output and error files of ended batches into the run directory."""
        for part in self._state().parts:
            if part.downloaded or part.status not in TERMINAL:
                continue
            for kind, file_id in (("output", part.output_file_id), ("errors", part.error_file_id)):
                if file_id is not None:
                    self._download(file_id, self.directory / f"{kind}-{part.index:03d}.jsonl")
            part.downloaded = True
            self._save()

    def _download(self, file_id: str, path: Path) -> None:
        with atomic_file(path) as tmp, tmp.open("wb") as handle:
            with self.client.files.with_streaming_response.content(file_id) as response:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())

    def results(self) -> Iterator[BatchResult]:
        """One result per request, read from the downloaded files (re-readable, no server calls).

        Requests found in neither file (their batch failed validation, or the provider left them
        out) come back as errors with code "batch_<status>"; a custom_id seen twice counts once.
        """
        for part in self._state().parts:
            if not part.downloaded:
                raise VinstructError(f"{self.state_path}: batch {part.batch_id} has not ended and been downloaded; "
                                     "wait and download first")
            seen: set[str] = set()
            for kind in ("output", "errors"):
                path = self.directory / f"{kind}-{part.index:03d}.jsonl"
                if path.is_file():
                    for result in read_result_file(path):
                        if result.custom_id not in seen:
                            seen.add(result.custom_id)
                            yield result
            if len(seen) < part.requests:
                reason = (part.errors or [{}])[0].get("message") or f"the batch ended {part.status} without this row"
                error = {"code": f"batch_{part.status}", "message": reason}
                for request in read_request_file(self.directory / part.path):
                    if request.custom_id not in seen:
                        yield BatchResult(request.custom_id, None, None, error)

    def requests(self) -> Iterator[BatchRequest]:
        """The run's requests, read back from its input files."""
        for part in self._state().parts:
            yield from read_request_file(self.directory / part.path)

    # ---- looking and cancelling -------------------------------------------------------------------
    def status(self) -> list[dict]:
        """A fresh look at the run's batches: one summary per input file."""
        self.poll()
        return [part_summary(part) for part in self._state().parts]

    def cancel(self) -> list[dict]:
        """Ask the server to cancel every batch of the run that has not ended."""
        for part in self._state().parts:
            if part.batch_id is not None and part.status not in TERMINAL + ("cancelling",):
                self._note(part, self.client.batches.cancel(part.batch_id))
                self._save()
        return [part_summary(part) for part in self._state().parts]

    # ---- state ------------------------------------------------------------------------------------
    def _state(self) -> RunState:
        if self.state is None:
            raise VinstructError(f"{self.directory}: no batch run here ({STATE_NAME} not found)")
        return self.state

    def _save(self) -> None:
        self._state().save(self.state_path)


def part_summary(part: Part) -> dict:
    counts = part.request_counts or {}
    return {"file": part.path, "requests": part.requests, "file_id": part.file_id, "batch_id": part.batch_id,
            "status": part.status or ("not submitted" if part.file_id is None else "uploaded"),
            "completed": counts.get("completed", 0), "failed": counts.get("failed", 0), "downloaded": part.downloaded}


def summary_line(parts: list[Part]) -> str:
    """'2 completed, 1 in_progress': how many batches are in each status."""
    counts: dict[str, int] = {}
    for part in parts:
        counts[part.status or "unsubmitted"] = counts.get(part.status or "unsubmitted", 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def format_status(summaries: list[dict]) -> str:
    """A small table of part summaries (for `--batch-status`)."""
    rows = [("file", "batch", "status", "requests", "completed", "failed")]
    rows += [(s["file"], s["batch_id"] or "-", s["status"], str(s["requests"]), str(s["completed"]), str(s["failed"]))
             for s in summaries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
