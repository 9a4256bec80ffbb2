"""Batch runs in rounds: rows that did not get an answer go again in a new batch.

Round 0 (DIR/round-0) sends every request; round N (DIR/round-N) sends the rows of round N-1
that failed in a way worth retrying (never run: expired, cancelled, a failed batch; or a
server-side HTTP error: 408, 429, 5xx). A 4xx answer such as a malformed body is final. Each
round is a BatchRun of its own, so the whole thing resumes after a kill like one run does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from vinstruct.generate.batch_api.requests import BatchRequest
from vinstruct.generate.batch_api.results import BatchResult
from vinstruct.generate.batch_api.run import BatchRun
from vinstruct.generate.batch_api.state import STATE_NAME


def worth_retrying(result: BatchResult) -> bool:
    return not result.ok and (result.status_code is None or result.status_code in (408, 429)
                              or result.status_code >= 500)


def run_in_rounds(client, requests: Iterable[BatchRequest], directory: str | os.PathLike, retries: int = 1,
                  timeout_s: float | None = None, **options) -> Iterator[BatchResult]:
    """One result per request, each answered once if any round answered it; `options` go to BatchRun.

    Results of a round are yielded as soon as they are final; the rest wait for the next round.
    After the last round, what is still unanswered is yielded with its error.
    """
    directory = Path(directory)
    run = BatchRun(client, directory / "round-0", **options)
    results = run.run(requests, timeout_s)
    for round_number in range(retries + 1):
        again: set[str] = set()
        for result in results:
            if round_number < retries and worth_retrying(result):
                again.add(result.custom_id)
            else:
                yield result
        if not again:
            return
        retry = [request for request in run.requests() if request.custom_id in again]
        run = BatchRun(client, directory / f"round-{round_number + 1}", **options)
        results = run.run(retry, timeout_s)


def round_runs(client, directory: str | os.PathLike, **options) -> list[BatchRun]:
    """The BatchRuns of the rounds started so far under `directory` (for status and cancel)."""
    directory = Path(directory)
    runs, number = [], 0
    while (directory / f"round-{number}" / STATE_NAME).is_file():
        runs.append(BatchRun(client, directory / f"round-{number}", **options))
        number += 1
    return runs
