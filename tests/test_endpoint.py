"""The one endpoint client as the teacher and the judges see it: keys resolved one way, requests as data."""

from __future__ import annotations

import asyncio

import pytest
from openai.types.chat import ChatCompletion

from vinstruct.endpoint.client import EndpointClient, EndpointConfig
from vinstruct.errors import VinstructError
from vinstruct.eval.endpoints import make_judge, make_teacher

LOCAL, REMOTE = "http://127.0.0.1:9/v1", "https://api.example.com/v1"


def _keys(url: str, api_key: str | None = None) -> tuple[str, str]:
    return make_judge(url, api_key=api_key).config.endpoint.api_key, make_teacher(url, api_key=api_key).api_key


def test_judge_and_teacher_options_resolve_keys_the_same_way(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert _keys(LOCAL) == ("unused-local-key", "unused-local-key")  # a loopback server needs none
    assert _keys(REMOTE, "sk-given") == ("sk-given", "sk-given")
    for make in (make_judge, make_teacher):
        with pytest.raises(VinstructError, match="no API key for https://api.example.com/v1: set OPENAI_API_KEY"):
            make(REMOTE)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert _keys(REMOTE) == ("sk-from-env", "sk-from-env")
    assert _keys(REMOTE, "sk-given") == ("sk-given", "sk-given")  # the option wins over the environment


def test_a_reply_that_did_not_come_over_http_is_read_and_counted_the_same_way():
    client = EndpointClient(EndpointConfig(base_url=LOCAL, model="teacher", max_tokens=64, price_in=2.0,
                                           price_out=8.0, extra_body={"top_p": 0.9}))
    body = client.body([{"role": "user", "content": "Describe the image."}], seed=7)
    assert body == {"model": "teacher", "messages": [{"role": "user", "content": "Describe the image."}],
                    "max_tokens": 64, "seed": 7, "top_p": 0.9}
    response = ChatCompletion.model_validate({
        "id": "c1", "object": "chat.completion", "created": 0, "model": "teacher",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "A red circle."}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}})
    completion = client.read(response)  # e.g. a line of a batch job's output file
    assert (completion.text, completion.prompt_tokens, completion.completion_tokens) == ("A red circle.", 1000, 500)
    assert client.usage.cost == pytest.approx(1000 * 2.0 / 1e6 + 500 * 8.0 / 1e6)
    asyncio.run(client.close())
