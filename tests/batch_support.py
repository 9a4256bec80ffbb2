"""Helpers for Batch API tests: teacher requests over random shapes scenes, a scripted teacher to send them to."""

from __future__ import annotations

import contextlib
import logging
import random

from openai import OpenAI

from vinstruct.data.symbolic import render_symbolic
from vinstruct.generate.batch_api import BatchRequest
from vinstruct.generate.prompts import PromptSet
from vinstruct.generate.scripted import create_app
from vinstruct.generate.scripted.batches import BatchOptions
from vinstruct.generate.server import running_server

SHAPES = ["circle", "square", "triangle", "star"]
COLORS = ["red", "green", "blue", "yellow"]
MODEL = "vinstruct-scripted"


def teacher_requests(n: int, seed: int = 0, tasks=("conversation", "detail", "complex")) -> list[BatchRequest]:
    """n chat-completions requests the scripted teacher answers, each with its own scene."""
    rng, prompts = random.Random(seed), PromptSet(types=tasks)
    requests = []
    for i in range(n):
        objects = []
        for _ in range(rng.randint(1, 4)):
            x, y = round(rng.uniform(0, 0.7), 3), round(rng.uniform(0, 0.7), 3)
            objects.append((f"{rng.choice(COLORS)} {rng.choice(SHAPES)}", [x, y, round(x + 0.2, 3), round(y + 0.2, 3)]))
        text = render_symbolic([f"A picture with {len(objects)} shapes."], objects)
        task = tasks[i % len(tasks)]
        requests.append(BatchRequest(f"img{i:04d}-{task}", {"model": MODEL, "messages": prompts.messages(task, text),
                                                          "temperature": 0.7, "seed": i}))
    return requests


class CreatedBatches(logging.Handler):
    """Counts the server's 'batch created' log lines (the number of submissions it received)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("batch created:"):
            self.lines.append(message)


@contextlib.contextmanager
def created_batches():
    """Yields the list of the scripted server's 'batch created' log lines, growing until the block ends."""
    log = logging.getLogger("vinstruct.teacher")
    counter, level = CreatedBatches(), log.level
    log.addHandler(counter)
    log.setLevel(logging.INFO)
    try:
        yield counter.lines
    finally:
        log.removeHandler(counter)
        log.setLevel(level)


@contextlib.contextmanager
def batch_teacher(**options):
    """A scripted teacher with the Batch API on a free port: yields (OpenAI client, created-batch log)."""
    with created_batches() as lines, running_server(create_app(seed=0, batch=BatchOptions(**options))) as url:
        yield OpenAI(base_url=url, api_key="unused", max_retries=0), lines
