"""`vinstruct serve` against hostile input: every bad request gets a 4xx naming the problem (or, when
the server itself fails, a JSON 500 for that request only), its neighbours are untouched, memory stays
bounded, and the connection stays usable."""

import base64
import concurrent.futures
import io
import struct
import threading
import time
import zlib

import httpx
import pytest
import schemathesis
from PIL import Image
from serving import peak_rss_growth, thread_server, vinstruct_process

import vinstruct.model.decoding as engine_module
from vinstruct.serve.api import create_app
from vinstruct.serve.assistant import Assistant
from vinstruct.serve.engine import Engine

MB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    """A real `vinstruct serve` process, its address space capped at 3 GB: should an image make it
    allocate gigabytes again, it fails with a MemoryError instead of taking the machine down."""
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    args = ["serve", "--model", str(tiny_checkpoint), "--port", "0", "--threads", "1", "--model-name", "tiny"]
    with vinstruct_process(args, r"at (http://\S+)/v1", log=log, max_memory_bytes=3 * 1024 * MB) as (process, url):
        yield process, url


@pytest.fixture
def url(server):
    return server[1]


def _post(client: httpx.Client, url: str, body) -> httpx.Response:
    if isinstance(body, bytes):
        return client.post(url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    return client.post(url + "/v1/chat/completions", json=body)


def _ask(url: str, body) -> httpx.Response:
    with httpx.Client(timeout=120) as client:
        return _post(client, url, body)


def _hi(**fields) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **fields}


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# ---- images, built byte by byte -----------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, idat: list[bytes] | None = None) -> bytes:
    """An RGB PNG; by default red pixels whose compressed stream is split across two IDAT chunks."""
    if idat is None:
        stream = zlib.compress(b"".join(b"\x00" + b"\xc8\x0a\x0a" * width for _ in range(height)))
        idat = [stream[: len(stream) // 2], stream[len(stream) // 2:]]
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + b"".join(_chunk(b"IDAT", d) for d in idat) + _chunk(b"IEND", b"")


def _second_idat_header_damaged() -> bytes:
    data = bytearray(_png(64, 64))
    second = data.index(b"IDAT", data.index(b"IDAT") + 4)
    data[second - 4:second + 4] = b"\x00\x00\x10\x00\x9c\x01\xff\x00"  # length and chunk type overwritten
    return bytes(data)


def _encoded(fmt: str, size=(96, 64)) -> bytes:
    """A noisy picture (so that its compressed data is long enough to cut) in PIL's encoding of `fmt`."""
    out = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(out, fmt)
    return out.getvalue()


def _strip(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


def _with_images(*images: bytes, mime: str = "image/png") -> dict:
    parts = [{"type": "image_url", "image_url": {"url": f"data:{mime};base64,{base64.b64encode(i).decode()}"}}
             for i in images]
    return _hi(messages=[{"role": "user", "content": parts + [{"type": "text", "text": "What is it?"}]}])


def test_the_openapi_document_states_this_servers_model_and_limits(url):
    document = httpx.get(url + "/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    operations = {op.ok().label for op in schema.get_all_operations()}
    assert operations == {"POST /v1/chat/completions", "GET /v1/models", "GET /v1/models/{model_id}", "GET /health"}
    request = document["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert request["model"]["enum"] == ["tiny"] and request["max_tokens"]["maximum"] == 1024
    assert (request["temperature"]["minimum"], request["temperature"]["maximum"]) == (0, 2)


# ---- sampling -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields", [
    {"temperature": 1e-45}, {"temperature": 5e-324}, {"temperature": 1e-5}, {"temperature": 2},
    {"temperature": 1, "top_p": 1e-300}, {"temperature": 2, "top_p": 5e-324}, {"temperature": 1, "top_p": 0},
    {"temperature": 1e-45, "top_p": 1e-300},
], ids=str)
def test_sampling_values_anywhere_in_their_documented_ranges_are_answered(url, fields):
    response = _ask(url, _hi(seed=5, max_tokens=6, **fields))
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] >= 1


def test_a_vanishing_temperature_or_top_p_decodes_greedily(url):
    greedy = _ask(url, _hi(temperature=0, max_tokens=8)).json()["choices"][0]["message"]["content"]
    for fields in ({"temperature": 1e-45}, {"temperature": 1.5, "top_p": 0}, {"temperature": 1.0, "top_p": 1e-300}):
        assert _ask(url, _hi(max_tokens=8, seed=3, **fields)).json()["choices"][0]["message"]["content"] == greedy


# ---- images ---------------------------------------------------------------------------------------------
DAMAGED_IMAGES = {
    "PNG whose second IDAT chunk header is damaged": (_second_idat_header_damaged(), "image/png"),
    "PNG whose second IDAT chunk holds garbage": (_png(64, 64, [zlib.compress(b"\x00" * 50)[:20], b"\xff" * 40]),
                                                  "image/png"),
    "PNG cut in the middle": (_png(64, 64)[:90], "image/png"),
    "PNG whose header checksum is wrong": (_png(64, 64)[:29] + b"\x00\x00\x00\x00" + _png(64, 64)[33:], "image/png"),
    "JPEG cut in the middle": (_encoded("JPEG")[:-200], "image/jpeg"),
    "WebP cut in the middle": (_encoded("WEBP")[:-100], "image/webp"),
    "WebP with a garbage body": (_encoded("WEBP")[:20] + b"\x00" * 60, "image/webp"),
    "PNG declaring 0x5 pixels": (_png(0, 5, [b""]), "image/png"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_IMAGES))
def test_damaged_images_get_a_400_naming_the_field(url, case):
    data, mime = DAMAGED_IMAGES[case]
    response = _ask(url, _with_images(data, mime=mime))
    assert response.status_code == 400, response.text
    error = _error(response)
    assert error["code"] == "invalid_image" and "messages[0].content[0].image_url.url" in error["message"]


@pytest.mark.parametrize("width, height", [(60000, 60000), (20000, 20000)])
def test_a_header_claiming_a_huge_image_gets_413_before_decoding(url, width, height):
    response = _ask(url, _with_images(_png(width, height, [zlib.compress(b"\x00" * 64)])))
    assert response.status_code == 413, response.text
    assert _error(response)["code"] == "image_too_large"


def test_a_thin_strip_is_refused_by_its_padded_size_and_costs_no_memory(server):
    process, url = server
    strip = _strip(1, 16000)
    assert len(strip) < 200  # a tiny file; padded to a square it would be 16000 x 16000 pixels
    responses = []
    growth = peak_rss_growth(process.pid, lambda: responses.append(_ask(url, _with_images(strip))))
    assert responses[0].status_code == 413, responses[0].text
    assert "padded to a square" in _error(responses[0])["message"]
    assert growth < 100 * MB, f"server memory rose by {growth / MB:.0f} MB"


@pytest.mark.parametrize("images", [[_strip(1, 40000)], [_strip(1, 16000)] * 4], ids=["1x40000", "4 x 1x16000"])
def test_longer_or_repeated_strips_are_refused_cleanly(url, images):
    response = _ask(url, _with_images(*images))
    assert response.status_code == 413 and _error(response)["code"] == "image_too_large", response.text
    assert _ask(url, _hi()).status_code == 200  # and the server is as it was


def test_an_image_more_elongated_than_the_limit_is_refused(url):
    response = _ask(url, _with_images(_strip(300, 3)))  # 100:1, well within the pixel limit
    assert response.status_code == 400 and "elongated" in _error(response)["message"], response.text
    assert _ask(url, _with_images(_strip(120, 4))).status_code == 200  # 30:1 is fine


# ---- request bodies -------------------------------------------------------------------------------------
def test_json_nested_100000_deep_is_refused_before_parsing(url):
    deep = b'{"model": "tiny", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = _ask(url, deep)
    assert response.status_code == 400, response.text
    assert "levels deep" in _error(response)["message"]


@pytest.mark.parametrize("body, field", [
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "a\\ud800b"}]}', "messages[0].content"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
     "messages[0].content[0].text"),
    (b'{"model": "tiny", "messages": [{"role": "system", "content": "\\ud83d"}, {"role": "user", "content": "hi"}]}',
     "messages[0].content"),
    (b'{"model": "tiny", "stop": ["\\udc00"], "messages": [{"role": "user", "content": "hi"}]}', "stop[0]"),
    (b'{"model": "tiny", "\\ud800": 1, "messages": [{"role": "user", "content": "hi"}]}', "body (a key)"),
])
def test_lone_surrogates_in_text_are_refused_naming_the_field(url, body, field):
    response = _ask(url, body)
    assert response.status_code == 400, response.text
    error = _error(response)
    assert error["code"] == "invalid_text" and error["param"] == field


