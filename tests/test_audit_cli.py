"""`vinstruct audit` and `vinstruct generate --audit` from the command line: reports, comparison, cleaning, bad input."""

from __future__ import annotations

import json

import pytest

from vinstruct.cli import main
from vinstruct.generate.scripted.planted import PlantPlan


@pytest.fixture(scope="module")
def teacher_urls():
    """A clean scripted teacher and one that states every fourth fact wrong, both on free loopback ports."""
    from contextlib import ExitStack

    from vinstruct.eval.endpoints import scripted_responders
    from vinstruct.generate.scripted import create_app
    from vinstruct.generate.server import running_server

    with ExitStack() as stack:
        clean = stack.enter_context(running_server(create_app(scripted_responders())))
        wrong = stack.enter_context(running_server(create_app(scripted_responders(PlantPlan(rate=0.25, seed=2)))))
        yield clean, wrong


@pytest.fixture(scope="module")
def two_data_sets(tiny_world, teacher_urls, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit-cli")
    for name, url in zip(("clean", "wrong"), teacher_urls):
        assert main(["generate", "--coco-dir", str(tiny_world), "--split", "train", "--limit", "30",
                     "--teacher-url", url, "--out", str(out / f"{name}.json"), "--no-progress"]) == 0
    return out


def test_audit_compares_data_sets_side_by_side_in_a_report_with_plots(tiny_world, two_data_sets, capsys):
    out = two_data_sets
    assert main(["audit", str(out / "clean.json"), str(out / "wrong.json"), "--coco-dir", str(tiny_world),
                 "--split", "train", "--out", str(out / "report"), "--names", "scripted,planted"]) == 0
    printed = capsys.readouterr().out
    assert "scripted: 90 of 90 samples audited" in printed and "planted:" in printed
    report = (out / "report" / "REPORT.md").read_text()
    assert "| measure | scripted (" in report and "planted (" in report
    for plot in ("grounding.png", "lengths.png", "question_types.png"):
        assert (out / "report" / plot).read_bytes()[:4] == b"\x89PNG"
        assert f"]({plot})" in report
    stats = json.loads((out / "report" / "audit.json").read_text())
    assert stats["scripted"]["stats"]["claims"]["contradicted"] == 0
    assert stats["planted"]["stats"]["claims"]["contradicted"] > 10
    assert stats["planted"]["diversity"]["all"]["distinct_1"] > 0


def test_drop_contradicted_keeps_the_rest_of_each_conversation(tiny_world, two_data_sets, capsys):
    out = two_data_sets
    cleaned = out / "wrong.clean.json"
    assert main(["audit", str(out / "wrong.json"), "--coco-dir", str(tiny_world), "--split", "train",
                 "--drop-contradicted", str(cleaned)]) == 0
    assert "contradicted answers" in capsys.readouterr().out
    data = json.loads(cleaned.read_text())
    original = json.loads((out / "wrong.json").read_text())
    assert 0 < len(data) < len(original)
    for sample in data:
        assert sum("<image>" in t["value"] for t in sample["conversations"]) == 1
        assert "<image>" in sample["conversations"][0]["value"]
        assert [t["from"] for t in sample["conversations"]] == ["human", "gpt"] * (len(sample["conversations"]) // 2)
    assert main(["audit", str(cleaned), "--coco-dir", str(tiny_world), "--split", "train"]) == 0
    assert "contradicted 0," in capsys.readouterr().out


def test_generate_audit_drops_contradicted_answers_and_counts_them(tiny_world, teacher_urls, tmp_path, capsys):
    out = tmp_path / "audited.json"
    assert main(["generate", "--coco-dir", str(tiny_world), "--split", "train", "--limit", "30", "--audit",
                 "--teacher-url", teacher_urls[1], "--out", str(out), "--no-progress"]) == 0
    assert "audit:contradicted=" in capsys.readouterr().out
    stats = json.loads(out.with_name("audited.stats.json").read_text())["types"]
    assert sum(s["audit"]["contradicted"] for s in stats.values()) > 10
    assert all(s["audit"]["answers"] > 0 for s in stats.values())
    assert main(["audit", str(out), "--coco-dir", str(tiny_world), "--split", "train"]) == 0
    assert "contradicted 0," in capsys.readouterr().out


def test_bad_input_gets_one_line_naming_the_sample_or_is_counted(tiny_world, tmp_path, capsys):
    not_llava = tmp_path / "not_llava.json"
    not_llava.write_text(json.dumps([{"id": "a1", "image": "x.png", "turns": []}]))
    assert main(["audit", str(not_llava), "--coco-dir", str(tiny_world), "--split", "train"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sample 'a1' (item 0)" in err and "conversations" in err
    not_a_list = tmp_path / "object.json"
    not_a_list.write_text(json.dumps({"data": []}))
    assert main(["audit", str(not_a_list), "--coco-dir", str(tiny_world), "--split", "train"]) == 1
    assert "expected a JSON list" in capsys.readouterr().err

    image = json.loads((tiny_world / "annotations" / "instances_train.json").read_text())["images"][0]["file_name"]
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps([
        {"id": "missing", "image": "nowhere_000999.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A red circle."}]},
        {"id": "empty", "image": image, "conversations": [
            {"from": "human", "value": "<image>\nHow many shapes?"}, {"from": "gpt", "value": "  "}]}]))
    assert main(["audit", str(odd), "--coco-dir", str(tiny_world), "--split", "train", "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "1 skipped: image not in the annotations=1" in printed and "empty answer=1" in printed
    report = (tmp_path / "r" / "REPORT.md").read_text()
    assert "image not in the annotations (e.g. `missing`)" in report and "empty answer (e.g. `empty`)" in report


def test_a_summary_and_a_one_table_section_for_other_reports(tiny_world, two_data_sets, tmp_path):
    from vinstruct.audit import audit_summary, write_audit_section

    summary = audit_summary(two_data_sets / "wrong.json", tiny_world, "train")
    json.dumps(summary)  # JSON-able, for a report's own records
    assert set(summary["by_type"]) == {"conversation", "detail", "complex"}
    assert 0.5 < summary["grounded_rate"] < 1 and summary["claims"]["contradicted"] > 0
    markdown = write_audit_section(summary, tmp_path)
    assert markdown.count("\n| ") >= 4 and "![claims by kind](data_audit.png)" in markdown
    assert (tmp_path / "data_audit.png").read_bytes()[:4] == b"\x89PNG"
