"""`vinstruct serve` through the real openai SDK: completions with images, streaming, auth, limits, errors."""

import base64
import concurrent.futures
import http.server
import json
import shutil
import threading
import time

import httpx
import openai
import pytest
from serving import thread_server, vinstruct_process

from vinstruct.data.encoding import EncodingSpec, encode_prompt
from vinstruct.model.generation import SamplingParams
from vinstruct.serve.api import ServerSettings, create_app
from vinstruct.serve.assistant import Assistant
from vinstruct.serve.engine import Engine
from vinstruct.serve.images import ImagePolicy, image_data_url

KEY = "test-key-3141"
QUESTION = "What colour is the shape?"


@pytest.fixture(scope="module")
def server(tiny_checkpoint, color_images, tmp_path_factory):
    """A real `vinstruct serve` process with auth, an allowed image directory and a small body limit."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    args = ["serve", "--model", str(tiny_checkpoint), "--port", "0", "--api-key-env", "VINSTRUCT_TEST_KEY",
            "--allow-dir", str(color_images), "--max-body-mb", "0.25", "--threads", "2", "--model-name", "tiny"]
    with vinstruct_process(args, r"at (http://\S+)/v1", env={"VINSTRUCT_TEST_KEY": KEY}, log=log) as (_, url):
        yield url


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=120)


def _image_question(url, text=QUESTION):
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}]


def _predict_answer(tiny_checkpoint, color_images, text=QUESTION, max_new_tokens=12):
    """What batch prediction computes for the same question: `model.generate`, greedy, template stops."""
    from vinstruct import load
    from vinstruct.data.templates import get_template

    model = load(tiny_checkpoint)
    spec = EncodingSpec.for_model(model)
    prompt = encode_prompt(spec, [("human", "<image>\n" + text)])
    stops = get_template(spec.template).stop_strings(model.tokenizer.eos_token)
    pixels = model.image_processor.load([color_images / "red.png"])
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=stops)
    return model.generate([prompt], pixels, params=params)[0], len(prompt)


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(server + "/health").json()["status"] == "ok"


def test_wrong_or_missing_key_is_rejected_with_401(server):
    for key in ("wrong-key", ""):
        bad = openai.OpenAI(base_url=server + "/v1", api_key=key or "-", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            bad.models.list()
        assert info.value.status_code == 401
        assert "API key" in info.value.body["message"]
    response = httpx.post(server + "/v1/chat/completions", json={"model": "tiny", "messages": []})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_greedy_answers_equal_vinstruct_predict(client, tiny_checkpoint, color_images, tmp_path):
    from vinstruct.cli import main
    from vinstruct.data.formats import read_jsonl, write_jsonl

    names = ["red.png", "blue.png", "green.png"]
    write_jsonl(tmp_path / "q.jsonl", [{"question_id": i, "image": n, "text": QUESTION} for i, n in enumerate(names)])
    assert main(["predict", "--model", str(tiny_checkpoint), "--questions", str(tmp_path / "q.jsonl"),
                 "--answers", str(tmp_path / "a.jsonl"), "--image-dir", str(color_images), "--batch-size", "3",
                 "--max-new-tokens", "12", "--quiet"]) == 0
    predicted = {row["question_id"]: row["text"] for row in read_jsonl(tmp_path / "a.jsonl")}
    for i, name in enumerate(names):
        reply = client.chat.completions.create(
            model="tiny", messages=_image_question(image_data_url(color_images / name)), temperature=0, max_tokens=12)
        assert reply.choices[0].message.content == predicted[i]


def test_usage_counts_the_prompt_and_the_reply(client, tiny_checkpoint, color_images):
    expected, prompt_tokens = _predict_answer(tiny_checkpoint, color_images)
    reply = client.chat.completions.create(
        model="tiny", messages=_image_question(image_data_url(color_images / "red.png")), temperature=0, max_tokens=12
    )
    assert reply.choices[0].message.content == expected.text
    assert reply.choices[0].finish_reason == expected.finish_reason
    assert reply.usage.prompt_tokens == prompt_tokens
    assert reply.usage.completion_tokens == len(expected.token_ids)
    assert reply.usage.total_tokens == prompt_tokens + len(expected.token_ids)


def test_streaming_gives_the_same_answer_in_chunks(client, tiny_checkpoint, color_images):
    expected, _ = _predict_answer(tiny_checkpoint, color_images)
    stream = client.chat.completions.create(
        model="tiny", messages=_image_question(image_data_url(color_images / "red.png")), temperature=0,
        max_tokens=12, stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(pieces) == expected.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == expected.finish_reason
    assert chunks[-1].usage.completion_tokens == len(expected.token_ids)


def test_raw_event_stream_ends_with_done(server, color_images):
    body = {"model": "tiny", "messages": _image_question(image_data_url(color_images / "blue.png")),
            "max_tokens": 4, "stream": True, "temperature": 0}
    with httpx.stream("POST", server + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"


def test_local_file_under_allowed_dir_is_read(client, color_images):
    reply = client.chat.completions.create(
        model="tiny", messages=_image_question(str(color_images / "green.png")), temperature=0, max_tokens=3
    )
    assert reply.choices[0].message.content is not None


def test_second_turn_is_served_from_the_prefix_cache(client, color_images):
    messages = _image_question(image_data_url(color_images / "green.png"), "Describe it.")
    first = client.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=8)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Is it large?"}]
    second = client.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=8)
    assert second.usage.prompt_tokens_details.cached_tokens > first.usage.prompt_tokens // 2


def test_n_choices_with_a_seed_are_reproducible(client, color_images):
    ask = dict(model="tiny", messages=_image_question(image_data_url(color_images / "red.png")),
               temperature=1.0, top_p=0.95, max_tokens=8, n=3, seed=11)
    first, again = client.chat.completions.create(**ask), client.chat.completions.create(**ask)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in again.choices]
    assert len(set(texts)) > 1  # each choice samples with its own seed (seed, seed + 1, ...)
    assert 3 <= first.usage.completion_tokens <= 3 * 8


def test_stop_strings_end_the_reply(client, color_images):
    ask = dict(model="tiny", messages=_image_question(image_data_url(color_images / "red.png")), temperature=0,
               max_tokens=16)
    full = client.chat.completions.create(**ask).choices[0].message.content
    stop = full[len(full) // 2:][:2]
    cut = client.chat.completions.create(**ask, stop=[stop]).choices[0]
    assert cut.message.content == full[: full.find(stop)]
    assert cut.finish_reason == "stop"


def _status_and_message(call):
    with pytest.raises(openai.APIStatusError) as info:
        call()
    return info.value.status_code, info.value.body["message"]


BAD_IMAGES = {
    "invalid base64": ("data:image/png;base64,@@not*base64@@", 400, "invalid base64"),
    "not an image": ("data:image/png;base64," + base64.b64encode(b"plain text, not pixels").decode(), 400,
                     "not an image"),
    "remote url": ("https://example.com/cat.png", 400, "remote image URLs are refused"),
    "path outside allowed dir": ("/etc/hostname", 403, "outside the allowed image directories"),
    "wrong data url type": ("data:text/plain;base64,aGVsbG8=", 400, "is not image/png"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_images_get_a_clear_4xx_and_the_server_keeps_serving(client, case):
    url, status, words = BAD_IMAGES[case]
    got_status, message = _status_and_message(
        lambda: client.chat.completions.create(model="tiny", messages=_image_question(url), max_tokens=2)
    )
    assert (got_status, words in message) == (status, True), message
    assert "image_url.url" in message  # it names the field at fault
    assert client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=2).choices[0].message.content is not None


def test_oversized_body_gets_413(client):
    huge = "word " * 80_000  # 400 kB against a 0.25 MB limit
    status, message = _status_and_message(
        lambda: client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": huge}])
    )
    assert status == 413 and "larger than the limit" in message
    assert client.models.list().data


@pytest.mark.parametrize("change, status, words", [
    ({"model": "gpt-4o"}, 404, "does not exist"),
    ({"temperature": 5}, 400, "'temperature' must be between 0 and 2"),
    ({"max_tokens": 100000}, 400, "'max_tokens' must be between"),
    ({"messages": [{"role": "assistant", "content": "hello"}]}, 400, "start with a user message"),
    ({"messages": [{"role": "user", "content": "<image> sneaky"}]}, 400, "send images as image_url parts"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}] * 5}]}, 400,
     "at most 4"),
])
def test_invalid_requests_name_the_problem(client, change, status, words):
    request = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **change}
    got, message = _status_and_message(lambda: client.chat.completions.create(**request))
    assert got == status and words in message, message


def test_invalid_json_gets_400_in_openai_shape(server):
    response = httpx.post(server + "/v1/chat/completions", content=b"{not json",
                          headers={"Authorization": f"Bearer {KEY}", "content-type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_sixteen_concurrent_clients_are_all_answered(server, color_images):
    questions = [f"Question number {i}: what is here?" for i in range(16)]
    images = [image_data_url(color_images / name) for name in ("red.png", "blue.png", "green.png")]

    def ask(i):
        client = openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=300)
        reply = client.chat.completions.create(
            model="tiny", messages=_image_question(images[i % 3], questions[i]), temperature=0, max_tokens=6)
        return reply.choices[0].message.content, reply.usage.completion_tokens

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(16)))
    sequential = [ask(i) for i in (0, 7)]
    assert len(answers) == 16 and all(tokens >= 1 for _, tokens in answers)
    assert [answers[0], answers[7]] == sequential  # batching did not change the answers


# ---- in-process servers for settings the main one does not use ------------------------------------------
@pytest.fixture
def assistant(tiny_model):
    # No end-of-sequence token: replies run to max_tokens, so a long request really stays busy.
    with Assistant(tiny_model, Engine(tiny_model, max_batch_size=4, eos_token_ids=[]), name="tiny") as assistant:
        yield assistant


def test_full_server_answers_429_with_retry_after_then_recovers(assistant):
    gate, forward = threading.Event(), assistant.model.llm.forward

    def held_forward(*args, **kwargs):  # busy until released, then slow enough that the cancel lands first
        gate.wait(60)
        time.sleep(0.005)
        return forward(*args, **kwargs)

    assistant.model.llm.forward = held_forward
    app = create_app(assistant, ServerSettings(max_concurrent=1, retry_after_s=2))
    with thread_server(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        ask = dict(model="tiny", messages=[{"role": "user", "content": "hi"}])
        stream = client.chat.completions.create(**ask, max_tokens=300, stream=True)
        next(iter(stream))  # one long request is admitted
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(**ask, max_tokens=2)
        assert info.value.response.headers["retry-after"] == "2"
        assert info.value.body["code"] == "server_busy"
        stream.close()  # the client goes away: its generation is cancelled and the slot frees up
        gate.set()
        retrying = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=3, timeout=60)
        assert retrying.chat.completions.create(**ask, max_tokens=2).usage.completion_tokens == 2
    assert assistant.engine.stats.cancelled == 1


def test_tokens_reach_the_client_as_they_are_generated(assistant):
    step, forward = threading.Semaphore(1), assistant.model.llm.forward
    # Lockstep: the model takes its next step only after the client has seen a chunk (or after 1 s, when
    # the tokens so far are still held back as a possible start of a stop string).
    def lockstep_forward(*args, **kwargs):
        step.acquire(timeout=1)
        return forward(*args, **kwargs)

    assistant.model.llm.forward = lockstep_forward
    with thread_server(create_app(assistant)) as url:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": True}
        contents = []
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    delta = json.loads(line[6:])["choices"]
                    if delta and delta[0]["delta"].get("content"):
                        contents.append(delta[0]["delta"]["content"])
                        step.release()
    assert len(contents) >= 3  # not one chunk at the end


def test_remote_images_are_fetched_only_when_allowed(assistant, color_images, tmp_path):
    shutil.copy(color_images / "red.png", tmp_path / "red.png")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    images = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=images.serve_forever, daemon=True).start()
    remote = f"http://127.0.0.1:{images.server_address[1]}/red.png"
    try:
        app = create_app(assistant, ServerSettings(images=ImagePolicy(allow_remote=True)))
        with thread_server(app) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
            reply = client.chat.completions.create(model="tiny", messages=_image_question(remote), max_tokens=2,
                                                   temperature=0)
            missing = remote.replace("red.png", "nothing.png")
            status, message = _status_and_message(
                lambda: client.chat.completions.create(model="tiny", messages=_image_question(missing), max_tokens=2))
    finally:
        images.shutdown()
    assert reply.usage.prompt_tokens > assistant.model.num_image_tokens
    assert status == 400 and "HTTP 404" in message


def test_too_many_pixels_is_refused(assistant, tmp_path):
    from PIL import Image

    Image.new("RGB", (300, 300), (9, 9, 9)).save(tmp_path / "big.png")
    app = create_app(assistant, ServerSettings(images=ImagePolicy(max_pixels=256 * 256)))
    with thread_server(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        status, message = _status_and_message(lambda: client.chat.completions.create(
            model="tiny", messages=_image_question(image_data_url(tmp_path / "big.png")), max_tokens=2))
    assert status == 413 and "300x300" in message


def test_serve_help_lists_the_options(capsys):
    from vinstruct.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for option in ("--allow-dir", "--allow-remote-images", "--api-key-env", "--max-concurrent", "--max-body-mb"):
        assert option in out


def test_long_prompts_shorten_the_default_reply_but_refuse_an_explicit_one_that_cannot_fit(client):
    long_message = [{"role": "user", "content": "red circle " * 140}]
    fitted = client.chat.completions.create(model="tiny", messages=long_message, temperature=0)
    assert fitted.usage.prompt_tokens + fitted.usage.completion_tokens <= 512  # the tiny model's context
    status, message = _status_and_message(
        lambda: client.chat.completions.create(model="tiny", messages=long_message, max_tokens=400))
    assert status == 400 and "context" in message


def test_streaming_several_choices_keeps_them_apart(client, color_images):
    ask = dict(model="tiny", messages=_image_question(image_data_url(color_images / "blue.png")), temperature=0.9,
               max_tokens=6, n=2, seed=3)
    whole = client.chat.completions.create(**ask)
    texts, finished = {0: "", 1: ""}, set()
    for chunk in client.chat.completions.create(**ask, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished.add(choice.index)
    assert finished == {0, 1}
    assert [texts[0], texts[1]] == [c.message.content for c in whole.choices]
