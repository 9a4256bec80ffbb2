"""Run the demo as named steps that resume: a step whose outputs exist is skipped.

Each finished step is recorded in `demo_log.json` with its wall time and a small
result (paths, counts), so a re-run after an interruption picks up where it
stopped and the report still knows how long every step took.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from vinstruct.data.formats import write_json


class StepLog:
    def __init__(self, out: Path, say: Callable[[str], None] = print):
        self.path = out / "demo_log.json"
        self.say = say
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {"steps": {}}

    def record(self, name: str) -> dict | None:
        return self.data["steps"].get(name)

    def run(self, name: str, title: str, outputs: list[Path], fn: Callable[[], dict | None]) -> dict:
        """Run `fn` unless a previous run finished this step and its outputs are still there."""
        previous = self.record(name)
        if previous and previous.get("status") == "done" and all(Path(p).exists() for p in outputs):
            self.say(f"[{name}] done earlier ({previous['seconds']:.0f} s) - skipped; delete its output to redo it")
            return previous.get("result") or {}
        self.say(f"[{name}] {title}")
        started = time.perf_counter()
        result = fn() or {}
        seconds = time.perf_counter() - started
        self.data["steps"][name] = {"status": "done", "seconds": round(seconds, 1), "title": title,
                                    "result": result}
        write_json(self.path, self.data)
        self.say(f"[{name}] finished in {seconds:.0f} s")
        return result

    def seconds(self) -> dict[str, float]:
        return {name: step["seconds"] for name, step in self.data["steps"].items()}

    def set_meta(self, **values) -> None:
        self.data.setdefault("meta", {}).update(values)
        write_json(self.path, self.data)
