"""A judge behind any OpenAI-compatible endpoint: concurrent requests, retries, a journal.

- transport errors are retried by the `openai` SDK (max_retries, timeout);
- a reply the caller's parser cannot read is asked again, up to `max_attempts` in all, with
  the bad reply and a reminder of the expected format appended to the conversation;
- every readable reply is appended to a JSONL journal keyed by the request, so a rerun
  asks only what is still missing;
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

from vinstruct.data.formats import append_jsonl, iter_jsonl

Parser = Callable[[str], object]  # reply -> parsed value, or None when unreadable


@dataclass
class JudgeConfig:
    base_url: str
    model: str = "judge"
    api_key: str = "none"
    temperature: float = 0.0
    max_tokens: int = 512
    max_attempts: int = 3  # per request, for unreadable replies
    timeout: float = 60.0  # seconds per HTTP request
    transport_retries: int = 2  # the SDK's own retries on connection errors and 5xx/429
    concurrency: int = 8
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
    return hashlib.sha1(json.dumps([model, messages], sort_keys=True).encode()).hexdigest()


class Judge:
    """Send judge requests through the real `openai` client and collect parsed verdicts."""

    def __init__(self, config: JudgeConfig, journal: str | os.PathLike | None = None):
        self.config = config
        self.journal = Path(journal) if journal else None

    def _load_journal(self) -> dict[str, str]:
        if self.journal is None or not self.journal.exists():
            return {}
        return {row["key"]: row["reply"] for _, row in iter_jsonl(self.journal, skip_bad_tail=True)
                if "key" in row and "reply" in row}

    def run(self, requests: Sequence[list[dict]], parse: Parser, reminder: str, desc: str = "judge",
            progress: bool = True) -> JudgeRun:
        """Verdicts for `requests` (lists of chat messages), in order."""
        return asyncio.run(self._run(list(requests), parse, reminder, desc, progress))

    async def _run(self, requests, parse, reminder, desc, progress) -> JudgeRun:
        from openai import AsyncOpenAI

        known = self._load_journal()
        verdicts: list[Verdict | None] = [None] * len(requests)
        todo = []
        for index, messages in enumerate(requests):
            reply = known.get(request_key(self.config.model, messages))
            parsed = parse(reply) if reply is not None else None
            if parsed is not None:
                verdicts[index] = Verdict(parsed, reply, 0)
            else:
                todo.append(index)
        state = {"failures_in_row": 0, "gave_up": None, "sent": 0}
        client = AsyncOpenAI(base_url=self.config.base_url, api_key=self.config.api_key,
                             timeout=self.config.timeout, max_retries=self.config.transport_retries)
        gate = asyncio.Semaphore(self.config.concurrency)
        journal = self.journal.open("a", encoding="utf-8") if self.journal else None
        bar = tqdm(total=len(todo), desc=desc, unit="req", disable=not progress)

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
            await client.close()
            if journal:
                journal.close()
        stats = {"requests": len(requests), "from_journal": len(requests) - len(todo), "sent": state["sent"],
                 "unreadable": sum(1 for v in verdicts if v.parsed is None and v.error is None),
                 "unanswered": sum(1 for v in verdicts if v.error is not None)}
        return JudgeRun(verdicts, state["gave_up"], stats)

    async def _ask(self, client, messages, parse, reminder, state, journal) -> Verdict:
        from openai import APIError

        conversation = list(messages)
        reply = None
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                state["sent"] += 1
                response = await client.chat.completions.create(
                    model=self.config.model, messages=conversation, temperature=self.config.temperature,
                    max_tokens=self.config.max_tokens)
            except APIError as err:
                state["failures_in_row"] += 1
                if state["failures_in_row"] >= self.config.give_up_after and not state["gave_up"]:
                    state["gave_up"] = (f"the judge at {self.config.base_url} failed {state['failures_in_row']} "
                                        f"requests in a row ({type(err).__name__}: {err})")
                return Verdict(None, reply, attempt, f"{type(err).__name__}: {err}")
            state["failures_in_row"] = 0
            reply = (response.choices[0].message.content or "") if response.choices else ""
            parsed = parse(reply)
            if parsed is not None:
                if journal:
                    append_jsonl(journal, {"key": request_key(self.config.model, messages), "reply": reply})
                return Verdict(parsed, reply, attempt)
            conversation = list(messages) + [{"role": "assistant", "content": reply},
                                             {"role": "user", "content": reminder}]
        return Verdict(None, reply, self.config.max_attempts)
