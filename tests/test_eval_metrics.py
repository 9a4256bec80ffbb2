"""Metrics against small cases computed by hand."""

import pytest

from vinstruct.eval import llava_bench, pope, scienceqa, world_qa
from vinstruct.eval.scene import WorldInfo


def test_pope_metrics_by_hand():
    # gold:  yes yes yes no  no  no
    # said:  yes yes no  yes no  ?   -> TP 2, FN 1, FP 1, TN 2 (unclear counts as "no")
    pairs = [("yes", "yes"), ("yes", "yes"), ("yes", "no"), ("no", "yes"), ("no", "no"), ("no", None)]
    m = pope.metrics(pairs)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(400 / 6)
    assert m["precision"] == pytest.approx(200 / 3)
    assert m["recall"] == pytest.approx(200 / 3)
    assert m["f1"] == pytest.approx(200 / 3)
    assert m["yes_ratio"] == pytest.approx(50.0)
    assert m["unclear"] == 1


def test_pope_all_no_has_zero_f1_not_an_error():
    m = pope.metrics([("yes", "no"), ("no", "no")])
    assert m["f1"] == 0.0 and m["precision"] == 0.0 and m["accuracy"] == 50.0


def _problem(pid, answer, hint="", image=None, subject="natural science", grade="grade3"):
    return scienceqa.Problem(pid, "q?", ["x", "y", "z"], answer, hint, image, subject, grade)


def test_scienceqa_accuracy_groups_by_hand():
    problems = [
        _problem("1", 0, hint="ctx", subject="natural science", grade="grade2"),                   # NAT TXT G1-6
        _problem("2", 1, image="image.png", subject="social science", grade="grade8"),             # SOC IMG G7-12
        _problem("3", 2, hint="ctx", image="image.png", subject="language science", grade="grade12"),  # LAN TXT IMG G7-12
        _problem("4", 0, subject="natural science", grade="grade6"),                               # NAT NO G1-6
    ]
    letters = {"1": "A", "2": "A", "3": "C", "4": None}  # right, wrong, right, failed
    result = scienceqa.accuracy(problems, letters)
    assert result["overall"] == {"correct": 2, "total": 4, "accuracy": 50.0}
    groups = {g: (v["correct"], v["total"]) for g, v in result["groups"].items()}
    assert groups == {"NAT": (1, 2), "SOC": (0, 1), "LAN": (1, 1), "TXT": (2, 2), "IMG": (1, 2), "NO": (0, 1),
                      "G1-6": (1, 2), "G7-12": (1, 2)}
    assert list(result["groups"]) == ["NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12"]
    assert result["failed"] == 1


def test_relative_score_by_hand():
    questions = [{"question_id": "a", "category": "conversation"}, {"question_id": "b", "category": "conversation"},
                 {"question_id": "c", "category": "detail"}, {"question_id": "d", "category": "complex"}]
    scores = {"a": (8.0, 6.0), "b": (10.0, 8.0), "c": (9.0, 3.0), "d": None}  # d: the judge never gave a score
    table = llava_bench.summarize(questions, scores)
    assert table["conversation"] == {"n": 2, "failed": 0, "reference": 9.0, "candidate": 7.0,
                                     "relative": pytest.approx(700 / 9)}
    assert table["detail"]["relative"] == pytest.approx(100 / 3)
    assert table["complex"] == {"n": 0, "failed": 1, "reference": None, "candidate": None, "relative": None}
    assert table["all"]["reference"] == 9.0 and table["all"]["candidate"] == pytest.approx(17 / 3)
    assert table["all"]["relative"] == pytest.approx(100 * (17 / 3) / 9)


def test_world_score_by_type_and_unseen_subset():
    world = WorldInfo(["circle", "square"], ["red", "blue"], [], {("circle", "blue")})
    gold = [
        {"question_id": 1, "answer": "2", "type": "count", "unseen": False},
        {"question_id": 2, "answer": "blue", "type": "color", "unseen": True},
        {"question_id": 3, "answer": "yes", "type": "existence", "unseen": True},
        {"question_id": 4, "answer": "left", "type": "position", "unseen": False},
        {"question_id": 5, "answer": "no", "type": "existence", "unseen": False},
    ]
    answers = {1: {"text": "two"}, 2: {"text": "red"}, 3: {"text": "Yes."}, 5: {"text": "yes and no"}}
    s = world_qa.score(gold, answers, world)
    assert s["overall"] == {"correct": 2, "total": 4, "accuracy": 50.0}
    assert s["unanswered"] == 1
    assert s["by_type"]["existence"] == {"correct": 1, "total": 2, "accuracy": 50.0}
    assert s["unseen"] == {"correct": 1, "total": 2, "accuracy": 50.0}
    assert "position" not in s["by_type"]  # question 4 was never answered
