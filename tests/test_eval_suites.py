"""Every suite end to end on a tiny model and a tiny world: files written, numbers consistent, CLI."""

import json
import re

import pytest
from eval_support import free_port

from vinstruct.cli import main
from vinstruct.data.coco import CocoSet
from vinstruct.data.formats import read_jsonl
from vinstruct.eval import llava_bench, pope, world_qa
from vinstruct.eval.endpoints import make_judge, scripted_judge_and_teacher, scripted_server

pytestmark = pytest.mark.usefixtures("one_thread")


def _files(out):
    return {p.name for p in out.iterdir()}


def test_world_questions_have_one_definite_answer_and_flag_unseen_pairs(tiny_world, tmp_path):
    questions_path, gold_path = world_qa.build_questions(tiny_world, "test", tmp_path)
    questions, gold = read_jsonl(questions_path), read_jsonl(gold_path)
    assert [q["question_id"] for q in questions] == [g["question_id"] for g in gold]
    assert all("answer" not in q for q in questions)  # predict never sees the gold answers
    assert {g["type"] for g in gold} == {"count", "color", "shape", "position", "existence"}
    assert {g["answer"] for g in gold if g["type"] == "existence"} == {"yes", "no"}
    held_out = {tuple(pair) for pair in json.loads((tiny_world / "world.json").read_text())["held_out"]}
    for q, g in zip(questions, gold):
        if g["type"] == "existence" and g["answer"] == "no":
            color, shape = re.match(r"Is there an? (\w+) (\w+) in the image", q["text"]).groups()
            assert g["unseen"] == ((shape, color) in held_out)
    assert any(g["unseen"] for g in gold) and not all(g["unseen"] for g in gold)
    assert world_qa.build_questions(tiny_world, "test", tmp_path / "again") and \
        read_jsonl(tmp_path / "again" / "questions.jsonl") == questions  # deterministic


def test_world_suite_cli_writes_json_table_chart(tiny_checkpoint, tiny_world, tmp_path, capsys):
    out = tmp_path / "world"
    assert main(["eval", "--model", str(tiny_checkpoint), "--suite", "world", "--world", str(tiny_world),
                 "--out", str(out), "--quiet", "--batch-size", "8"]) == 0
    assert {"results.json", "results.md", "results.png", "questions.jsonl", "gold.jsonl", "answers.jsonl",
            "answers_blind.jsonl"} <= _files(out)
    results = json.loads((out / "results.json").read_text())
    assert results["suite"] == "world" and results["complete"]
    n = results["questions"]
    assert results["scores"]["overall"]["total"] == n == results["image_blind"]["overall"]["total"]
    assert sum(v["total"] for v in results["scores"]["by_type"].values()) == n
    assert "| existence |" in capsys.readouterr().out
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_pope_questions_balance_yes_and_no_for_each_strategy(tiny_world, tmp_path):
    paths = pope.build_questions(tiny_world, "test", tmp_path, per_image=2)
    for strategy, (questions_path, gold_path) in paths.items():
        gold = read_jsonl(gold_path)
        yes = sum(g["answer"] == "yes" for g in gold)
        assert yes == len(gold) - yes, strategy
        for g in gold:  # a "no" object is really absent from its image
            if g["answer"] == "no":
                assert not any(o["object"] == g["object"] and o["answer"] == "yes" and o["image_id"] == g["image_id"]
                               for o in gold)
    popular = [g["object"] for g in read_jsonl(paths["popular"][1]) if g["answer"] == "no"]
    random_ = [g["object"] for g in read_jsonl(paths["random"][1]) if g["answer"] == "no"]
    assert len(set(popular)) <= len(set(random_))  # popular negatives concentrate on frequent categories


def test_pope_suite(tiny_model, tiny_world, tmp_path):
    results = pope.evaluate(tiny_model, tiny_world, tmp_path, limit_images=4, progress=False)
    assert set(results["strategies"]) == {"random", "popular", "adversarial"}
    for m in results["strategies"].values():
        assert m["tp"] + m["fp"] + m["tn"] + m["fn"] == m["total"] > 0
    assert "random f1" in results["metrics"]


