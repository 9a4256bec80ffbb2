"""The audit report: REPORT.md with PNG plots, data sets side by side, and audit.json.

    write_report([("stage2", result, diversity(result.samples))], "runs/audit", planted=None, command="...")

Plots (matplotlib, Agg): grounding.png (claims by kind and verdict), lengths.png (answer
length histograms per data type) and question_types.png (the question mix).
"""

from __future__ import annotations

import json
from pathlib import Path

from vinstruct.audit.check import STATUSES
from vinstruct.audit.claims import CLAIM_KINDS
from vinstruct.audit.diversity import LENGTH_BIN_NAMES
from vinstruct.audit.question import QUESTION_TYPES
from vinstruct.audit.run import AuditResult
from vinstruct.atomic import atomic_write_text

_COLORS = {"grounded": "#3a8f4b", "contradicted": "#c83c3c", "unverifiable": "#b0b0b0"}


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def _num(value) -> str:
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:.3g}" if isinstance(value, float) else str(value)


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_grounding(named_stats: list[tuple[str, dict]], path: Path, title: str = "claims by kind") -> None:
    """Stacked bars: per claim kind (and data set), grounded / contradicted / unverifiable claims."""
    plt = _pyplot()
    kinds = [k for k in CLAIM_KINDS if any(sum(s["by_kind"][k][v] for v in STATUSES) for _, s in named_stats)]
    width = 0.8 / max(len(named_stats), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(kinds) * len(named_stats) ** 0.5), 3.6))
    for d, (name, stats) in enumerate(named_stats):
        xs = [i + d * width for i in range(len(kinds))]
        bottom = [0] * len(kinds)
        for status in STATUSES:
            values = [stats["by_kind"][k][status] for k in kinds]
            ax.bar(xs, values, width * 0.95, bottom=bottom, color=_COLORS[status],
                   label=status if d == 0 else None, edgecolor="white" if d else None)
            bottom = [b + v for b, v in zip(bottom, values)]
        if len(named_stats) > 1:
            for x, total in zip(xs, bottom):
                ax.text(x, total, name, ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks([i + width * (len(named_stats) - 1) / 2 for i in range(len(kinds))], kinds)
    ax.set_ylabel("claims")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lengths(named_div: list[tuple[str, dict]], path: Path) -> None:
    """Answer length histograms, one panel per data type, one series per data set."""
    plt = _pyplot()
    types = sorted({t for _, div in named_div for t in div if t != "all"})
    fig, axes = plt.subplots(1, max(len(types), 1), figsize=(3.2 * max(len(types), 1), 3.0), squeeze=False)
    for ax, data_type in zip(axes[0], types):
        width = 0.8 / len(named_div)
        for d, (name, div) in enumerate(named_div):
            hist = div.get(data_type, {}).get("answer_lengths", {})
            total = sum(hist.values()) or 1
            ax.bar([i + d * width for i in range(len(LENGTH_BIN_NAMES))],
                   [hist.get(b, 0) / total for b in LENGTH_BIN_NAMES], width, label=name)
        ax.set_xticks(range(len(LENGTH_BIN_NAMES)), LENGTH_BIN_NAMES, rotation=60, fontsize=7)
        ax.set_title(data_type, fontsize=9)
        ax.set_xlabel("answer words", fontsize=8)
    axes[0][0].set_ylabel("share of answers")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_question_types(named_div: list[tuple[str, dict]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.0))
    width = 0.8 / len(named_div)
    for d, (name, div) in enumerate(named_div):
        mix = div["all"]["question_types"]
        total = sum(mix.values()) or 1
        ax.bar([i + d * width for i in range(len(QUESTION_TYPES))], [mix.get(t, 0) / total for t in QUESTION_TYPES],
               width, label=name)
    ax.set_xticks(range(len(QUESTION_TYPES)), QUESTION_TYPES, rotation=45, fontsize=8)
    ax.set_ylabel("share of questions")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _summary_rows(named: list[tuple[str, AuditResult, dict]]) -> list[list]:
    def row(label, fn):
        return [label] + [fn(r.stats, d) for _, r, d in named]

    return [
        row("samples (audited / in file)", lambda s, d: f"{s['audited_samples']:,} / {s['samples']:,}"),
        row("answers audited", lambda s, d: _num(sum(s["turns"].values()))),
        row("claims: grounded / contradicted / unverifiable",
            lambda s, d: " / ".join(f"{s['claims'][v]:,}" for v in STATUSES)),
        row("**grounded share of checkable claims**", lambda s, d: f"**{_pct(s['grounded_rate'])}**"),
        row("answers with a contradiction", lambda s, d: f"{s['turns']['contradicted']:,} ({_pct(s['contradicted_turn_rate'])})"),
        row("answers with nothing checkable", lambda s, d: _num(s["turns"]["unverifiable"])),
        row("samples with a contradiction", lambda s, d: _num(s["samples_with_contradiction"])),
        row("distinct-1 / 2 / 3 (answers)", lambda s, d: " / ".join(_num(d["all"][f"distinct_{n}"]) for n in (1, 2, 3))),
        row("vocabulary (words)", lambda s, d: _num(d["all"]["vocabulary"])),
        row("answer words, mean / median", lambda s, d: f"{_num(d['all']['answer_words_mean'])} / "
                                                        f"{_num(d['all']['answer_words_median'])}"),
        row("questions asked word for word elsewhere", lambda s, d: _pct(d["all"]["exact_duplicate_questions"])),
        row("near-duplicate questions / answers", lambda s, d: f"{_pct(d['all']['near_duplicate_questions'])} / "
                                                               f"{_pct(d['all']['near_duplicate_answers'])}"),
        row("audit speed", lambda s, d: f"{_num(s['samples_per_second'])} samples/s"),
    ]


def _by_type_table(result: AuditResult, div: dict) -> str:
    rows = []
    for data_type, row in result.stats["by_type"].items():
        d = div.get(data_type, {})
        answers = sum(row[f"turns_{s}"] for s in STATUSES)
        rows.append([data_type, _num(row["samples"]), _num(answers), _pct(row["grounded_rate"]),
                     f"{row['turns_contradicted']:,}", _num(d.get("distinct_2")), _num(d.get("vocabulary")),
                     _num(d.get("answer_words_mean")), _pct(d.get("near_duplicate_answers"))])
    return table(["type", "samples", "answers", "grounded claims", "contradicted answers", "distinct-2", "vocabulary",
                  "answer words", "near-dup answers"], rows)


def _by_kind_table(named: list[tuple[str, AuditResult, dict]]) -> str:
    rows = []
    for kind in CLAIM_KINDS:
        cells = []
        for _, result, _ in named:
            k = result.stats["by_kind"][kind]
            cells.append(f"{k['grounded']:,} / {k['contradicted']:,} / {k['unverifiable']:,} ({_pct(k['grounded_rate'])})")
        rows.append([kind] + cells)
    return table(["claim kind"] + [f"{name}: grounded / contradicted / unverifiable" for name, _, _ in named], rows)


def _worst(result: AuditResult, limit: int) -> list[str]:
    lines = []
    for entry in result.stats["worst"][:limit]:
        lines.append(f"- `{entry['id']}` ({entry['type']}, {entry['contradicted_claims']} contradicted claim(s))")
        for turn in entry["turns"][:3]:
            if turn["question"]:
                lines.append(f"  - Q: {turn['question'][:200]}")
            lines.append(f"  - A: {turn['answer'][:400]}")
            for claim in turn["claims"][:4]:
                lines.append(f"    - **{claim['kind']}** \"{claim['text']}\" — annotations: {claim['evidence'] or '—'}")
    return lines or ["None."]


def _skipped(result: AuditResult) -> list[str]:
    stats = result.stats
    lines = []
    for label, counts in (("samples", stats["skipped_samples"]), ("turns", stats["skipped_turns"])):
        for reason, count in counts.items():
            examples = ", ".join(f"`{e}`" for e in stats["skipped_examples"].get(reason, []))
            lines.append(f"- {count:,} {label} skipped: {reason} (e.g. {examples})")
    return lines or ["- nothing skipped"]


def _planted(planted: dict) -> list[str]:
    rows = [[kind, _num(v["planted"]), _num(v["caught"]), _pct(v["recall"])] for kind, v in planted["recall_by_kind"].items()]
    return [
        f"Planted errors from `{planted['log']}`: {planted['planted_in_data']:,} corrupted answers found in the data "
        f"({planted['planted']:,} logged). Precision **{_pct(planted['precision'])}** "
        f"({planted['true_positives']:,} of {planted['flagged']:,} flagged answers were planted), recall "
        f"**{_pct(planted['recall'])}**.", "", table(["planted kind", "in data", "flagged", "recall"], rows), ""]


def write_report(named: list[tuple[str, AuditResult, dict]], out_dir, planted: dict | None = None,
                 command: str = "", worst: int = 10) -> Path:
    """REPORT.md + PNGs + audit.json in out_dir; returns the report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_grounding([(n, r.stats) for n, r, _ in named], out / "grounding.png")
    plot_lengths([(n, d) for n, _, d in named], out / "lengths.png")
    plot_question_types([(n, d) for n, _, d in named], out / "question_types.png")
    first = named[0][1]
    lines = ["# Data audit", "",
             f"Annotations: {first.mode} mode ({'exact checks of colours, positions, relations and sizes' if first.mode == 'shapes' else 'categories, synonyms and counts; colours and positions are unverifiable'}). "
             "A claim is grounded when the annotations support it, contradicted when they say otherwise, unverifiable "
             "when they cannot tell (hypothetical sentences, boundary positions, objects that are not there). "
             "See docs/audit.md for what is read and how it is checked.", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += ["## Summary", "", table(["measure"] + [f"{n} (`{r.path}`)" for n, r, _ in named], _summary_rows(named)), ""]
    if planted:
        lines += ["## Planted errors", ""] + _planted(planted)
    lines += ["## Claims by kind", "", _by_kind_table(named), "", "![claims by kind](grounding.png)", ""]
    for name, result, div in named:
        lines += [f"## {name}: by data type", "", _by_type_table(result, div), ""]
    lines += ["## Diversity", "", "Answer lengths by data type:", "", "![answer lengths](lengths.png)", "",
              "Question types:", "", "![question types](question_types.png)", ""]
    qrows = [[t] + [_num(d["all"]["question_types"].get(t, 0)) for _, _, d in named] for t in QUESTION_TYPES]
    lines += [table(["question type"] + [n for n, _, _ in named], qrows), ""]
    for name, _, div in named:
        top = div["all"]["top_questions"]
        if top:
            lines += [f"Most repeated questions in {name}: " + "; ".join(f"\"{q}\" ×{n}" for q, n in top), ""]
    for name, result, _ in named:
        lines += [f"## {name}: the most contradicted samples", ""] + _worst(result, worst) + [""]
    for name, result, _ in named:
        lines += [f"## {name}: not audited", "",
                  "Samples without an image, or whose image the annotations lack, are counted and kept as they are "
                  "(also by --drop-contradicted); empty turns are counted and skipped.", ""] + _skipped(result) + [""]
    report = out / "REPORT.md"
    atomic_write_text(report, "\n".join(lines))
    blob = {name: {"stats": r.stats, "diversity": d} for name, r, d in named}
    if planted:
        blob["planted"] = planted
    atomic_write_text(out / "audit.json", json.dumps(blob, indent=1, ensure_ascii=False) + "\n")
    return report
