"""`vinstruct generate --batch`: the teacher requests sent through the Batch API instead of one by one.

    failures, usage, summary = fetch_batch(tasks, config, journal, on_row, BatchSettings(OUT.batch))

The requests are exactly the online ones (same journal keys as custom_id, same bodies from
EndpointClient.body), and every answered row goes through EndpointClient.read and into the
journal as an online reply would, so everything after the fetch (parse, filters, stats, output)
cannot tell the two modes apart. The batch run lives in its own directory (state file, input and
result files; see batch_api/), so a killed run goes on with the same batches when started again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import openai
from openai.types.chat import ChatCompletion

from vinstruct.endpoint.client import EndpointClient, EndpointConfig, _Retry, resolve_api_key, run_async
from vinstruct.endpoint.journal import Journal
from vinstruct.errors import VinstructError
from vinstruct.generate.batch_api import (BATCH_DISCOUNT, MAX_REQUESTS, STATE_NAME, BatchRequest, BatchRun, format_status,
                                          round_runs, run_in_rounds)

FALLBACKS = ("none", "online")


@dataclass
class BatchSettings:
    directory: Path  # the run's files and state (default: <out stem>.batch beside the output)
    discount: float = BATCH_DISCOUNT  # batch price as a share of the online price, for the stats' cost
    retries: int = 2  # rounds of new batches for rows that failed in a way worth retrying (5xx, expired)
    poll_s: float = 5.0  # first wait between polls (it backs off while nothing changes)
    poll_max_s: float = 300.0
    max_requests: int = MAX_REQUESTS  # per input file (the API's limit; some providers allow fewer)
    fallback: str = "none"  # rows still failing after the last round: "online" sends them one by one, "none" not

    def __post_init__(self):
        if not 0 <= self.discount <= 1:
            raise VinstructError(f"--batch-discount must be between 0 and 1 (0.5 = half price), got {self.discount}")
        if self.retries < 0:
            raise VinstructError(f"--batch-retries must be 0 or more, got {self.retries}")
        if self.max_requests < 1:
            raise VinstructError(f"--batch-max-requests must be at least 1, got {self.max_requests}")
        if self.poll_s <= 0:
            raise VinstructError(f"--batch-poll must be positive, got {self.poll_s}")
        if self.fallback not in FALLBACKS:
            raise VinstructError(f"--batch-fallback must be one of {', '.join(FALLBACKS)}, got {self.fallback!r}")


def batch_client(config: EndpointConfig) -> openai.OpenAI:
    """The synchronous SDK client for files and batches (its own retries cover a flaky poll)."""
    return openai.OpenAI(base_url=config.base_url, api_key=resolve_api_key(config.base_url, config.api_key),
                         timeout=config.timeout, max_retries=3)


def _requests(tasks, client: EndpointClient, directory: Path) -> list[BatchRequest]:
    """The requests of round 0: those recorded there when a run was begun, else one per task.

    A run that was killed while ingesting has some replies in the journal already; asking for
    "what the journal lacks" again would be a different request set, so the recorded one wins.
    """
    wanted = [BatchRequest(task.key, client.body(task.messages, seed=task.seed)) for task in tasks]
    round_0 = directory / "round-0"
    if not (round_0 / STATE_NAME).is_file():
        return wanted
    recorded = list(BatchRun(None, round_0, progress=False).requests())
    have = {r.custom_id for r in recorded}
    missing = [r.custom_id for r in wanted if r.custom_id not in have]
    if missing:
        raise VinstructError(f"{directory}: this batch run was begun for other requests ({len(missing)} of this run's "
                             f"are not in it, e.g. {missing[0]}); finish it with the options it was started with, "
                             "or move the folder away to submit a new one")
    return recorded


def fetch_batch(tasks, config: EndpointConfig, journal: Journal, row_of: Callable, on_row: Callable | None,
                settings: BatchSettings, progress: bool = True) -> tuple[dict[str, str], dict, dict]:
    """Answer `tasks` through the Batch API; returns ({key: failure reason}, client usage, batch summary).

    row_of(task, completion, model) is the journal row of a reply, as the online mode writes it, or
    None for a reply the caller takes care of itself (not journaled, not a failure: a judge's
    unreadable verdict, which is re-asked online). Rows already in the journal (ingested before a
    kill) are not added again.
    """
    # Usage counted at the batch price: the stats' cost is what the provider bills.
    priced = dataclasses.replace(config, price_in=config.price_in * settings.discount,
                                 price_out=config.price_out * settings.discount)
    endpoint = EndpointClient(priced)
    by_key = {task.key: task for task in tasks}
    failures: dict[str, str] = {}
    sdk = batch_client(config)
    try:
        requests = _requests(tasks, endpoint, settings.directory)
        results = run_in_rounds(sdk, requests, settings.directory, retries=settings.retries, poll_s=settings.poll_s,
                                poll_max_s=settings.poll_max_s, progress=progress,
                                max_requests=settings.max_requests)
        for result in results:
            task = by_key.get(result.custom_id)
            if task is None or task.key in journal:
                continue  # not asked for this time, or ingested before a restart
            endpoint.usage.requests += 1
            if not result.ok:
                failures[task.key] = (result.error or {}).get("code") or "batch_error"
                endpoint.usage.failed += 1
                endpoint.usage.count(endpoint.usage.failures, failures[task.key])
                continue
            try:
                completion = endpoint.read(ChatCompletion.model_validate(result.body))
            except (_Retry, ValueError) as err:
                reason = err.reason if isinstance(err, _Retry) else "malformed"
                failures[task.key] = reason
                endpoint.usage.failed += 1
                endpoint.usage.count(endpoint.usage.failures, reason)
                continue
            endpoint.usage.succeeded += 1
            row = row_of(task, completion, config.model)
            if row is None:
                continue
            journal.append(row)
            if on_row:
                on_row(task, row)
        summary = run_summary(sdk, settings.directory, settings.discount)
    finally:
        sdk.close()
        run_async(endpoint.close())
    return failures, endpoint.usage.as_dict(), summary


def run_summary(sdk, directory: Path, discount: float) -> dict:
    """Rounds, batches and retried rows of the run in `directory` (from its state files, no server calls)."""
    runs = round_runs(sdk, directory, progress=False)
    parts = [part for run in runs for part in run.state.parts]
    return {"directory": str(directory), "discount": discount, "rounds": len(runs),
            "batches": [part.batch_id for part in parts],
            "requests": sum(part.requests for part in runs[0].state.parts) if runs else 0,
            "retried_rows": sum(part.requests for run in runs[1:] for part in run.state.parts)}


def _runs(config: EndpointConfig, directory: Path):
    sdk = batch_client(config)
    runs = round_runs(sdk, directory, progress=False)
    if not runs:
        sdk.close()
        raise VinstructError(f"{directory}: no batch run here (no round-0/{STATE_NAME}); "
                             "start one with --batch, or give --batch-dir")
    return sdk, runs


def _each_round(config: EndpointConfig, directory: Path, look) -> str:
    """`look(run)` (status or cancel) on every round of the run, as one table per round."""
    sdk, runs = _runs(config, directory)
    try:
        return "\n".join(f"round {n} ({run.directory}):\n{format_status(look(run))}" for n, run in enumerate(runs))
    finally:
        sdk.close()


def batch_status(config: EndpointConfig, directory: Path) -> str:
    """A fresh look at every batch of the run: one table per round."""
    return _each_round(config, directory, lambda run: run.status())


def batch_cancel(config: EndpointConfig, directory: Path) -> str:
    """Cancel every batch of the run that has not ended; the table after cancelling."""
    return _each_round(config, directory, lambda run: run.cancel())
