"""One engine: generate(), batch prediction and the server give the same greedy tokens, whatever the batch."""

import threading

import pytest
import torch

from vinstruct.data.encoding import EncodingSpec, encode_prompt
from vinstruct.data.formats import read_jsonl
from vinstruct.errors import VinstructError
from vinstruct.eval.predict import PredictOptions, predict, prompt_text
from vinstruct.model.decoding import KVBudgetError, round_time
from vinstruct.model.generation import SamplingParams, left_pad
from vinstruct.serve.engine import Engine

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGES = ("red.png", "blue.png", "green.png")
QUESTIONS = ["What is it?", "Describe the picture in a few words please, with colours and shapes.", "Colour?",
             "Is there a circle?", "How many objects are there in this picture, and where are they?", "Hi",
             "Which shape is the largest one?", "Say something about the background of the image."]


def _questions(n: int) -> list[dict]:
    """n questions of mixed lengths; every third is text only."""
    return [{"question_id": f"q{i}", "text": QUESTIONS[i % len(QUESTIONS)],
             **({} if i % 3 == 2 else {"image": IMAGES[i % len(IMAGES)]})} for i in range(n)]


def _requests(model, questions, image_dir):
    """(prompt ids, pixel values or None) per question, as batch prediction builds them."""
    spec = EncodingSpec.for_model(model)
    out = []
    for q in questions:
        has_image = "image" in q
        ids = encode_prompt(spec, [("human", prompt_text(q, has_image))])
        out.append((ids, model.image_processor.load([image_dir / q["image"]]) if has_image else None))
    return out


def _stops(model):
    from vinstruct.data.templates import get_template

    return tuple(s for s in get_template(model.config.template).stop_strings(model.tokenizer.eos_token or "") if s)


@pytest.mark.parametrize("n", [1, 3, 8])
def test_generate_predict_and_server_agree_token_for_token(tiny_model, color_images, tmp_path, n):
    model = tiny_model.eval()
    questions = _questions(n)
    requests = _requests(model, questions, color_images)
    params = SamplingParams(max_new_tokens=12, stop=_stops(model))
    pixels = [p for _, p in requests if p is not None]
    together = model.generate([ids for ids, _ in requests], torch.cat(pixels) if pixels else None, params=params)
    alone = [model.generate([ids], p, params=params)[0] for ids, p in requests]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]

    # The server: two slots, so requests wait, join a running batch and leave at different steps.
    with Engine(model, max_batch_size=2) as engine:
        handles = [engine.submit(ids, p, params) for ids, p in requests]
        served = [h.result(timeout=60) for h in handles]
    assert [g.token_ids for g in served] == [g.token_ids for g in together]
    assert [g.text for g in served] == [g.text for g in together]

    predict(model, questions, tmp_path / "answers.jsonl", color_images,
            PredictOptions(batch_size=3, max_new_tokens=12), progress=False)
    answers = {r["question_id"]: r["text"] for r in read_jsonl(tmp_path / "answers.jsonl")}
    assert [answers[q["question_id"]] for q in questions] == [g.text.strip() for g in together]


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_tensors_on_either_side_give_the_same_tokens_as_id_lists(tiny_model, side):
    model = tiny_model.eval()
    spec = EncodingSpec.for_model(model)
    prompts = [encode_prompt(spec, [("human", q)]) for q in QUESTIONS[:5]]
    pad = model.tokenizer.pad_token_id
    ids, mask = left_pad(prompts, pad, "cpu")
    if side == "right":
        ids = torch.stack([torch.cat([row[m.bool()], row[~m.bool()]]) for row, m in zip(ids, mask)])
        mask = mask.flip(-1)
    from_tensors = model.generate((ids, mask), max_new_tokens=10, eos_token_ids=[])
    from_lists = model.generate(prompts, max_new_tokens=10, eos_token_ids=[])
    assert [g.token_ids for g in from_tensors] == [g.token_ids for g in from_lists]
    assert [g.prompt_tokens for g in from_tensors] == [len(p) for p in prompts]