def test_llava_bench_end_to_end_through_the_scripted_judge_over_http(tiny_checkpoint, tiny_world, tmp_path, capsys):
    out = tmp_path / "bench"
    with scripted_server() as url:  # the scripted judge in front of the scripted teacher
        assert main(["eval", "--model", str(tiny_checkpoint), "--suite", "llava-bench", "--world", str(tiny_world),
                     "--limit", "4", "--max-new-tokens", "12", "--judge-url", url, "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    summary = results["summary"]
    assert results["complete"] and set(summary) == {"conversation", "detail", "complex", "all"}
    assert summary["all"]["n"] == 12 and summary["all"]["failed"] == 0  # 4 images x 3 categories
    # The teacher names every object correctly; the random model cannot beat it.
    assert summary["all"]["reference"] >= 8 and summary["all"]["candidate"] <= summary["all"]["reference"]
    assert results["metrics"]["relative score"] == summary["all"]["relative"]
    reviews = read_jsonl(out / "reviews.jsonl")
    assert len(reviews) == 12 and all(r["scores"] and r["review"] for r in reviews)
    assert len(read_jsonl(out / "references.jsonl")) == 12
    assert "| all |" in capsys.readouterr().out


def test_llava_bench_with_a_silent_judge_ends_incomplete_with_what_it_has(tiny_model, tiny_world, tmp_path):
    dead = make_judge(f"http://127.0.0.1:{free_port()}/v1", timeout=2.0, max_retries=0, give_up_after=2,
                      concurrency=1)
    with scripted_judge_and_teacher() as (_, teacher):
        results = llava_bench.evaluate(tiny_model, tiny_world, tmp_path, dead, teacher, limit_images=2,
                                       max_new_tokens=4, progress=False)
    assert not results["complete"] and "failed 2 requests in a row" in results["incomplete_reason"]
    assert results["summary"]["all"]["failed"] == 6 and results["metrics"]["relative score"] is None
    assert (tmp_path / "results.md").read_text().count("Incomplete run") == 1
    assert len(read_jsonl(tmp_path / "answers.jsonl")) == 6  # the model's answers are kept for a rerun


def test_scienceqa_suite_from_the_world_with_the_ensemble(tiny_checkpoint, tiny_world, tmp_path):
    out = tmp_path / "sqa"
    # No --judge-url: the scripted judge is served on loopback by the command itself.
    assert main(["eval", "--model", str(tiny_checkpoint), "--suite", "scienceqa", "--world", str(tiny_world),
                 "--out", str(out), "--quiet", "--max-new-tokens", "4"]) == 0
    results = json.loads((out / "results.json").read_text())
    scenes = [image for image in CocoSet.load(tiny_world, "test").images if image.objects]
    assert results["complete"] and results["problems"] == 2 * len(scenes) > 0  # two problems per test scene
    ensemble = results["ensemble"]
    assert ensemble["ensemble"]["overall"]["accuracy"] >= results["scores"]["overall"]["accuracy"]
    assert results["metrics"]["ensemble accuracy"] == ensemble["ensemble"]["overall"]["accuracy"]


def test_compare_puts_runs_side_by_side(tiny_model, tiny_world, tmp_path, capsys):
    for name in ("base", "other"):
        world_qa.evaluate(tiny_model, tiny_world, tmp_path / name / "world", limit_images=2, max_new_tokens=2,
                          blind=False, progress=False)
    assert main(["eval", "compare", str(tmp_path / "base"), str(tmp_path / "other"),
                 "--out", str(tmp_path / "cmp.md")]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0] == "| metric | base | other |"
    assert "| world: accuracy |" in table and (tmp_path / "cmp.md").read_text() == table
    assert main(["eval", "compare", str(tmp_path / "nothing")]) == 1


def test_build_questions_cli_for_every_suite(tiny_world, tmp_path, capsys):
    for suite, expected in (("world", {"questions.jsonl", "gold.jsonl"}),
                            ("pope", {"pope_random.jsonl", "pope_adversarial_gold.jsonl"}),
                            ("llava-bench", {"questions.jsonl", "context.jsonl"}),
                            ("scienceqa", {"problems.json", "pid_splits.json", "images"})):
        out = tmp_path / suite
        assert main(["eval", "build-questions", "--world", str(tiny_world), "--suite", suite, "--out", str(out)]) == 0
        assert expected <= _files(out), suite
    context = read_jsonl(tmp_path / "llava-bench" / "context.jsonl")[0]["caption"]
    assert "\n\n" in context and ": [" in context  # the symbolic text: captions, blank line, boxes


def test_eval_refuses_incomplete_requests_with_one_line(tiny_checkpoint, tmp_path, capsys):
    assert main(["eval", "--model", str(tiny_checkpoint), "--suite", "world"]) == 1
    assert "needs --world DIR" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_checkpoint), "--suite", "world", "--world", str(tmp_path)]) == 1
    assert "world.json: file not found" in capsys.readouterr().err


