"""The scripted teacher's Batch API: batch jobs, their life cycle, output and error files.

A batch moves one step each time a client looks at it (retrieve, list, cancel), so a poller
sees every status of the real service in order:

    validating -> in_progress -> finalizing -> completed
    validating -> failed                      (the input file breaks a rule: batch_input.py)
    in_progress -> expired                    (a batch number listed in `expire`)
    validating | in_progress -> cancelling -> cancelled

`in_progress` lasts `delay_s` seconds (rows are answered at an even pace, so request_counts
grow); with delay 0 every row is answered at the first look. Rows are answered by the same code
as the online endpoint, so a batch reply equals the online reply to the same request. Faults are
drawn from (seed, batch number, custom_id): the same submissions fail the same rows, and a
retried row (in a later batch) draws afresh.

Result rows have the API's shape: {"id", "custom_id", "response": {"status_code", "request_id",
"body"}, "error"}. Answers (status 200) go to the output file; HTTP errors (a bad body, an
injected 500) and requests never run (expired, cancelled: "response" null, "error" {code,
message}) go to the error file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vinstruct.data.formats import read_json, write_json
from vinstruct.errors import VinstructError
from vinstruct.generate.scripted.batch_input import InputRequest, check_input
from vinstruct.generate.scripted.files import FileStore

log = logging.getLogger("vinstruct.teacher")

ENDPOINTS = ("/v1/chat/completions",)
COMPLETION_WINDOWS = {"24h": 24 * 3600}
TERMINAL = ("completed", "failed", "expired", "cancelled")
NOT_RUN = {"expired": ("batch_expired", "This request was not run before the batch's completion window ended."),
           "cancelled": ("batch_cancelled", "This request was not run because the batch was cancelled.")}


@dataclass
class BatchOptions:
    """Limits and faults of the Batch API (`vinstruct teacher --batch-*`)."""

    fail_rows: float = 0.0  # this share of rows answers HTTP 500 (in the error file)
    expire: tuple[int, ...] = ()  # these batches (1 = the first created) expire instead of completing
    expire_after: float = 0.5  # the share of an expiring batch's rows answered before it expires
    delay_s: float = 0.0  # how long a batch stays in_progress
    seed: int = 0
    max_requests: int = 50_000  # per input file, as the API
    max_bytes: int = 200 * 1024 * 1024
    state_dir: Path | None = None  # keep files and batches here across restarts (None: in memory)

    def __post_init__(self):
        # messages name the `vinstruct teacher` option and the field
        for name, value in (("fail_rows", self.fail_rows), ("expire_after", self.expire_after)):
            if not 0 <= value <= 1:
                raise VinstructError(f"--batch-{name.replace('_', '-')} ({name}) must be between 0 and 1, got {value}")
        if self.delay_s < 0:
            raise VinstructError(f"--batch-delay (delay_s) must be at least 0 seconds, got {self.delay_s}")
        if self.max_requests < 1 or self.max_bytes < 1:
            raise VinstructError(f"--batch-max-requests and --batch-max-bytes must be at least 1, "
                                 f"got {self.max_requests} and {self.max_bytes}")
        if any(n < 1 for n in self.expire):
            raise VinstructError(f"--batch-expire (expire): batch numbers start at 1, got {list(self.expire)}")


def _draw(*parts) -> float:
    """A number in [0, 1) fixed by its parts (the same parts always give the same number)."""
    digest = hashlib.sha256(json.dumps(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _hex(*parts) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


@dataclass
class BatchJob:
    number: int  # 1 for the first batch this server created
    batch: dict  # the Batch object as the API returns it
    started: float | None = None  # when in_progress began (time.time(), with fractions)
    rows: list[dict] = field(default_factory=list)  # result rows so far, in input order
    requests: list[InputRequest] | None = None  # the checked input (read again after a restart)

    @property
    def status(self) -> str:
        return self.batch["status"]


class BatchStore:
    """Files and batches of one server; `answer(body) -> (status, json)` answers one request."""

    def __init__(self, options: BatchOptions, answer: Callable[[dict], tuple[int, dict]]):
        self.options = options
        self.answer = answer
        state_dir = Path(options.state_dir) if options.state_dir is not None else None
        self.state_file = state_dir / "state.json" if state_dir is not None else None
        self.files = FileStore(state_dir / "files" if state_dir is not None else None)
        self.jobs: dict[str, BatchJob] = {}
        self.created = 0  # batches created, ever (numbers them; survives restarts with a state dir)
        if self.state_file is not None and self.state_file.is_file():
            self._load()

    # ---- creating and looking ---------------------------------------------------------------------
    def create(self, input_file_id: str, endpoint: str, completion_window: str, metadata: dict | None) -> dict:
        now = int(time.time())
        self.created += 1
        batch_id = f"batch_{uuid.uuid4().hex[:24]}"
        batch = {"id": batch_id, "object": "batch", "endpoint": endpoint, "errors": None, "input_file_id": input_file_id,
                 "completion_window": completion_window, "status": "validating", "output_file_id": None,
                 "error_file_id": None, "created_at": now, "in_progress_at": None,
                 "expires_at": now + COMPLETION_WINDOWS[completion_window], "finalizing_at": None, "completed_at": None,
                 "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": metadata, "model": None,
                 "usage": None}
        self.jobs[batch_id] = BatchJob(self.created, batch)
        lines = sum(1 for line in self.files.content(input_file_id).splitlines() if line.strip())
        log.info("batch created: %s number=%d input_file_id=%s requests=%d", batch_id, self.created, input_file_id, lines)
        self.save()
        return batch

    def look(self, batch_id: str) -> dict | None:
        """The batch after one more step of its life cycle (None: no such batch)."""
        job = self.jobs.get(batch_id)
        if job is None:
            return None
        if job.status not in TERMINAL:
            self._step(job, time.time())
            self.save()
        return job.batch

    def cancel(self, batch_id: str) -> dict:
        """Start cancelling a validating or in_progress batch (any other status: VinstructError)."""
        job = self.jobs[batch_id]
        if job.status in ("validating", "in_progress"):
            job.batch["status"], job.batch["cancelling_at"] = "cancelling", int(time.time())
            self.save()
        elif job.status not in ("cancelling", "cancelled"):
            raise VinstructError(f"cannot cancel batch {batch_id}: its status is {job.status}")
        return job.batch

    def listing(self) -> list[str]:
        """Batch ids, newest first (the API's order)."""
        return list(self.jobs)[::-1]

    # ---- the life cycle ---------------------------------------------------------------------------
    def _step(self, job: BatchJob, now: float) -> None:
        b = job.batch
        if b["status"] == "validating":
            content = self.files.content(b["input_file_id"])
            requests, problems = check_input(content, b["endpoint"], self.options.max_requests)
            if problems:
                b.update(status="failed", failed_at=int(now), errors={"object": "list", "data": problems})
                return
            job.requests, job.started = requests, now
            b.update(status="in_progress", in_progress_at=int(now), model=requests[0].body.get("model"))
            b["request_counts"]["total"] = len(requests)
            self._run_due(job, now)
        elif b["status"] == "in_progress":
            expiring = job.number in self.options.expire
            if expiring and len(job.rows) >= self._expire_count(job):
                self._close(job, "expired", now)
                return
            self._run_due(job, now)
            if len(job.rows) == len(self._requests(job)):
                b.update(status="finalizing", finalizing_at=int(now))
        elif b["status"] == "finalizing":
            self._close(job, "completed", now)
        elif b["status"] == "cancelling":
            self._close(job, "cancelled", now)

    def _requests(self, job: BatchJob) -> list[InputRequest]:
        if job.requests is None:  # after a restart: the input file is the same, so is the check
            job.requests, _ = check_input(self.files.content(job.batch["input_file_id"]), job.batch["endpoint"],
                                          self.options.max_requests)
        return job.requests

    def _expire_count(self, job: BatchJob) -> int:
        return math.floor(self.options.expire_after * len(self._requests(job)))

    def _run_due(self, job: BatchJob, now: float) -> None:
        """Answer the rows due by now: all of them without a delay, else an even share of delay_s."""
        requests = self._requests(job)
        due = len(requests)
        if self.options.delay_s > 0:
            due = min(due, math.floor(len(requests) * (now - job.started) / self.options.delay_s))
        if job.number in self.options.expire:
            due = min(due, self._expire_count(job))
        for request in requests[len(job.rows):due]:
            job.rows.append(self._run(job, request))
        self._count(job)

    def _run(self, job: BatchJob, request: InputRequest) -> dict:
        batch_id = job.batch["id"]
        row_id, request_id = f"batch_req_{_hex(batch_id, request.custom_id)}", f"req_{_hex('r', batch_id, request.custom_id)}"
        if _draw(self.options.seed, job.number, request.custom_id) < self.options.fail_rows:
            status, body = 500, {"error": {"message": "the server had an error processing this request (injected)",
                                           "type": "server_error", "code": 500}}
        else:
            status, body = self.answer(request.body)
        return {"id": row_id, "custom_id": request.custom_id,
                "response": {"status_code": status, "request_id": request_id, "body": body}, "error": None}

    def _count(self, job: BatchJob) -> None:
        ok = [row for row in job.rows if row["response"] is not None and row["response"]["status_code"] == 200]
        counts = job.batch["request_counts"]
        counts["completed"], counts["failed"] = len(ok), len(job.rows) - len(ok)
        prompt = sum(row["response"]["body"]["usage"]["prompt_tokens"] for row in ok)
        completion = sum(row["response"]["body"]["usage"]["completion_tokens"] for row in ok)
        job.batch["usage"] = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                              "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
                              "total_tokens": prompt + completion}

    def _close(self, job: BatchJob, status: str, now: float) -> None:
        """Write the output and error files and end the batch with `status`."""
        b = job.batch
        if status in NOT_RUN:
            code, message = NOT_RUN[status]
            if b["request_counts"]["total"] == 0:  # cancelled while validating: the rows were never counted
                b["request_counts"]["total"] = len(self._requests(job))
            for request in self._requests(job)[len(job.rows):]:
                job.rows.append({"id": f"batch_req_{_hex(b['id'], request.custom_id)}", "custom_id": request.custom_id,
                                 "response": None, "error": {"code": code, "message": message}})
        self._count(job)
        ok, errors = [], []
        for row in job.rows:
            (ok if row["response"] is not None and row["response"]["status_code"] == 200 else errors).append(row)
        for rows, kind in ((ok, "output"), (errors, "error")):
            if rows:
                text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
                record = self.files.add(text.encode("utf-8"), f"{b['id']}_{kind}.jsonl", "batch_output")
                b[f"{kind}_file_id"] = record["id"]
        b.update(status=status, **{f"{status}_at": int(now)})
        log.info("batch %s: %s (%d answered, %d errors)", b["id"], status, len(ok), len(errors))

    # ---- persistence (state directory) ------------------------------------------------------------
    def save(self) -> None:
        if self.state_file is None:
            return
        write_json(self.state_file, {
            "created": self.created, "files": self.files.to_state(),
            "batches": [{"number": j.number, "batch": j.batch, "started": j.started, "rows": j.rows}
                        for j in self.jobs.values()]}, indent=None)

    def _load(self) -> None:
        state = read_json(self.state_file)
        self.created = state["created"]
        self.files.load_state(state["files"])
        for saved in state["batches"]:
            job = BatchJob(saved["number"], saved["batch"], saved["started"], saved["rows"])
            self.jobs[job.batch["id"]] = job
