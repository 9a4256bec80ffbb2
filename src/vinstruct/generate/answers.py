"""Reference answers from a teacher: a question about an image, given the image's symbolic text.

Evaluation (LLaVA-Bench style) asks the teacher to answer each question from the
symbolic text alone; those answers are the reference the judge compares against.

    answers = answer_questions_sync(config, [(symbolic_text, "How many shapes are there?"), ...])
    # -> list of Completion or RequestFailure, in input order
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tqdm import tqdm

from vinstruct.endpoint.client import Completion, EndpointClient, EndpointConfig, RequestFailure, run_async
from vinstruct.generate.prompts import PromptSet, answer_input


def answer_messages(prompts: PromptSet, symbolic: str, question: str) -> list[dict]:
    return prompts.messages("answer", answer_input(symbolic, question))


async def answer_questions(client: EndpointClient, items: Sequence[tuple[str, str]], prompts: PromptSet | None = None,
                           seed: int | None = None, progress: bool = False) -> list[Completion | RequestFailure]:
    """Answer (symbolic text, question) pairs concurrently (bounded by the client's concurrency)."""
    prompts = prompts or PromptSet(types=("answer",))
    results: list[Completion | RequestFailure | None] = [None] * len(items)
    bar = tqdm(total=len(items), unit="q", desc="reference answers", disable=not progress)

    async def one(position: int, symbolic: str, question: str) -> None:
        try:
            results[position] = await client.complete(answer_messages(prompts, symbolic, question), seed=seed)
        except RequestFailure as failure:
            results[position] = failure
        bar.update(1)

    try:
        await asyncio.gather(*(one(i, s, q) for i, (s, q) in enumerate(items)))
    finally:
        bar.close()
    return results


def answer_questions_sync(config: EndpointConfig, items: Sequence[tuple[str, str]], prompts: PromptSet | None = None,
                          seed: int | None = None, progress: bool = False) -> list[Completion | RequestFailure]:
    """The same from synchronous code: opens a client for the call and closes it after."""
    async def run():
        async with EndpointClient(config) as client:
            return await answer_questions(client, items, prompts, seed, progress)
    return run_async(run())
