"""The auditor reads claims in an answer and checks them against one image's annotations.

Shapes-world images are built by hand here: a 100-pixel image, boxes [x, y, w, h] in pixels,
categories "<colour> <shape>" with the world's colour/shape/size fields.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vinstruct.audit.engine import Auditor
from vinstruct.data.coco import CocoImage, CocoObject

CATEGORIES = [f"{c} {s}" for s in ("circle", "square", "star", "heart") for c in ("red", "blue", "green", "yellow")]


def shape(category: str, box: list[float], size: str = "small") -> CocoObject:
    color, noun = category.split()
    return CocoObject(category, box, {"color": color, "shape": noun, "size": size})


# A red circle top left, a large blue star top right, a small green square at the bottom centre.
SCENE = CocoImage(1, "train_000001.png", 100, 100, ["A red circle, a blue star and a green square."],
                  [shape("red circle", [5, 5, 20, 20]), shape("blue star", [70, 20, 28, 28], "large"),
                   shape("green square", [40, 75, 20, 20])], Path("train_000001.png"))


@pytest.fixture(scope="module")
def auditor():
    return Auditor.for_categories(CATEGORIES)


def verdicts(auditor, answer, question=None, image=SCENE):
    """[(kind, status)] for the claims of one answer."""
    return [(v.kind, v.status) for v in auditor.audit_turn(question, answer, image).verdicts]


def test_colour_answers_are_read_against_the_object_the_question_names(auditor):
    assert verdicts(auditor, "It is red.", "What color is the circle?") == [("color", "grounded")]
    turn = auditor.audit_turn("What color is the circle?", "It is blue.", SCENE)
    assert turn.status == "contradicted"
    assert "red circle" in turn.verdicts[0].evidence  # the contradicting annotation is named
    assert verdicts(auditor, "Red.", "What color is the circle?") == [("color", "grounded")]


def test_counts_are_exact_on_the_shapes_world(auditor):
    assert verdicts(auditor, "There are 3 shapes: a red circle, a blue star and a green square.") == [
        ("count", "grounded"), ("object", "grounded"), ("object", "grounded"), ("object", "grounded")]
    assert verdicts(auditor, "There are two stars.") == [("count", "contradicted")]
    assert verdicts(auditor, "Two.", "How many shapes are there?") == [("count", "contradicted")]
    assert verdicts(auditor, "3.", "How many shapes are there?") == [("count", "grounded")]


def test_an_object_not_in_the_image_is_contradicted_and_a_wrong_colour_is_told_apart(auditor):
    assert verdicts(auditor, "There is a purple heart in the corner.") == [("object", "contradicted")]
    assert verdicts(auditor, "I can also see a dog.") == [("object", "contradicted")]
    # A star is there, but not a yellow one: the claim is about colour.
    assert verdicts(auditor, "A yellow star sits on the right.") == [("position", "unverifiable"), ("color", "contradicted")]


def test_denials_and_yes_no_answers(auditor):
    assert verdicts(auditor, "No, there is no yellow heart in the image.") == [("object", "grounded")]
    assert verdicts(auditor, "No, there isn't a blue star.") == [("object", "contradicted")]
    assert verdicts(auditor, "No.", "Is there a blue star in the image?") == [("object", "contradicted")]
    assert verdicts(auditor, "Yes.", "Is there a blue star in the image?") == [("object", "grounded")]


def test_positions_and_relations_come_from_box_centres(auditor):
    assert verdicts(auditor, "In the top left corner you can see a red circle.") == [
        ("position", "grounded"), ("object", "grounded")]
    assert verdicts(auditor, "The red circle is on the right side.")[0] == ("position", "contradicted")
    assert verdicts(auditor, "On the left.", "Is the circle on the left or the right?") == [("position", "grounded")]
    assert verdicts(auditor, "The star is to the right of the circle.")[0] == ("relation", "grounded")
    assert verdicts(auditor, "The star is to the left of the circle.")[0] == ("relation", "contradicted")
    assert verdicts(auditor, "The square is below the circle.")[0] == ("relation", "grounded")
    # The square's centre is on the vertical midline: "left" or "right" cannot be decided.
    assert verdicts(auditor, "The square is on the left.")[0] == ("position", "unverifiable")


def test_sizes_use_the_world_size_and_the_box_areas(auditor):
    assert ("size", "grounded") in verdicts(auditor, "The blue star is the largest shape in the picture.")
    assert ("size", "contradicted") in verdicts(auditor, "The red circle is the largest shape.")
    assert ("size", "contradicted") in verdicts(auditor, "There is a large green square at the bottom.")


def test_a_shape_answer_takes_the_colour_from_the_question(auditor):
    assert verdicts(auditor, "It is a circle.", "What shape is the red object?") == [("object", "grounded")]
    assert verdicts(auditor, "It is a star.", "What shape is the red object?") == [("color", "contradicted")]


def test_hypothetical_sentences_are_not_checked(auditor):
    turn = auditor.audit_turn("If the red shapes were removed, how many shapes would remain?",
                              "Removing the red circle leaves two shapes. So 2 shapes would remain.", SCENE)
    assert {v.status for v in turn.verdicts} == {"unverifiable"}
    assert turn.status == "unverifiable"


def test_counts_in_a_part_of_the_image(auditor):
    # Left half: the red circle, surely; the square sits on the midline, so it may count or not.
    assert verdicts(auditor, "That makes 1 on the left.") == [("count", "unverifiable")]
    assert verdicts(auditor, "That makes 3 on the left.") == [("count", "contradicted")]
    assert verdicts(auditor, "There is nothing on the left, 0 on the left.") == [("count", "contradicted")]
    assert verdicts(auditor, "There are 2 shapes at the top.") == [("count", "grounded")]


def test_a_turn_is_contradicted_by_any_claim_grounded_by_one_and_unverifiable_with_none(auditor):
    assert auditor.audit_turn(None, "The circle is red and the star is green.", SCENE).status == "contradicted"
    assert auditor.audit_turn(None, "The circle is red.", SCENE).status == "grounded"
    assert auditor.audit_turn(None, "What a lovely picture!", SCENE).status == "unverifiable"


def test_any_text_is_read_without_error(auditor):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    words = st.sampled_from("a the no not is it they two 3 of them red blue circle stars shape one left right top "
                            "center corner half to above below largest small if would yes , . ; : ? ( ) n't "
                            "dog color only other by than".split())

    @settings(max_examples=300, deadline=None)
    @given(st.lists(words, max_size=12).map(" ".join), st.lists(words, max_size=40).map(" ".join))
    def read(question, answer):
        turn = auditor.audit_turn(question or None, answer, SCENE)
        assert turn.status in ("grounded", "contradicted", "unverifiable")

    read()
