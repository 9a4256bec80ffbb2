"""A judge's requests through the Batch API (`vinstruct eval --judge-batch`), the rest online.

    judge = make_judge(url, journal=out / "judge_journal.jsonl", batch=BatchSettings(None))
    run = judge.run(requests, parse, reminder)  # the batch for what the journal lacks, then online

The batch rows are the online requests (the same bodies; custom_id = the journal key), sent by
the teacher's batch code (`vinstruct.generate.batch_mode.fetch_batch`). A readable reply goes into
the judge's journal as an online one would, so nothing after can tell the modes apart; an
unreadable one is handed back to be re-asked online with the reminder; a row the batch rounds
leave unanswered is asked online from the start (Judge._ask).

Each `Judge.run` call has its own run directory under the batch directory, named after its
description and a hash of all its request keys: a re-run of the same call (after a kill) finds
its batches again, and two calls of one evaluation (ScienceQA's solve and arbitrate) never share one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vinstruct.endpoint.client import EndpointConfig
from vinstruct.endpoint.journal import Journal
from vinstruct.errors import VinstructError
from vinstruct.generate.batch_api import STATE_NAME
from vinstruct.generate.batch_mode import BatchSettings, batch_cancel, batch_status, fetch_batch


@dataclass(frozen=True)
class JudgeTask:
    """What fetch_batch needs of a request: its key, its messages, its seed (judges send none)."""
    key: str
    messages: list[dict]
    seed: int | None = None


@dataclass
class BatchPhase:
    """What the batch rounds of one `Judge.run` call gave."""
    answered: set[str] = field(default_factory=set)  # keys whose readable reply went into the journal
    unreadable: dict[str, str] = field(default_factory=dict)  # key -> the reply the parser could not read
    failed: dict[str, str] = field(default_factory=dict)  # key -> why no batch round answered it
    usage: dict = field(default_factory=dict)  # the batch rows' tokens, at the batch price
    summary: dict = field(default_factory=dict)  # rounds, batch ids, retried rows (fetch_batch)

    def stats(self) -> dict:
        return {**self.summary, "answered": len(self.answered), "unreadable": len(self.unreadable),
                "failed": len(self.failed), "usage": self.usage}


def call_directory(root: Path, desc: str, keys: list[str]) -> Path:
    """The run directory of one call: root/<description>-<hash of its request keys>."""
    slug = re.sub(r"[^a-z0-9]+", "-", desc.lower()).strip("-") or "judge"
    digest = hashlib.sha1("\n".join(sorted(set(keys))).encode()).hexdigest()[:10]
    return root / f"{slug}-{digest}"


def ask_in_batches(config: EndpointConfig, keys: list[str], requests: list[list[dict]], parse: Callable,
                   journal: Journal, settings: BatchSettings, desc: str, progress: bool = True) -> BatchPhase | None:
    """Send the requests the journal cannot answer as one batch run; None when there are none."""
    todo: dict[str, JudgeTask] = {}  # one row per key: the Batch API refuses a custom_id twice
    for key, messages in zip(keys, requests):
        row = journal.get(key)
        if key not in todo and not (row and "reply" in row and parse(row["reply"]) is not None):
            todo[key] = JudgeTask(key, messages)
    if not todo:
        return None
    phase = BatchPhase()

    def row_of(task: JudgeTask, completion, _model) -> dict | None:
        if parse(completion.text) is None:
            phase.unreadable[task.key] = completion.text
            return None
        return {"key": task.key, "reply": completion.text}

    directory = call_directory(settings.directory, desc, keys)
    phase.failed, phase.usage, phase.summary = fetch_batch(
        list(todo.values()), config, journal, row_of, None, dataclasses.replace(settings, directory=directory), progress)
    phase.answered = {key for key in todo if key in journal}
    return phase


def _calls(root: Path) -> list[Path]:
    calls = sorted(path for path in root.glob("*") if (path / "round-0" / STATE_NAME).is_file()) if root.is_dir() else []
    if not calls:
        raise VinstructError(f"{root}: no judge batch runs here; start one with --judge-batch, or give --judge-batch-dir")
    return calls


def judge_batch_status(config: EndpointConfig, root: Path, cancel: bool = False) -> str:
    """Every batch of every judge call under `root` (cancelled first when asked): one table per round."""
    look = batch_cancel if cancel else batch_status
    return "\n\n".join(f"{call.name}:\n{look(config, call)}" for call in _calls(root))
