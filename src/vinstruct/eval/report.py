"""Results on disk: JSON, a markdown table and a bar chart per run, and tables across runs.

Every suite writes `results.json` with at least {"suite", "model", "complete", "metrics"}:
`metrics` is a flat {name: number} of the headline numbers (what `compare` puts side by
side); the rest of the dictionary holds the breakdowns.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vinstruct.atomic import atomic_file, atomic_write_text
from vinstruct.data.formats import read_json, write_json
from vinstruct.errors import VinstructError

RESULTS_NAME, TABLE_NAME, CHART_NAME = "results.json", "results.md", "results.png"


def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def bar_chart(path: str | os.PathLike, groups: dict[str, dict[str, float]], title: str,
              ylabel: str = "%", ylim: float | None = 100.0) -> None:
    """Grouped bars: one group per key of `groups`, one bar per series inside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = list(dict.fromkeys(name for values in groups.values() for name in values))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(groups) + 2), 3.2), dpi=100)
    for index, name in enumerate(series):
        xs = [g + (index - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ys = [values.get(name, 0.0) or 0.0 for values in groups.values()]
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks(range(len(groups)), list(groups), rotation=20 if len(groups) > 5 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(0, ylim)
    if len(series) > 1:
        ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def save_run(out_dir: str | os.PathLike, results: dict, table: str, chart: dict[str, dict[str, float]],
             chart_title: str, ylabel: str = "%", ylim: float | None = 100.0) -> Path:
    """Write results.json, results.md (title + table) and results.png into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / RESULTS_NAME, results)
    status = "" if results.get("complete", True) else "\n**Incomplete run**: " + results.get("incomplete_reason", "") + "\n"
    atomic_write_text(out_dir / TABLE_NAME, f"## {chart_title}\n\nmodel: `{results.get('model')}`\n{status}\n{table}")
    bar_chart(out_dir / CHART_NAME, chart, chart_title, ylabel, ylim)
    return out_dir


# ---- across runs ------------------------------------------------------------------------------------------
def load_run(path: str | os.PathLike) -> tuple[str, dict[str, float]]:
    """(label, metrics) of a run: a suite directory (results.json) or a directory of suite directories."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    single = path / RESULTS_NAME
    if single.is_file():
        results = read_json(single)
        return path.name, {f"{results.get('suite', '?')}: {k}": v for k, v in results.get("metrics", {}).items()}
    found = sorted(path.glob(f"*/{RESULTS_NAME}"))
    if not found:
        raise VinstructError(f"{path}: no {RESULTS_NAME} here or in its subdirectories (not an evaluation run)")
    metrics: dict[str, float] = {}
    for file in found:
        results = read_json(file)
        metrics.update({f"{results.get('suite', file.parent.name)}: {k}": v
                        for k, v in results.get("metrics", {}).items()})
    return path.name, metrics


def compare(runs: Sequence[str | os.PathLike]) -> str:
    """One markdown table: a row per metric, a column per run (– where a run lacks it)."""
    if not runs:
        raise VinstructError("compare needs at least one run directory")
    loaded = [load_run(run) for run in runs]
    labels = [label for label, _ in loaded]
    if len(set(labels)) < len(labels):
        labels = [str(run) for run in runs]
    names = list(dict.fromkeys(name for _, metrics in loaded for name in metrics))
    rows = [[name] + [metrics.get(name) for _, metrics in loaded] for name in names]
    return markdown_table(["metric"] + labels, rows)