def test_a_surrogate_pair_is_a_character_and_is_accepted(url):
    body = b'{"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "smile \\ud83d\\ude00"}]}'
    assert _ask(url, body).status_code == 200


@pytest.mark.parametrize("body", [
    b'{"model": "tiny", "temperature": NaN, "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "tiny", "top_p": -Infinity, "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "tiny", "seed": ' + b"9" * 5000 + b', "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e999}',
    b'\xff\xfe{"model": "tiny"}',
], ids=["NaN", "-Infinity", "5000 digits", "1e999", "bad UTF-8"])
def test_numbers_and_bytes_json_should_not_hold_are_a_400(url, body):
    response = _ask(url, body)
    assert response.status_code == 400, response.text


def test_one_keep_alive_connection_survives_every_kind_of_refusal(url):
    bad = [_with_images(_second_idat_header_damaged()), _with_images(_strip(1, 16000)), _hi(temperature=3),
           b"[" * 50_000, b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}']
    with httpx.Client(timeout=120) as client:
        addresses = set()
        for body in bad:
            refused, fine = _post(client, url, body), _post(client, url, _hi())
            assert 400 <= refused.status_code < 500 and fine.status_code == 200
            addresses |= {r.extensions["network_stream"].get_extra_info("client_addr") for r in (refused, fine)}
    assert len(addresses) == 1  # every request went over the same connection


