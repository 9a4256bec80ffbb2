"""`vinstruct chat` driven through a pseudo-terminal, and the conversation rules behind it."""

import json
import sys

import pexpect
import pytest
from PIL import Image

from vinstruct.data.encoding import EncodingSpec, encode_prompt
from vinstruct.data.templates import get_template
from vinstruct.model.generation import SamplingParams
from vinstruct.serve.conversation import Conversation
from vinstruct.serve.engine import ContextLengthError


def _greedy(model, turns, image_paths, max_new_tokens=8):
    spec = EncodingSpec.for_model(model)
    stops = get_template(spec.template).stop_strings(model.tokenizer.eos_token)
    pixels = model.image_processor.load(image_paths) if image_paths else None
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=stops)
    return model.generate([encode_prompt(spec, turns)], pixels, params=params)[0].text


def _reply(child) -> str:
    """The assistant's streamed reply, read up to the next prompt."""
    child.expect_exact("assistant> ")
    child.expect_exact("\r\nyou> ")
    return child.before.replace("\r\n", "\n")


def test_two_turns_with_an_image_then_reset_save_and_quit(tiny_checkpoint, tiny_model, color_images, tmp_path):
    red = color_images / "red.png"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "vinstruct", "chat", "--model", str(tiny_checkpoint), "--image", str(red), "--temperature", "0",
         "--max-tokens", "8", "--threads", "2"],
        encoding="utf-8", timeout=120, dimensions=(50, 400),
    )
    child.expect_exact("will be sent with your next message")
    child.expect_exact("you> ")

    child.sendline("What colour is it?")
    first = _reply(child)
    turns = [("human", "<image>\nWhat colour is it?")]
    assert first and first == _greedy(tiny_model, turns, [red])

    child.sendline("And what shape?")
    second = _reply(child)
    turns += [("gpt", first), ("human", "And what shape?")]
    assert second == _greedy(tiny_model, turns, [red])

    saved = tmp_path / "chat.json"
    child.sendline(f"/save {saved}")
    child.expect_exact("(saved 4 turns")
    child.expect_exact("you> ")
    sample = json.loads(saved.read_text())[0]
    assert sample["image"] == str(red.resolve())
    assert [t["from"] for t in sample["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert sample["conversations"][0]["value"] == "<image>\nWhat colour is it?"
    assert sample["conversations"][3]["value"] == second

    child.sendline("/reset")
    child.expect_exact("(conversation cleared)")
    child.expect_exact("you> ")
    child.sendline("hello")
    assert _reply(child) == _greedy(tiny_model, [("human", "hello")], [])  # no image, no history

    child.sendline("/image /no/such/file.png")
    child.expect_exact("error: image file not found: /no/such/file.png")
    child.expect_exact("you> ")
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_chat_refuses_a_missing_image_on_the_command_line(tiny_checkpoint, capsys):
    from vinstruct.cli import main

    assert main(["chat", "--model", str(tiny_checkpoint), "--image", "/no/such.png"]) == 1
    assert "image file not found: /no/such.png" in capsys.readouterr().err


def _spec(tiny_model):
    return EncodingSpec.for_model(tiny_model)


def test_old_exchanges_are_dropped_whole_with_their_images(tiny_model):
    spec = _spec(tiny_model)
    image = Image.new("RGB", (8, 8), (1, 2, 3))
    conversation = Conversation()
    conversation.add_user("first question", [image], ["a.png"])
    conversation.add_reply("red " * 60)
    conversation.add_user("second question", [image], ["b.png"])
    conversation.add_reply("blue " * 60)
    conversation.add_user("third question")
    full, _ = conversation.prompt(spec, 1, 10_000)
    budget = len(full) - 10  # too small for everything: the oldest exchange must go
    ids, dropped = conversation.prompt(spec, 1, budget)
    assert dropped == 1
    assert conversation.turns[0] == ("human", "<image>\nsecond question")
    assert conversation.image_names == ["b.png"] and len(conversation.images) == 1
    assert ids.count(tiny_model.image_token_id) == tiny_model.num_image_tokens  # the kept image is whole
    assert len(ids) + 1 <= budget


def test_a_message_that_cannot_fit_is_an_error(tiny_model):
    conversation = Conversation()
    conversation.add_user("word " * 300)
    with pytest.raises(ContextLengthError, match="context"):
        conversation.prompt(_spec(tiny_model), 16, 200)


def test_typed_image_markers_stay_text(tiny_model):
    conversation = Conversation()
    conversation.add_user("what is <image>?")
    ids, _ = conversation.prompt(_spec(tiny_model), 1, 10_000)
    assert tiny_model.image_token_id not in ids


@pytest.mark.parametrize("command", ["chat", "ui"])
def test_help_names_the_options(command, capsys):
    from vinstruct.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    for option in ("--model", "--temperature", "--max-batch-size", "--prefix-cache-tokens"):
        assert option in out


def test_a_stage_one_plain_template_refuses_a_second_turn_clearly(tiny_model):
    from vinstruct.errors import VinstructError

    spec = EncodingSpec.for_model(tiny_model, template="plain")
    conversation = Conversation()
    conversation.add_user("describe", [Image.new("RGB", (8, 8))])
    conversation.add_reply("a red square")
    conversation.add_user("and then?")
    with pytest.raises(VinstructError, match="plain"):
        conversation.prompt(spec, 4, 10_000)
