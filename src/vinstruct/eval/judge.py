"""A judge behind any OpenAI-compatible endpoint, talking through the one endpoint client.

- transport errors, timeouts, 429s and 5xx are retried by `vinstruct.endpoint.client` (with
  backoff, Retry-After, rate limits, token and cost accounting);
- a reply the caller's parser cannot read is asked again, up to `max_attempts` in all, with
  the bad reply and a reminder of the expected format appended to the conversation;
- every readable reply is appended to a JSONL journal (`vinstruct.endpoint.journal`) keyed by
  the request, so a rerun asks only what is still missing;
- when the endpoint fails `give_up_after` requests in a row, no more are sent: the run
  ends with what it has and reports itself incomplete instead of crashing;
- with `batch` settings, what the journal lacks goes through the Batch API first
  (`vinstruct.eval.judge_batch`), and only what the batch left (failed rows, unreadable
  replies) is asked online.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from vinstruct.endpoint.client import EndpointClient, EndpointConfig, FatalEndpointError, RequestFailure
from vinstruct.endpoint.journal import Journal
from vinstruct.errors import VinstructError

Parser = Callable[[str], object]  # reply -> parsed value, or None when unreadable


@dataclass
class JudgeConfig:
    endpoint: EndpointConfig
    max_attempts: int = 3  # per request, for unreadable replies
    give_up_after: int = 5  # consecutive transport failures


@dataclass
class Verdict:
    parsed: object | None  # None: no readable reply
    reply: str | None  # the last reply received
    attempts: int
    error: str | None = None  # transport error when the endpoint did not answer


@dataclass
class JudgeRun:
    verdicts: list[Verdict]
    gave_up: str | None = None  # why requests stopped early, if they did
    stats: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.gave_up is None and all(v.error is None for v in self.verdicts)


def request_key(model: str, messages: list[dict]) -> str:
    """A judge request's journal key."""
    return hashlib.sha1(json.dumps([model, messages], sort_keys=True).encode()).hexdigest()


