"""`vinstruct ui` in headless Chromium, and the UI's handlers as plain Python."""

import os
import tempfile
from pathlib import Path

import pytest
from serving import vinstruct_process

from vinstruct.data.encoding import EncodingSpec, encode_prompt
from vinstruct.data.templates import get_template
from vinstruct.model.generation import SamplingParams
from vinstruct.serve.assistant import Assistant
from vinstruct.serve.engine import Engine
from vinstruct.serve.ui import ChatController, example_images

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _browser_or_skip():
    if os.path.exists(CHROMIUM):
        return
    if os.environ.get("VINSTRUCT_REQUIRE_BROWSER"):
        pytest.fail(f"VINSTRUCT_REQUIRE_BROWSER is set but {CHROMIUM} is missing (apt-get install chromium)")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium); set VINSTRUCT_REQUIRE_BROWSER=1 to require it")


def _greedy(model, turns, image_path, max_new_tokens):
    spec = EncodingSpec.for_model(model)
    stops = get_template(spec.template).stop_strings(model.tokenizer.eos_token)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=stops)
    pixels = model.image_processor.load([image_path])
    return model.generate([encode_prompt(spec, turns)], pixels, params=params)[0].text


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.browser
@pytest.mark.slow
def test_upload_ask_and_read_the_answer_in_chromium(tiny_checkpoint, tiny_model, color_images):
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    red = color_images / "red.png"
    args = ["ui", "--model", str(tiny_checkpoint), "--port", "0", "--examples", str(color_images),
            "--temperature", "0", "--max-tokens", "10", "--threads", "2"]
    expected = _greedy(tiny_model, [("human", "<image>\nWhat colour is it?")], red, 10)
    ARTIFACTS.mkdir(exist_ok=True)
    with vinstruct_process(args, r"vinstruct ui: (http://\S+)", env={"GRADIO_ANALYTICS_ENABLED": "False"}) as (_, url), \
            sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, viewport={"width": 1280, "height": 900})
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("#question textarea", timeout=60_000)
            page.locator("#image input[type=file]").set_input_files(str(red))
            page.wait_for_selector("#image img", timeout=30_000)
            page.locator("#question textarea").fill("What colour is it?")
            page.locator("#send").click()
            page.wait_for_function("document.querySelector('#status')?.innerText.includes('Done')", timeout=120_000)
            answer = page.locator("#chatbot [data-testid='bot']").last.inner_text()
            page.screenshot(path=str(ARTIFACTS / "ui-answer.png"), full_page=True)

            page.locator("#question textarea").fill("Is it large?")
            page.locator("#send").click()
            page.wait_for_function(
                "document.querySelectorAll('#chatbot [data-testid=\"bot\"]').length == 2 && "
                "document.querySelector('#status')?.innerText.includes('Done')", timeout=120_000)
            status = page.locator("#status").inner_text()
            page.locator("#clear").click()
            page.wait_for_function("document.querySelector('#status')?.innerText.includes('cleared')")
            remaining = page.locator("#chatbot [data-testid='bot']").count()
        finally:
            browser.close()
    assert _words(answer) == _words(expected)
    assert "reused from the previous turn" in status and " 0 reused" not in status
    assert remaining == 0
    assert (ARTIFACTS / "ui-answer.png").stat().st_size > 0


# ---- the handlers without a browser ------------------------------------------------------------------------
@pytest.fixture
def controller(tiny_model):
    with Assistant(tiny_model, Engine(tiny_model), name="tiny") as assistant:
        yield ChatController(assistant)


def _drain(events):
    last = None
    for last in events:
        pass
    return last


def test_send_streams_then_regenerate_and_clear(controller, tiny_model, color_images):
    red = str(color_images / "red.png")
    state = controller.new_state()
    updates = list(controller.send("What colour is it?", red, [], state, 0.0, 1.0, 8))
    history, state, status, box = updates[-1]
    assert len(updates) > 2  # the reply arrived in pieces
    assert [m["role"] for m in history] == ["user", "user", "assistant"]
    assert history[0]["content"] == {"path": red}
    assert history[2]["content"] == _greedy(tiny_model, [("human", "<image>\nWhat colour is it?")], red, 8)
    assert status.startswith("Done") and box == ""

    again, state, _, _ = _drain(controller.regenerate(history, state, 0.0, 1.0, 8))
    assert again == history  # greedy: the same reply again, not a second one
    assert len(state.conversation.turns) == 2

    followup, state, status, _ = _drain(controller.send("Is it big?", red, again, state, 0.0, 1.0, 8))
    assert [m["role"] for m in followup][-2:] == ["user", "assistant"]
    assert len(state.conversation.images) == 1  # the same image is not attached twice
    assert " 0 reused" not in status

    history, state, status, _ = controller.clear()
    assert history == [] and state.conversation.turns == [] and "cleared" in status


def test_empty_message_is_not_sent(controller):
    history, state, status, _ = _drain(controller.send("   ", None, [], controller.new_state(), 0.2, 1.0, 8))
    assert history == [] and state.conversation.turns == [] and "question" in status


def test_examples_come_from_a_world_test_split_or_a_folder(tmp_path, color_images):
    world = tmp_path / "world" / "images" / "test"
    world.mkdir(parents=True)
    (world / "000001.png").write_bytes((color_images / "red.png").read_bytes())
    assert example_images(tmp_path / "world") == [str(world / "000001.png")]
    assert len(example_images(color_images)) == 3
    assert example_images(None) == []
