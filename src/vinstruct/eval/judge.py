"""A judge behind any OpenAI-compatible endpoint, talking through the one endpoint client.

- transport errors, timeouts, 429s and 5xx are retried by `vinstruct.endpoint.client` (with
  backoff, Retry-After, rate limits, token and cost accounting);
- a reply the caller's parser cannot read is asked again, up to `max_attempts` in all, with
  the bad reply and a reminder of the expected format appended to the conversation;
- every readable reply is appended to a JSONL journal (`vinstruct.endpoint.journal`) keyed by
  the request, so a rerun asks only what is still missing;
- when the endpoint fails `give_up_after` requests in a row, no more are sent: the run
  ends with what it has and reports itself incomplete instead of crashing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from vinstruct.endpoint.client import EndpointClient, EndpointConfig, FatalEndpointError, RequestFailure
from vinstruct.endpoint.journal import Journal

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
    """Send judge requests and collect parsed verdicts."""

    def __init__(self, config: JudgeConfig, journal: str | os.PathLike | None = None):
        self.config = config
        self.journal = Path(journal) if journal else None

    @property
    def model(self) -> str:
        return self.config.endpoint.model

    def run(self, requests: Sequence[list[dict]], parse: Parser, reminder: str, desc: str = "judge",
            progress: bool = True) -> JudgeRun:
        """Verdicts for `requests` (lists of chat messages), in order."""
        return asyncio.run(self._run(list(requests), parse, reminder, desc, progress))

    async def _run(self, requests, parse, reminder, desc, progress) -> JudgeRun:
        journal = Journal(self.journal) if self.journal else None
        try:
            return await self._run_with(journal, requests, parse, reminder, desc, progress)
        finally:
            if journal is not None:
                journal.close()

    async def _run_with(self, journal, requests, parse, reminder, desc, progress) -> JudgeRun:
        verdicts: list[Verdict | None] = [None] * len(requests)
        todo = []
        for index, messages in enumerate(requests):
            row = journal.get(request_key(self.model, messages)) if journal is not None else None
            parsed = parse(row["reply"]) if row and "reply" in row else None
            if parsed is not None:
                verdicts[index] = Verdict(parsed, row["reply"], 0)
            else:
                todo.append(index)
        state = {"failures_in_row": 0, "gave_up": None, "sent": 0}
        gate = asyncio.Semaphore(self.config.endpoint.concurrency)  # whole conversations, re-asks included
        bar = tqdm(total=len(todo), desc=desc, unit="req", disable=not progress)

        async with EndpointClient(self.config.endpoint) as client:
            async def one(index: int) -> None:
                async with gate:
                    if state["gave_up"]:
                        verdicts[index] = Verdict(None, None, 0, f"not sent: {state['gave_up']}")
                    else:
                        verdicts[index] = await self._ask(client, requests[index], parse, reminder, state, journal)
                    bar.update(1)

            try:
                await asyncio.gather(*(one(i) for i in todo))
            finally:
                bar.close()
            usage = client.usage.as_dict()
        stats = {"requests": len(requests), "from_journal": len(requests) - len(todo), "sent": state["sent"],
                 "unreadable": sum(1 for v in verdicts if v.parsed is None and v.error is None),
                 "unanswered": sum(1 for v in verdicts if v.error is not None), "usage": usage}
        return JudgeRun(verdicts, state["gave_up"], stats)

    async def _ask(self, client: EndpointClient, messages, parse, reminder, state, journal) -> Verdict:
        conversation = list(messages)
        reply = None
        for attempt in range(1, self.config.max_attempts + 1):
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
            conversation = list(messages) + [{"role": "assistant", "content": reply},
                                             {"role": "user", "content": reminder}]
        return Verdict(None, reply, self.config.max_attempts)