def test_run_all_suites_into_one_directory_with_a_summary(tiny_model, tiny_world, tmp_path):
    from vinstruct.eval.suites import run_all

    results = run_all(tiny_model, tiny_world, tmp_path, limit=2, max_new_tokens=4, batch_size=8, progress=False)
    assert list(results) == ["world", "pope", "llava-bench", "scienceqa"]
    assert all(r["complete"] for r in results.values())
    summary = (tmp_path / "summary.md").read_text()
    for row in ("| world: accuracy |", "| pope: random f1 |", "| llava-bench: relative score |",
                "| scienceqa: ensemble accuracy |"):
        assert row in summary
    assert results["scienceqa"]["problems"] == 4  # --limit counts scenes: two problems each


# ---- a new suite: one module plus one registry entry ------------------------------------------------
TOY_SUITE = '''"""A toy suite: how many images the split has, and the answer budget the registry gave it."""
from vinstruct.data.coco import CocoSet
from vinstruct.eval import report


def evaluate_suite(model, out, request):
    images = len(CocoSet.load(request.world_dir, request.split).images)
    results = {"suite": "toy", "model": type(model).__name__, "complete": True,
               "metrics": {"images": images, "max new tokens": request.max_new_tokens}}
    report.save_run(out, results, f"| images | {images} |", {"toy": {"images": images}}, "Toy suite", ylim=None)
    return results


def suite_questions(out, request):
    out.mkdir(parents=True, exist_ok=True)
    (out / "questions.jsonl").write_text("")
    return [out / "questions.jsonl"]
'''


@pytest.fixture
def toy_suite(tmp_path, monkeypatch):
    from vinstruct.eval import suites

    (tmp_path / "toy_suite.py").write_text(TOY_SUITE)  # the one module
    monkeypatch.syspath_prepend(tmp_path)
    suites.register(suites.Suite("toy", "toy_suite", 3, "how many images; the answer budget"))  # the one entry
    yield
    del suites.SUITES["toy"]


def test_a_registered_suite_gets_the_cli_choice_help_and_dispatch(toy_suite, tiny_checkpoint, tiny_world, tmp_path,
                                                                   capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "  toy          how many images; the answer budget" in capsys.readouterr().out
    out = tmp_path / "toy"
    assert main(["eval", "--model", str(tiny_checkpoint), "--suite", "toy", "--world", str(tiny_world),
                 "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"] == {"images": len(CocoSet.load(tiny_world, "test").images), "max new tokens": 3}
    assert "| images |" in capsys.readouterr().out
    assert main(["eval", "build-questions", "--world", str(tiny_world), "--suite", "toy", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "questions.jsonl")
    assert main(["eval", "--model", str(tiny_checkpoint), "--suite", "toy"]) == 1  # a world suite by default
    assert "suite 'toy' needs --world DIR" in capsys.readouterr().err


def test_world_and_pope_questions_carry_the_hint_where_asked(tiny_world, tmp_path, capsys):
    hint = "Answer the question using a single word or phrase."
    for position, out in (("after", tmp_path / "after"), ("before", tmp_path / "before")):
        for suite in ("world", "pope"):
            assert main(["eval", "build-questions", "--world", str(tiny_world), "--suite", suite, "--out",
                         str(out / suite), "--answer-hint", hint, "--answer-hint-position", position]) == 0
    for suite, name in (("world", "questions.jsonl"), ("pope", "pope_random.jsonl")):
        after = read_jsonl(tmp_path / "after" / suite / name)
        before = read_jsonl(tmp_path / "before" / suite / name)
        assert all(q["text"].endswith(f"\n{hint}") for q in after)
        assert all(q["text"].startswith(f"{hint}\n") for q in before)
        assert [q["text"].replace(f"\n{hint}", "") for q in after] == \
            [q["text"].replace(f"{hint}\n", "") for q in before]