class Judge:
    """Send judge requests and collect parsed verdicts.

    batch: a `vinstruct.generate.batch_mode.BatchSettings` to send through the Batch API first; its
    directory holds one run directory per call (None: `<journal stem>.batch` beside the journal).
    """

    def __init__(self, config: JudgeConfig, journal: str | os.PathLike | None = None, batch=None):
        self.config = config
        self.journal = Path(journal) if journal else None
        self.batch = batch
        if batch is not None:
            if self.journal is None:
                raise VinstructError("a judge sends its requests through the Batch API only with a journal "
                                     "(where the batch's replies are kept)")
            if batch.directory is None:
                self.batch = dataclasses.replace(batch, directory=self.journal.with_name(self.journal.stem + ".batch"))

    @property
    def model(self) -> str:
        return self.config.endpoint.model

    def run(self, requests: Sequence[list[dict]], parse: Parser, reminder: str, desc: str = "judge",
            progress: bool = True) -> JudgeRun:
        """Verdicts for `requests` (lists of chat messages), in order."""
        requests = list(requests)
        keys = [request_key(self.model, messages) for messages in requests]
        journal = Journal(self.journal) if self.journal else None
        try:
            cached = {key for key in keys if _readable(journal, key, parse) is not None}
            phase = None
            if self.batch is not None and len(cached) < len(set(keys)):
                from vinstruct.eval.judge_batch import ask_in_batches

                phase = ask_in_batches(self.config.endpoint, keys, requests, parse, journal, self.batch, desc, progress)
            return asyncio.run(self._run_with(journal, keys, requests, parse, reminder, desc, progress, cached, phase))
        finally:
            if journal is not None:
                journal.close()

    async def _run_with(self, journal, keys, requests, parse, reminder, desc, progress, cached, phase) -> JudgeRun:
        verdicts: list[Verdict | None] = [None] * len(requests)
        todo = []
        for index, key in enumerate(keys):
            found = _readable(journal, key, parse)
            if found is not None:
                verdicts[index] = Verdict(found[0], found[1], 0 if key in cached else 1)  # journal, or this batch
            else:
                todo.append(index)
        unreadable = phase.unreadable if phase is not None else {}
        state = {"failures_in_row": 0, "gave_up": None, "sent": 0}
        gate = asyncio.Semaphore(self.config.endpoint.concurrency)  # whole conversations, re-asks included
        bar = tqdm(total=len(todo), desc=desc, unit="req", disable=not progress or not todo)

        async with EndpointClient(self.config.endpoint) as client:
            async def one(index: int) -> None:
                async with gate:
                    if state["gave_up"]:
                        verdicts[index] = Verdict(None, None, 0, f"not sent: {state['gave_up']}")
                    else:
                        verdicts[index] = await self._ask(client, requests[index], parse, reminder, state, journal,
                                                          unreadable.get(keys[index]))
                    bar.update(1)

            try:
                await asyncio.gather(*(one(i) for i in todo))
            finally:
                bar.close()
            usage = client.usage.as_dict()
        from_journal = sum(1 for key in keys if key in cached)
        stats = {"requests": len(requests), "from_journal": from_journal,
                 "from_batch": len(requests) - from_journal - len(todo),
                 "online": sum(1 for i in todo if verdicts[i].parsed is not None), "sent": state["sent"],
                 "unreadable": sum(1 for v in verdicts if v.parsed is None and v.error is None),
                 "unanswered": sum(1 for v in verdicts if v.error is not None), "usage": usage}
        if phase is not None:
            stats["batch"] = phase.stats()
        stats["cost"] = round(usage["cost"] + (phase.usage.get("cost", 0.0) if phase is not None else 0.0), 6)
        return JudgeRun(verdicts, state["gave_up"], stats)

    async def _ask(self, client: EndpointClient, messages, parse, reminder, state, journal,
                   unreadable: str | None = None) -> Verdict:
        """One request's conversation; `unreadable`: the batch's reply to it, which counts as the first attempt."""
        conversation, reply, first = list(messages), None, 1
        if unreadable is not None:
            conversation, reply, first = self._reminded(messages, unreadable, reminder), unreadable, 2
        for attempt in range(first, self.config.max_attempts + 1):
            try:
                state["sent"] += 1
                completion = await client.complete(conversation)
            except (RequestFailure, FatalEndpointError) as err:
                state["failures_in_row"] += 1
                if state["failures_in_row"] >= self.config.give_up_after and not state["gave_up"]:
                    state["gave_up"] = (f"the judge at {self.config.endpoint.base_url} failed {state['failures_in_row']} "
                                        f"requests in a row ({type(err).__name__}: {err})")
                return Verdict(None, reply, attempt, f"{type(err).__name__}: {err}")
            state["failures_in_row"] = 0
            reply = completion.text
            parsed = parse(reply)
            if parsed is not None:
                if journal is not None:  # (an empty journal is falsy)
                    journal.append({"key": request_key(self.model, messages), "reply": reply})
                return Verdict(parsed, reply, attempt)
            conversation = self._reminded(messages, reply, reminder)
        return Verdict(None, reply, max(first - 1, self.config.max_attempts))

    @staticmethod
    def _reminded(messages: list[dict], reply: str, reminder: str) -> list[dict]:
        """The request again, with the unreadable reply and a reminder of the expected format."""
        return list(messages) + [{"role": "assistant", "content": reply}, {"role": "user", "content": reminder}]


def _readable(journal: Journal | None, key: str, parse: Parser) -> tuple[object, str] | None:
    """(parsed, reply) of the journal's row for `key`, when it has one the parser reads."""
    row = journal.get(key) if journal is not None else None
    if not row or "reply" not in row:
        return None
    parsed = parse(row["reply"])
    return (parsed, row["reply"]) if parsed is not None else None
