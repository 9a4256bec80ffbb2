"""`vinstruct serve` fuzzed from its own OpenAPI document: no generated request gets a server error.

Schemathesis reads GET /openapi.json from a real server and generates requests that follow the
schema (positive) and requests that break it (negative); every answer must be a documented status
with a body matching its documented shape, and never a 5xx. Most of what it generates breaks a rule
a schema cannot state (a conversation starts and ends with the user), so a second test generates
well-formed conversations with every sampling field drawn from the ranges the document states,
edges included: each of those must be answered in full.
"""

import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from serving import vinstruct_process

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def server(tiny_checkpoint, color_images, tmp_path_factory):
    """Small limits keep every accepted request cheap: at most 2 choices of 8 tokens."""
    log = tmp_path_factory.mktemp("fuzz") / "server.log"
    args = ["serve", "--model", str(tiny_checkpoint), "--port", "0", "--threads", "1", "--model-name", "tiny",
            "--max-tokens-limit", "8", "--max-n", "2", "--allow-dir", str(color_images)]
    with vinstruct_process(args, r"at (http://\S+)/v1", log=log, max_memory_bytes=3 * 1024**3) as (_, url):
        yield url


@pytest.mark.slow
def test_generated_requests_never_get_a_server_error(server):
    schema = schemathesis.openapi.from_url(server + "/openapi.json")
    cases = st.one_of([op.ok().as_strategy(generation_mode=mode)
                       for op in schema.get_all_operations()
                       for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)])

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def answered_without_a_server_error(case):
        response = case.call(base_url=server, timeout=30)
        case.validate_response(response, checks=CHECKS)

    answered_without_a_server_error()


def _in_range(field: dict, edges: list[float]):
    """Any number the document allows for a field, its edges and the given awkward values included."""
    low, high = field["minimum"], field["maximum"]
    return st.none() | st.sampled_from([low, high, *edges]) | st.floats(low, high)


@st.composite
def conversations(draw, document: dict) -> dict:
    """A request the document and the conversation rules both allow, sampling fields anywhere in range."""
    fields = document["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    text = st.text(max_size=30).filter(lambda t: "<image>" not in t)
    messages = [{"role": "system", "content": draw(text)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 2))):
        messages += [{"role": "user", "content": draw(text)}, {"role": "assistant", "content": draw(text)}]
    messages.append({"role": "user", "content": draw(text)})
    body = {
        "model": fields["model"]["enum"][0], "messages": messages, "stream": draw(st.booleans()),
        "temperature": draw(_in_range(fields["temperature"], [5e-324, 1e-45, 1e-6, 1e-5])),
        "top_p": draw(_in_range(fields["top_p"], [5e-324, 1e-300, 1e-45])),
        "max_tokens": draw(st.integers(1, fields["max_tokens"]["maximum"])),
        "n": draw(st.integers(1, fields["n"]["maximum"])),
        "seed": draw(st.none() | st.integers(fields["seed"]["minimum"], fields["seed"]["maximum"])),
    }
    if draw(st.booleans()):
        most = fields["stop"]["oneOf"][1]["maxItems"]
        body["stop"] = draw(st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=most))
    return body


@pytest.mark.slow
def test_every_well_formed_conversation_is_answered_whatever_its_sampling_values(server):
    document = httpx.get(server + "/openapi.json").json()

    @settings(max_examples=80, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(body=conversations(document))
    def answered(body):
        response = httpx.post(server + "/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == 200, response.text
        if body["stream"]:
            events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            assert not any("error" in json.loads(e) for e in events[:-1])
        else:
            assert len(response.json()["choices"]) == body["n"]

    answered()
