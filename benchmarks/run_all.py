"""Run every benchmark (benchmarks/bench_*.py) and collect their reports into docs/RESULTS.md.

Each benchmark prints a markdown section and writes it to docs/results/<name>.md;
this script runs them one after another (never in parallel: they time things)
and concatenates the sections under a header naming the machine.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def median_seconds(action, repeats: int, warmup: bool = False) -> float:
    """Median wall time of `repeats` calls of action (after one untimed call when warmup)."""
    import statistics
    import time

    if warmup:
        action()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    from vinstruct.machine import cpu_name

    return f"{cpu_name()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}"


def free_port() -> int:
    """A free TCP port on 127.0.0.1, for a server started in another process."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_section(name: str, report: str) -> None:
    """Print a benchmark's markdown section and keep it as docs/results/NAME.md (RESULTS.md is assembled from these)."""
    print(report)
    out = ROOT / "docs" / "results" / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)


def main(argv: list[str]) -> int:
    only = set(argv)
    benches = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    failed = []
    for bench in benches:
        name = bench.stem.removeprefix("bench_")
        if only and name not in only:
            continue
        print(f"== {bench.name}", flush=True)
        if subprocess.call([sys.executable, str(bench)], cwd=ROOT) != 0:
            failed.append(bench.name)
    sections = sorted((ROOT / "docs" / "results").glob("*.md"))
    header = [
        "# Results",
        "",
        "Numbers measured by `make bench` (benchmarks/) and `make demo`. Speed figures are ratios against a",
        "baseline measured in the same run on the same machine; absolute times name their machine. The demo",
        "sections come from `python benchmarks/demo_results.py runs/demo runs/demo-quick` after `make demo` and",
        "`make demo-quick`.",
        "",
        f"Last collected: {datetime.date.today().isoformat()} on {machine()}.",
        "",
    ]
    body = [s.read_text().rstrip() + "\n" for s in sections]
    (ROOT / "docs" / "RESULTS.md").write_text("\n".join(header) + "\n" + "\n".join(body))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
