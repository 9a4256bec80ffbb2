"""Prompt files: the built-in ones teach a format our parser reads, and users can bring their own."""

from __future__ import annotations

import re
import shutil

import pytest

from vinstruct.data.coco import CocoSet
from vinstruct.data.symbolic import symbolic_for_image
from vinstruct.endpoint.client import Completion, EndpointConfig
from vinstruct.errors import VinstructError
from vinstruct.generate.answers import answer_questions_sync
from vinstruct.generate.filters import FilterConfig, check_sample
from vinstruct.generate.parse import parse_reply
from vinstruct.generate.prompts import PromptSet, default_prompts_dir, strip_boxes
from vinstruct.generate.scripted import create_app
from vinstruct.generate.server import running_server


def test_built_in_prompts_have_a_system_message_seeds_and_lists():
    prompts = PromptSet()
    for task in ("conversation", "detail", "complex", "answer"):
        assert len(prompts.types[task].system) > 200 and len(prompts.types[task].examples) >= 2
    assert len(prompts.caption_instructions) >= 10 and len(set(prompts.caption_instructions)) == len(prompts.caption_instructions)
    assert len(prompts.detail_questions) >= 10


@pytest.mark.parametrize("task", ["conversation", "detail", "complex"])
def test_seed_examples_are_in_the_format_the_parser_reads_and_pass_the_filters(task):
    for example in PromptSet().types[task].examples:
        pairs = parse_reply(task, example.output)
        assert check_sample(task, pairs, FilterConfig()) is None


def test_messages_are_system_then_examples_then_input_and_boxes_can_be_left_out():
    prompts = PromptSet()
    text = "A red circle.\n\nred circle: [0.1, 0.2, 0.3, 0.4]"
    messages = prompts.messages("conversation", strip_boxes(text), with_boxes=False)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[-1]["content"] == "A red circle."
    assert not any(re.search(r": \[[\d., ]+\]$", m["content"], re.MULTILINE) for m in messages if m["role"] == "user")
    with_boxes = prompts.messages("detail", text)
    assert with_boxes[-1]["content"] == text and ": [" in with_boxes[1]["content"]


def test_a_prompt_folder_of_ones_own_replaces_the_types_it_has(tmp_path):
    mine = tmp_path / "prompts"
    shutil.copytree(default_prompts_dir() / "conversation", mine / "conversation")
    (mine / "conversation" / "system.txt").write_text("Write a conversation about the image, in our house style.")
    prompts = PromptSet(mine, ("conversation", "detail"))
    assert prompts.types["conversation"].system.endswith("house style.")
    assert prompts.types["detail"].source == default_prompts_dir() / "detail"
    (mine / "conversation" / "example_1_output.txt").unlink()
    with pytest.raises(VinstructError, match="example_1_input.txt: seed example has no matching example_1_output.txt"):
        PromptSet(mine, ("conversation",))
    shutil.copy(default_prompts_dir() / "conversation" / "example_1_output.txt", mine / "conversation")
    (mine / "conversation" / "system.txt").write_text("  \n")
    with pytest.raises(VinstructError, match="system.txt: prompt file is empty"):
        PromptSet(mine, ("conversation",))


def test_reference_answers_for_free_questions_from_symbolic_text(tiny_coco):
    images = CocoSet.load(tiny_coco, "train").images
    items = []
    for image in images:
        symbolic = symbolic_for_image(image)
        items.append((symbolic, "How many shapes are there?"))
        items.append((symbolic, "Is there a gray heart in the image?"))
    with running_server(create_app()) as url:
        answers = answer_questions_sync(EndpointConfig(base_url=url, model="scripted", concurrency=4), items)
    assert all(isinstance(a, Completion) for a in answers)
    for image, count, absent in zip(images, answers[0::2], answers[1::2]):
        assert re.search(r"\d+", count.text).group(0) == str(len(image.objects))
        assert absent.text.startswith("No")