# ---- failures inside the server: in-process servers with a fault injected -------------------------------
@pytest.fixture
def assistant(tiny_model, one_thread):
    # No end-of-sequence token: every reply runs to max_tokens, so the long ones really stay in the batch.
    with Assistant(tiny_model, Engine(tiny_model, max_batch_size=8, eos_token_ids=[]), name="tiny") as assistant:
        yield assistant


def test_an_unexpected_error_is_a_json_500_and_the_connection_stays_usable(assistant):
    prompt_ids = assistant.prompt_ids

    def fragile_prompt_ids(turns, system=None):
        if "explode" in turns[-1][1]:
            raise KeyError("a bug the server did not foresee")
        return prompt_ids(turns, system)

    assistant.prompt_ids = fragile_prompt_ids
    with thread_server(create_app(assistant)) as url, httpx.Client(timeout=60) as client:
        failed = _post(client, url, _hi(messages=[{"role": "user", "content": "please explode"}]))
        after = _post(client, url, _hi())
        assert failed.status_code == 500 and after.status_code == 200
        assert _error(failed)["type"] == "server_error" and "KeyError" in _error(failed)["message"]
        stream = lambda r: r.extensions["network_stream"].get_extra_info("client_addr")  # noqa: E731
        assert stream(failed) == stream(after)  # the same connection carried both


FAILING_SEED = 666
BAD_NEIGHBOURS = {
    "temperature 1e-45": ({"temperature": 1e-45}, 200),
    "sampling fails at its third token": ({"temperature": 1.0, "seed": FAILING_SEED}, 500),
}


@pytest.mark.parametrize("case", sorted(BAD_NEIGHBOURS))
def test_a_bad_request_joining_five_running_ones_fails_alone(assistant, monkeypatch, case):
    fields, status = BAD_NEIGHBOURS[case]
    engine, forward, real_sample_token = assistant.engine, assistant.model.llm.forward, engine_module.sample_token
    sampled = []

    def sample_token(logits, params, generator):  # a fault in one row's sampling, injected
        if params.seed == FAILING_SEED:
            sampled.append(1)
            if len(sampled) == 3:
                raise RuntimeError("sampling exploded")
        return real_sample_token(logits, params, generator)

    all_arrived, held, release = threading.Event(), threading.Event(), threading.Event()

    def choreographed_forward(*args, **kwargs):
        # First all five long requests arrive, then, once they decode together, the engine waits until the
        # bad request is queued, so that it joins a batch in full flight.
        deadline = time.monotonic() + 60
        while not all_arrived.is_set() and engine.load < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        all_arrived.set()
        if engine.stats.max_batch >= 5 and not release.is_set():
            held.set()
            release.wait(60)
        return forward(*args, **kwargs)

    monkeypatch.setattr(engine_module, "sample_token", sample_token)
    assistant.model.llm.forward = choreographed_forward
    long = [_hi(max_tokens=24, temperature=0, messages=[{"role": "user", "content": f"Tell story {i}."}])
            for i in range(5)]
    with thread_server(create_app(assistant)) as url, concurrent.futures.ThreadPoolExecutor(6) as pool:
        running = [pool.submit(_ask, url, body) for body in long]
        assert held.wait(120)
        bad = pool.submit(_ask, url, _hi(max_tokens=8, **fields))
        deadline = time.monotonic() + 60
        while engine.load < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        neighbours, bad = [f.result() for f in running], bad.result()
        alone = [f.result() for f in [pool.submit(_ask, url, body) for body in long]]  # nobody misbehaving
    assert bad.status_code == status, bad.text
    if status == 500:
        assert "sampling exploded" in _error(bad)["message"]
    assert [r.status_code for r in neighbours] == [200] * 5
    assert [r.json()["usage"]["completion_tokens"] for r in neighbours] == [24] * 5
    assert [r.json()["choices"][0]["message"]["content"] for r in neighbours] == \
        [r.json()["choices"][0]["message"]["content"] for r in alone]
