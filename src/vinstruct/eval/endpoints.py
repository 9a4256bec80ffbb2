"""Judge and teacher endpoints: a hosted OpenAI-compatible one, or the offline scripted one.

`scripted_server()` serves the scripted judge and the scripted teacher (reference answers)
with uvicorn on 127.0.0.1 at a free port, in a background thread, so the evaluation goes
through the same HTTP client path as with a hosted LLM.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

from vinstruct.errors import VinstructError
from vinstruct.eval.judge import Judge, JudgeConfig

SCRIPTED_MODEL = "vinstruct-scripted"


def make_judge(base_url: str, model: str = SCRIPTED_MODEL, api_key: str | None = None,
               journal: str | os.PathLike | None = None, **settings) -> Judge:
    """A `Judge` for the endpoint; api_key defaults to $OPENAI_API_KEY (or "none" for local servers)."""
    key = api_key or os.environ.get("OPENAI_API_KEY") or "none"
    return Judge(JudgeConfig(base_url=base_url, model=model, api_key=key, **settings), journal)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def scripted_server(extra_responders=()):
    """Yield the base URL (http://127.0.0.1:PORT/v1) of the scripted judge + teacher, served until exit."""
    import uvicorn

    from vinstruct.eval import scripted_judge
    from vinstruct.generate.scripted.app import create_app, default_responders

    app = create_app(responders=[scripted_judge.respond, *extra_responders, *default_responders()],
                     model_name=SCRIPTED_MODEL)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="scripted-judge", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise VinstructError(f"the scripted judge server did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def scripted_judge_and_teacher(journal_dir: str | os.PathLike | None = None):
    """(judge, teacher) `Judge` clients talking to the scripted server, which runs until exit.

    For the offline demo: `with scripted_judge_and_teacher(out) as (judge, teacher):
    llava_bench.evaluate(model, world, out, judge, teacher)`.
    """
    from pathlib import Path

    with scripted_server() as url:
        journal = Path(journal_dir) if journal_dir else None
        yield (make_judge(url, journal=journal / "judge_journal.jsonl" if journal else None),
               make_judge(url, journal=journal / "teacher_journal.jsonl" if journal else None))
