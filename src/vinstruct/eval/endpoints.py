"""Judge and teacher endpoints: a hosted OpenAI-compatible one, or the offline scripted one.

`scripted_server()` serves the scripted judge (`vinstruct.eval.scripted_judge`) in front of
the scripted teacher (`vinstruct.generate.scripted`) on 127.0.0.1 at a free port, in a
background thread, so the evaluation goes through the same HTTP clients as with a hosted LLM.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from vinstruct.endpoint.client import EndpointConfig, resolve_api_key
from vinstruct.eval.judge import Judge, JudgeConfig

SCRIPTED_MODEL = "vinstruct-scripted"
# A judge reads short verdicts deterministically; a truncated one is still parsed (and re-asked if unreadable).
JUDGE_DEFAULTS = {"temperature": 0.0, "max_tokens": 512, "timeout": 60.0, "max_retries": 2, "keep_truncated": True}
_JUDGE_POLICY = ("max_attempts", "give_up_after")


def endpoint_config(base_url: str, model: str = SCRIPTED_MODEL, api_key: str | None = None,
                    **settings) -> EndpointConfig:
    """The endpoint behind a judge or a teacher: the key given, else $OPENAI_API_KEY, else none for a
    local server (`resolve_api_key`, as for `vinstruct generate`)."""
    return EndpointConfig(base_url=base_url, model=model, api_key=resolve_api_key(base_url, api_key), **settings)


def make_judge(base_url: str, model: str = SCRIPTED_MODEL, api_key: str | None = None,
               journal: str | os.PathLike | None = None, batch=None, **settings) -> Judge:
    """A `Judge` for the endpoint. settings: max_attempts, give_up_after, and any EndpointConfig field.

    batch: `vinstruct.generate.batch_mode.BatchSettings` to send through the Batch API first (needs a journal).
    """
    policy = {k: settings.pop(k) for k in _JUDGE_POLICY if k in settings}
    endpoint = endpoint_config(base_url, model, api_key, **{**JUDGE_DEFAULTS, **settings})
    return Judge(JudgeConfig(endpoint, **policy), journal, batch)


def make_teacher(base_url: str, model: str = SCRIPTED_MODEL, api_key: str | None = None, **settings) -> EndpointConfig:
    """The endpoint for reference answers (the teacher's settings)."""
    return endpoint_config(base_url, model, api_key, **settings)


def scripted_responders(plant=None) -> list:
    """The judge first (it answers only judge requests), then the scripted teacher.

    plant: a PlantPlan, to have the teacher state some facts wrong on purpose (the judge stays exact).
    """
    from vinstruct.eval import scripted_judge
    from vinstruct.generate.scripted import default_responders

    teachers = default_responders()
    if plant is not None and plant.rate > 0:
        from vinstruct.generate.scripted.planted import PlantingResponder

        teachers = [PlantingResponder(teacher, plant) for teacher in teachers]
    return [scripted_judge.respond, *teachers]


@contextlib.contextmanager
def scripted_server():
    """Yield the base URL (http://127.0.0.1:PORT/v1) of the scripted judge + teacher, served until exit."""
    from vinstruct.generate.scripted import create_app
    from vinstruct.generate.server import running_server

    with running_server(create_app(scripted_responders(), model_name=SCRIPTED_MODEL)) as url:
        yield url


@contextlib.contextmanager
def scripted_judge_and_teacher(journal_dir: str | os.PathLike | None = None):
    """(judge, teacher) for the scripted server, which runs until the block ends.

    For the offline demo:
        with scripted_judge_and_teacher(out) as (judge, teacher):
            llava_bench.evaluate(model, world, out, judge, teacher)
    """
    with scripted_server() as url:
        journal = Path(journal_dir) / "judge_journal.jsonl" if journal_dir else None
        yield make_judge(url, journal=journal), make_teacher(url)
