"""Parsing teacher text and filtering samples: formats hosted models really write, and arbitrary junk."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vinstruct.generate.filters import FilterConfig, check_sample
from vinstruct.generate.parse import ParseError, parse_complex, parse_conversation, parse_detail, parse_reply


def test_conversation_in_the_taught_format():
    text = "User: How many shapes are there?\nAssistant: There are 3 shapes.\nUser: What color is the star?\nAssistant: Blue."
    assert parse_conversation(text) == [("How many shapes are there?", "There are 3 shapes."),
                                        ("What color is the star?", "Blue.")]


def test_conversation_with_the_decorations_hosted_models_add():
    text = """Here is the conversation:

**User:** What is the man doing?
**Assistant:** He is riding a bicycle.
It is a red one.
---
1. Human: Is it sunny?
2. GPT: Yes, the sky is clear.
Question: Unanswered at the end?"""
    assert parse_conversation(text) == [("What is the man doing?", "He is riding a bicycle.\nIt is a red one."),
                                        ("Is it sunny?", "Yes, the sky is clear.")]


def test_conversation_without_labels_is_unparsable_and_blank_is_empty():
    with pytest.raises(ParseError) as err:
        parse_conversation("The image shows a cat sleeping on a sofa.")
    assert err.value.reason == "unparsable"
    with pytest.raises(ParseError) as err:
        parse_conversation("   \n")
    assert err.value.reason == "empty"


def test_complex_and_detail_formats():
    assert parse_complex("Question: Why is the road wet?\nAnswer: It rained:\nthe puddles show it.") == (
        "Why is the road wet?", "It rained:\nthe puddles show it.")
    assert parse_complex("**Question:** Why?\n\n**Answer:** Because.") == ("Why?", "Because.")
    with pytest.raises(ParseError):
        parse_complex("Answer: there is no question here")
    assert parse_detail("## Detailed description\n\nA cat on a mat.") == "A cat on a mat."
    assert parse_detail("Description: A cat on a mat.") == "A cat on a mat."
    assert parse_reply("detail", "A dog.") == [(None, "A dog.")]


def pairs(*qa):
    return list(zip(qa[0::2], qa[1::2]))


@pytest.mark.parametrize("task, sample, reason", [
    ("conversation", pairs("What is it?", "It is a red circle on the left side."), None),
    ("conversation", pairs("What is it?", " "), "empty"),
    ("conversation", pairs("What is it?", "I'm sorry, but I cannot see the image."), "refusal"),
    ("conversation", pairs("Where is it?", "The caption says it is on the left."), "leak"),
    ("conversation", pairs("Where is it?", "Its bounding box is on the left side."), "leak"),
    ("conversation", pairs("Where is it?", "It is at [0.12, 0.4] in the image."), "leak"),
    ("conversation", pairs("Where is it?", "Its centre is at 0.315 across the image."), "leak"),
    ("conversation", pairs("Is it red?", "Yes, the circle is red.", "Is it red?", "Yes, it is red."), "duplicate_question"),
    ("conversation", pairs("Is it red?", "Yes."), "too_short"),
    ("detail", [(None, "A red circle.")], "too_short"),
    ("detail", [(None, "word " * 700)], "too_long"),
    ("complex", pairs("Why is the caption wrong?", "Because the image shows a star and not a circle at all, clearly."), "leak"),
    ("conversation", pairs("Is there a triangle?", "No, I can't see a triangle anywhere in the picture."), None),
])
def test_filters_name_the_reason(task, sample, reason):
    assert check_sample(task, sample, FilterConfig()) == reason


def test_a_question_already_kept_for_the_image_is_a_duplicate():
    seen: set[str] = set()
    first = pairs("Which shape is the largest, and why?", "The red circle, because its outline covers far more of the picture than any other shape.")
    assert check_sample("complex", first, FilterConfig(), seen) is None
    assert check_sample("complex", first, FilterConfig(), seen) == "duplicate_question"


teacher_like = st.lists(
    st.one_of(
        st.text(max_size=80),
        st.sampled_from(["User:", "Assistant:", "Question:", "Answer:", "**User:**", "Q:", "A:", "1. Human:", "GPT:",
                         "===", "```", "\n", "  ", "Description:", "：", "\u0000", "\r\n", "* Assistant :"]),
    ),
    max_size=30,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(task=st.sampled_from(["conversation", "detail", "complex"]), text=teacher_like)
def test_arbitrary_teacher_text_parses_or_is_dropped_with_a_reason(task, text):
    try:
        parsed = parse_reply(task, text)
    except ParseError as err:
        assert err.reason in ("unparsable", "empty")
        return
    assert parsed and all(isinstance(a, str) and a.strip() for _, a in parsed)
    assert all(q is None or q.strip() for q, _ in parsed)
    reason = check_sample(task, parsed, FilterConfig(), set())
    assert reason is None or reason in ("empty", "refusal", "leak", "duplicate_question", "too_short", "too_long")
