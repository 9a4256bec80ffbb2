"""`vinstruct serve` fuzzed from its own OpenAPI document: no generated request gets a server error.

Schemathesis reads GET /openapi.json from a real server and generates requests that follow the
schema (positive) and requests that break it (negative); every answer must be a documented status
with a body matching its documented shape, and never a 5xx.
"""

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
