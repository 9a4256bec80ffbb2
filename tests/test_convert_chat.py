"""Exported Jinja chat templates render exactly the prompts our templates render, so transformers'
processor and vLLM's chat endpoint build the same text as vinstruct."""

import pytest
from transformers import AutoTokenizer

from vinstruct.data.templates import TEMPLATES, get_template
from vinstruct.model.convert_chat import jinja_chat_template

CONVERSATION = [("human", "<image>\nWhat is it?"), ("gpt", "A red circle."), ("human", "And its size?")]


def _messages(turns, system):
    head = [{"role": "system", "content": system}] if system is not None else []
    return head + [{"role": "user" if role == "human" else "assistant", "content": text} for role, text in turns]


@pytest.fixture(scope="module")
def tokenizer(tiny_parts):
    return AutoTokenizer.from_pretrained(str(tiny_parts[1]))


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("system", [None, "Answer in one word.", ""])
def test_jinja_template_renders_our_prompt(tokenizer, name, system):
    turns = CONVERSATION[:1] if name == "plain" else CONVERSATION  # plain is one image-caption exchange
    tokenizer.chat_template = jinja_chat_template(name)
    rendered = tokenizer.apply_chat_template(_messages(turns, system), tokenize=False, add_generation_prompt=True)
    assert rendered == get_template(name).generation_prompt(turns, system, tokenizer.eos_token)


@pytest.mark.parametrize("name", ["vicuna_v1", "chatml", "llama_2"])
def test_openai_style_content_lists_put_the_image_first(tokenizer, name):
    tokenizer.chat_template = jinja_chat_template(name)
    parts = [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": "data:,"}}]
    as_list = tokenizer.apply_chat_template([{"role": "user", "content": parts}], tokenize=False)
    as_string = tokenizer.apply_chat_template([{"role": "user", "content": "<image>\nWhat is it?"}], tokenize=False)
    assert as_list == as_string
