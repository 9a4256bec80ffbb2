"""The audit measured on errors planted on purpose: data from the scripted teacher over real HTTP,
with a known fraction of its facts stated wrong (a count, a colour, an absent shape, left/right)."""

from __future__ import annotations

import json
import random

import pytest

from vinstruct.audit import audit_file
from vinstruct.audit.planted import score_planted
from vinstruct.eval.endpoints import scripted_responders
from vinstruct.data.coco import CocoSet
from vinstruct.endpoint.client import EndpointConfig
from vinstruct.generate.pipeline import GenerateOptions, generate
from vinstruct.generate.prompts import TEACHER_TYPES, PromptSet
from vinstruct.generate.scripted import DEFAULT_MODEL_NAME, TeacherResponder, create_app
from vinstruct.generate.scripted.planted import PlantingResponder, PlantPlan, corrupt
from vinstruct.generate.server import running_server


@pytest.fixture
def world(tiny_world):
    """The shared tiny shapes world (96 train images)."""
    return tiny_world


def scripted_data(world, out, plant: PlantPlan | None = None, **options):
    with running_server(create_app(scripted_responders(plant))) as url:
        generate(GenerateOptions(coco_dir=world, out=out, split="train", types=options.pop("types", TEACHER_TYPES),
                                 teacher=EndpointConfig(base_url=url, model=DEFAULT_MODEL_NAME), progress=False,
                                 **options))
    return out


def test_clean_scripted_data_is_at_least_99_percent_grounded(world, tmp_path):
    for name, boxes in (("paper.json", frozenset({"detail", "complex"})), ("boxes.json", frozenset(TEACHER_TYPES))):
        stats = audit_file(scripted_data(world, tmp_path / name, boxes_for=boxes), world, "train").stats
        checkable = stats["claims"]["grounded"] + stats["claims"]["contradicted"]
        assert checkable > 2000
        assert stats["grounded_rate"] >= 0.99, stats["worst"][:2]
    captions = audit_file(scripted_data(world, tmp_path / "captions.json", types=("caption",),
                                        per_image={"caption": 5}), world, "train").stats
    assert captions["grounded_rate"] >= 0.99 and captions["claims"]["grounded"] > 500


def test_planted_contradictions_are_found_with_high_precision_and_recall(world, tmp_path):
    log = tmp_path / "planted.jsonl"
    data = scripted_data(world, tmp_path / "planted.json", PlantPlan(rate=0.25, seed=1, log=log))
    result = audit_file(data, world, "train")
    score = score_planted(result, log, CocoSet.load(world, "train"))
    assert score["planted_in_data"] > 100
    assert score["precision"] >= 0.95, score
    assert score["recall"] >= 0.90, score
    assert set(score["recall_by_kind"]) == {"count", "color", "absent", "side"}


def test_planting_is_deterministic_and_logged(tmp_path):
    text = "Two red circles and a blue star.\n\nred circle: [0.1, 0.1, 0.3, 0.3]\nred circle: [0.1, 0.6, 0.3, 0.8]\n" \
           "blue star: [0.7, 0.4, 0.9, 0.6]"
    messages = PromptSet().messages("conversation", text)
    log = tmp_path / "log.jsonl"
    teacher = PlantingResponder(TeacherResponder(), PlantPlan(rate=1.0, seed=0, log=log))
    first, second = teacher(messages, random.Random(4)), teacher(messages, random.Random(4))
    assert first == second != TeacherResponder()(messages, random.Random(4))
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert rows and all(r["corrupted"] in first and r["original"] != r["corrupted"] for r in rows[: len(rows) // 2])


def test_each_kind_of_planted_error_makes_the_fact_false():
    text = "Two red circles and a blue star.\nA blue star on the right.\n\nred circle: [0.1, 0.1, 0.3, 0.3]"
    rng = random.Random(0)
    assert corrupt("There are 2 red circles.", text, rng, ("count",))[1] == "There are 3 red circles."
    kind, changed, old, new = corrupt("The star is blue.", text, rng, ("color",))
    assert old == "blue" and new not in ("red", "blue") and changed == f"The star is {new}."
    kind, changed, old, new = corrupt("Yes, there is a red circle.", text, rng, ("absent",))
    assert new.split()[-1] not in ("circle", "star") and changed.startswith("Yes, there is a")
    assert corrupt("The star is on the right side.", text, rng, ("side",))[1] == "The star is on the left side."
    # Denials stay true whatever is changed in them, so they are left alone.
    assert corrupt("No, there is no green heart.", text, rng) is None