def test_a_request_cancelled_mid_stream_frees_its_slot(tiny_model, color_images):
    model = tiny_model.eval()
    (ids, pixels), (other_ids, other_pixels) = _requests(model, _questions(2), color_images)
    with Engine(model, max_batch_size=1, eos_token_ids=[]) as engine:
        streaming = engine.submit(ids, pixels, SamplingParams(max_new_tokens=300))
        waiting = engine.submit(other_ids, other_pixels, SamplingParams(max_new_tokens=5))
        first_delta = next(iter(streaming))  # mid-stream: text has arrived
        assert first_delta and engine.running == 1 and not waiting.done
        streaming.cancel()
        assert streaming.result(timeout=60).finish_reason == "cancelled"
        # The one slot went to the request that was waiting for it.
        assert waiting.result(timeout=60).finish_reason == "length"
        assert engine.running == 0 and engine.stats.cancelled == 1


def test_cancelling_a_row_in_the_middle_of_a_running_batch_leaves_the_others_exact(tiny_model, color_images):
    # Removing a row that is not the last moves the last row's K/V into its slot, in place.
    model = tiny_model.eval()
    requests = _requests(model, _questions(3), color_images)
    params = SamplingParams(max_new_tokens=12)
    with Engine(model, max_batch_size=1, eos_token_ids=[]) as engine:
        alone = [engine.submit(ids, pixels, params).result(timeout=60).token_ids for ids, pixels in requests[1:]]
    with Engine(model, max_batch_size=3, eos_token_ids=[]) as engine:
        with engine._wakeup:  # hold the scheduler so that the three are prefilled together
            first = engine.submit(*requests[0], SamplingParams(max_new_tokens=300))
            others = [engine.submit(ids, pixels, params) for ids, pixels in requests[1:]]
        next(iter(first))
        first.cancel()
        assert first.result(timeout=60).finish_reason == "cancelled"
        assert [o.result(timeout=60).token_ids for o in others] == alone
        assert engine.stats.cancelled == 1 and engine.stats.max_batch == 3


def test_requests_beyond_the_kv_budget_wait_and_one_that_never_fits_is_refused(tiny_model, color_images):
    model = tiny_model.eval()
    requests = _requests(model, _questions(4), color_images)
    params = SamplingParams(max_new_tokens=20)
    expected = [model.generate([ids], p, params=params, eos_token_ids=[])[0].token_ids for ids, p in requests]
    # A budget for two sequences of the longest request's length: the other two wait for a slot to free up.
    budget = 2 * round_time(max(len(ids) for ids, _ in requests) + 20)
    with Engine(model, max_batch_size=8, eos_token_ids=[], kv_tokens=budget) as engine:
        handles = [engine.submit(ids, p, params) for ids, p in requests]
        assert [h.result(timeout=60).token_ids for h in handles] == expected
        assert engine.stats.max_batch == 2
    with Engine(model, eos_token_ids=[], kv_tokens=128) as engine, \
            pytest.raises(KVBudgetError, match="needs 210 key/value slots.*budget of 128"):
        engine.submit(requests[0][0][:10], None, SamplingParams(max_new_tokens=200))
    assert issubclass(KVBudgetError, VinstructError)


def test_streamed_text_is_the_final_text_in_pieces(tiny_model, color_images):
    model = tiny_model.eval()
    ids, pixels = _requests(model, _questions(1), color_images)[0]
    pieces = []
    out = model.generate([ids], pixels, max_new_tokens=30, eos_token_ids=[],
                         on_token=lambda row, delta: pieces.append(delta))[0]
    assert "".join(pieces) == out.text == model.tokenizer.decode(out.token_ids, skip_special_tokens=True)
    done = threading.Event()
    with Engine(model, eos_token_ids=[]) as engine:
        handle = engine.submit(ids, pixels, SamplingParams(max_new_tokens=30))
        assert "".join(handle) == out.text
        done.set()


def test_the_server_uses_every_available_cpu_by_default_and_says_so(tiny_checkpoint):
    from vinstruct.serve.assistant import Assistant, available_cpus

    before = torch.get_num_threads()
    try:
        with Assistant.load(tiny_checkpoint, max_batch_size=4, kv_tokens=4096) as assistant:
            assert torch.get_num_threads() == available_cpus()
            line = assistant.describe()
        assert f"{available_cpus()} CPU threads" in line and "4 sequences" in line and "4096 token slots" in line
        assert "lean forward" in line and "matrix products" in line
    finally:
        torch.set_num_threads(before)
