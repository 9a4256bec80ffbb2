"""The audit of one data file in a few numbers, and as a report section (one table, one plot).

    summary = audit_summary("runs/demo/data/stage2.json", "runs/demo/world", "train")
    markdown = write_audit_section(summary, "runs/demo")     # writes runs/demo/data_audit.png

For reports of other tools (the demo's): everything is JSON-able, the section links its
plot by a path relative to out_dir.
"""

from __future__ import annotations

from pathlib import Path

from vinstruct.audit.check import STATUSES
from vinstruct.audit.diversity import diversity
from vinstruct.audit.report import _num, _pct, plot_grounding, table
from vinstruct.audit.run import audit_file


def audit_summary(data_path, coco_dir, split: str) -> dict:
    result = audit_file(data_path, coco_dir, split, worst=3)
    stats, div = result.stats, diversity(result.samples)
    by_type = {}
    for data_type, row in stats["by_type"].items():
        d = div.get(data_type, {})
        by_type[data_type] = {"samples": row["samples"], "answers": sum(row[f"turns_{s}"] for s in STATUSES),
                              "grounded_rate": row["grounded_rate"], "contradicted_answers": row["turns_contradicted"],
                              "distinct_2": d.get("distinct_2"), "answer_words_mean": d.get("answer_words_mean")}
    return {"data": str(data_path), "mode": stats["mode"], "samples": stats["samples"],
            "audited_samples": stats["audited_samples"], "skipped_samples": stats["skipped_samples"],
            "answers": sum(stats["turns"].values()), "claims": stats["claims"], "grounded_rate": stats["grounded_rate"],
            "contradicted_answer_rate": stats["contradicted_turn_rate"], "by_type": by_type,
            "by_kind": stats["by_kind"], "distinct_2": div["all"]["distinct_2"],
            "near_duplicate_answers": div["all"]["near_duplicate_answers"], "seconds": stats["seconds"],
            "worst": stats["worst"][:3]}


def write_audit_section(summary: dict, out_dir, png_name: str = "data_audit.png") -> str:
    """Markdown (a table by data type and a plot of claims by kind); the PNG goes to out_dir/png_name."""
    plot_grounding([("data", summary)], Path(out_dir) / png_name, title="claims in the data, by kind")
    rows = [[t, _num(r["answers"]), _pct(r["grounded_rate"]), _num(r["contradicted_answers"]), _num(r["distinct_2"]),
             _num(r["answer_words_mean"])] for t, r in summary["by_type"].items()]
    claims = summary["claims"]
    rows.append(["**all**", _num(summary["answers"]), f"**{_pct(summary['grounded_rate'])}**",
                 _num(round((summary["contradicted_answer_rate"] or 0) * summary["answers"])),
                 _num(summary["distinct_2"]), "—"])
    skipped = sum(summary["skipped_samples"].values())
    note = (f"{claims['grounded']:,} claims grounded, {claims['contradicted']:,} contradicted, "
            f"{claims['unverifiable']:,} unverifiable in {summary['audited_samples']:,} samples"
            + (f" ({skipped:,} not audited: {', '.join(summary['skipped_samples'])})" if skipped else "") + ".")
    return "\n".join([table(["type", "answers", "grounded claims", "contradicted answers", "distinct-2",
                             "answer words"], rows), "", note, "", f"![claims by kind]({png_name})", ""])
