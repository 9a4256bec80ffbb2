"""The serving engine: dynamic batching that is exact, streaming, stops, cancellation, prefix reuse."""

import threading

import pytest
import torch

from vinstruct.data.encoding import EncodingSpec, encode_prompt
from vinstruct.errors import VinstructError
from vinstruct.model.generation import SamplingParams
from vinstruct.serve.engine import ContextLengthError, Engine


def _prompts(model, color_images):
    spec = EncodingSpec.for_model(model)
    red, blue = (model.image_processor.load([color_images / n]) for n in ("red.png", "blue.png"))
    both = model.image_processor.load([color_images / "green.png", color_images / "red.png"])
    return [
        (encode_prompt(spec, [("human", "<image>\nWhat colour is it?")]), red),
        (encode_prompt(spec, [("human", "Describe the picture in detail. <image>")]), blue),
        (encode_prompt(spec, [("human", "hi")]), None),
        (encode_prompt(spec, [("human", "<image> and <image>: which is larger?")]), both),
    ]


def test_greedy_tokens_equal_model_generate_while_requests_join_and_leave(tiny_model, color_images):
    model = tiny_model.eval()
    requests = _prompts(model, color_images)
    lengths = [9, 3, 6, 12]  # rows finish at different steps, so queued ones join a running batch
    expected = [
        model.generate([ids], pixels, max_new_tokens=n, eos_token_ids=[])[0].token_ids
        for (ids, pixels), n in zip(requests, lengths)
    ]
    with Engine(model, max_batch_size=2, eos_token_ids=[]) as engine:
        handles = [engine.submit(ids, pixels, SamplingParams(max_new_tokens=n))
                   for (ids, pixels), n in zip(requests, lengths)]
        results = [h.result(timeout=60) for h in handles]
    assert [r.token_ids for r in results] == expected
    assert all(r.finish_reason == "length" for r in results)
    assert engine.stats.max_batch == 2


def test_a_request_arriving_mid_generation_joins_the_running_batch(tiny_model, color_images):
    model = tiny_model.eval()
    (long_ids, long_px), (short_ids, short_px) = _prompts(model, color_images)[:2]
    paused, resume, forward, calls = threading.Event(), threading.Event(), model.llm.forward, []

    def pausing_forward(*args, **kwargs):  # hold the third step until the newcomer has been submitted
        calls.append(1)
        if len(calls) == 3:
            paused.set()
            resume.wait(60)
        return forward(*args, **kwargs)

    model.llm.forward = pausing_forward
    with Engine(model, max_batch_size=4, eos_token_ids=[]) as engine:
        first = engine.submit(long_ids, long_px, SamplingParams(max_new_tokens=40))
        assert paused.wait(60)  # the first request is decoding now
        second = engine.submit(short_ids, short_px, SamplingParams(max_new_tokens=4))
        resume.set()
        joined = second.result(timeout=60)
        assert not first.done  # the newcomer did not wait for the long one to finish
        rest = first.result(timeout=60)
    model.llm.forward = forward
    assert engine.stats.max_batch == 2
    assert joined.token_ids == model.generate([short_ids], short_px, max_new_tokens=4, eos_token_ids=[])[0].token_ids
    assert rest.token_ids == model.generate([long_ids], long_px, max_new_tokens=40, eos_token_ids=[])[0].token_ids


def test_streamed_deltas_add_up_to_the_text(tiny_model, color_images):
    model = tiny_model.eval()
    ids, pixels = _prompts(model, color_images)[0]
    with Engine(model, eos_token_ids=[]) as engine:
        handle = engine.submit(ids, pixels, SamplingParams(max_new_tokens=16))
        deltas = list(handle)
        result = handle.result()
    assert len(deltas) > 1
    assert "".join(deltas) == result.text
    assert result.text == model.tokenizer.decode(result.token_ids, skip_special_tokens=True)


def test_stop_strings_cut_the_reply(tiny_model, color_images):
    model = tiny_model.eval()
    ids, pixels = _prompts(model, color_images)[0]
    with Engine(model, eos_token_ids=[]) as engine:
        full = engine.submit(ids, pixels, SamplingParams(max_new_tokens=16)).result()
        stop = full.text[len(full.text) // 2:][:3]
        cut = engine.submit(ids, pixels, SamplingParams(max_new_tokens=16, stop=[stop])).result()
    assert stop and stop in full.text
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.finish_reason == "stop"


def test_seeded_sampling_reproduces_whatever_the_batch(tiny_model, color_images):
    model = tiny_model.eval()
    requests = _prompts(model, color_images)
    sampled = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    with Engine(model, eos_token_ids=[]) as engine:
        alone = engine.submit(*requests[0], sampled).result()
        crowd = [engine.submit(ids, px, SamplingParams(max_new_tokens=10)) for ids, px in requests[1:]]
        together = engine.submit(*requests[0], sampled).result()
        [h.result() for h in crowd]
    reference = model.generate([requests[0][0]], requests[0][1], params=sampled, eos_token_ids=[])[0]
    assert alone.token_ids == together.token_ids == reference.token_ids


def test_cancelled_request_stops_and_the_engine_keeps_serving(tiny_model, color_images):
    model = tiny_model.eval()
    ids, pixels = _prompts(model, color_images)[0]
    paused, resume, forward, calls = threading.Event(), threading.Event(), model.llm.forward, []

    def pausing_forward(*args, **kwargs):  # hold the fifth step until the request has been cancelled
        calls.append(1)
        if len(calls) == 5:
            paused.set()
            resume.wait(60)
        return forward(*args, **kwargs)

    model.llm.forward = pausing_forward
    with Engine(model, eos_token_ids=[]) as engine:
        handle = engine.submit(ids, pixels, SamplingParams(max_new_tokens=300))
        assert paused.wait(60)
        handle.cancel()
        resume.set()
        cancelled = handle.result(timeout=60)
        after = engine.submit(ids, pixels, SamplingParams(max_new_tokens=3)).result(timeout=60)
    assert cancelled.finish_reason == "cancelled"
    assert len(cancelled.token_ids) == 5  # the step in flight finished; no step ran after the cancel
    assert len(after.token_ids) == 3
    assert engine.stats.cancelled == 1


def _two_turn_prompts(model, color_images, first_reply):
    spec = EncodingSpec.for_model(model)
    turn1 = [("human", "<image>\nWhat shape is it?")]
    turn2 = turn1 + [("gpt", first_reply), ("human", "And its colour?")]
    pixels = model.image_processor.load([color_images / "red.png"])
    return encode_prompt(spec, turn1), encode_prompt(spec, turn2), pixels


def test_second_turn_reuses_the_cache_and_gives_identical_tokens(tiny_model, color_images):
    model = tiny_model.eval()
    calls = []
    original = model.encode_images
    model.encode_images = lambda pixels: calls.append(len(pixels)) or original(pixels)

    def conversation(prefix_cache_tokens):
        with Engine(model, prefix_cache_tokens=prefix_cache_tokens) as engine:
            first_ids, _, pixels = _two_turn_prompts(model, color_images, "")
            reply = engine.submit(first_ids, pixels, SamplingParams(max_new_tokens=12)).result()
            _, second_ids, pixels = _two_turn_prompts(model, color_images, reply.text)
            calls.clear()
            second = engine.submit(second_ids, pixels, SamplingParams(max_new_tokens=12))
            return second.result(), second.cached_tokens, list(calls), len(second_ids)

    reused, cached, vision_calls, prompt_len = conversation(8192)
    recomputed, not_cached, recompute_calls, _ = conversation(0)
    assert reused.token_ids == recomputed.token_ids
    assert cached > model.num_image_tokens and not_cached == 0
    assert cached < prompt_len
    assert vision_calls == [] and recompute_calls == [1]  # the image was not encoded again


def test_a_different_image_is_never_served_from_the_cache(tiny_model, color_images):
    model = tiny_model.eval()
    spec = EncodingSpec.for_model(model)
    ids = encode_prompt(spec, [("human", "<image>\nWhat colour is it?")])
    red = model.image_processor.load([color_images / "red.png"])
    blue = model.image_processor.load([color_images / "blue.png"])
    image_start = ids.index(model.image_token_id)
    with Engine(model, eos_token_ids=[]) as engine:
        engine.submit(ids, red, SamplingParams(max_new_tokens=4)).result()
        handle = engine.submit(ids, blue, SamplingParams(max_new_tokens=4))
        blue_reply = handle.result()
    assert handle.cached_tokens == image_start
    assert blue_reply.token_ids == model.generate([ids], blue, max_new_tokens=4, eos_token_ids=[])[0].token_ids


def test_bad_requests_are_refused_at_submit(tiny_model, color_images):
    model = tiny_model.eval()
    ids, pixels = _prompts(model, color_images)[0]
    with Engine(model) as engine:
        with pytest.raises(ContextLengthError, match="context"):
            engine.submit(ids, pixels, SamplingParams(max_new_tokens=engine.context_length))
        with pytest.raises(VinstructError, match="image"):
            engine.submit(ids, None, SamplingParams(max_new_tokens=2))


def test_a_failing_step_fails_its_requests_and_the_engine_recovers(tiny_model, color_images):
    model = tiny_model.eval()
    ids, pixels = _prompts(model, color_images)[0]
    original, failures = model.encode_images, [RuntimeError("vision tower exploded")]
    model.encode_images = lambda px: (_ for _ in ()).throw(failures.pop()) if failures else original(px)
    with Engine(model, eos_token_ids=[]) as engine:
        failing = engine.submit(ids, pixels, SamplingParams(max_new_tokens=3))
        with pytest.raises(RuntimeError, match="exploded"):
            failing.result(timeout=60)
        fine = engine.submit(ids, pixels, SamplingParams(max_new_tokens=3)).result(timeout=60)
    assert len(fine.token_ids) == 3


def test_pixel_values_of_the_wrong_shape_are_refused_at_submit(tiny_model, color_images):
    model = tiny_model.eval()
    ids, pixels = _prompts(model, color_images)[0]
    with Engine(model) as engine, pytest.raises(VinstructError, match="pixel values must be"):
        engine.submit(ids, pixels[:, :1], SamplingParams(max_new_tokens=3))


def test_many_threads_submitting_at_once(tiny_model, color_images):
    model = tiny_model.eval()
    requests = _prompts(model, color_images)
    expected = [model.generate([i], p, max_new_tokens=5, eos_token_ids=[])[0].token_ids for i, p in requests]
    results = {}
    with Engine(model, max_batch_size=3, eos_token_ids=[]) as engine:
        def client(k):
            ids, px = requests[k % len(requests)]
            results[k] = engine.submit(ids, px, SamplingParams(max_new_tokens=5)).result(timeout=120).token_ids

        threads = [threading.Thread(target=client, args=(k,)) for k in range(12)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert [results[k] for k in range(12)] == [expected[k % len(requests)] for k in range(12)]


def test_when_newcomers_prefilled_together_fail_only_the_one_at_fault_fails(tiny_model, color_images):
    model = tiny_model.eval()
    ids, pixels = _prompts(model, color_images)[0]
    poisoned = torch.full_like(pixels, 7.0)  # the vision tower below refuses exactly these pixels
    encode_images = model.encode_images

    def fragile_encode_images(pixel_values):
        if bool((pixel_values == 7.0).all(dim=(1, 2, 3)).any()):
            raise RuntimeError("the vision tower cannot take this image")
        return encode_images(pixel_values)

    model.encode_images = fragile_encode_images
    expected = model.generate([ids], pixels, max_new_tokens=4, eos_token_ids=[])[0].token_ids
    with Engine(model, eos_token_ids=[]) as engine:
        with engine._wakeup:  # the scheduler waits until both are queued: they are prefilled as one batch
            good = engine.submit(ids, pixels, SamplingParams(max_new_tokens=4))
            bad = engine.submit(ids, poisoned, SamplingParams(max_new_tokens=4))
        with pytest.raises(RuntimeError, match="cannot take this image"):
            bad.result(timeout=60)
        assert good.result(timeout=60).token_ids == expected
    assert engine.stats.prefills == 1  # the joint prefill failed; the good request's own one succeeded


def test_a_request_whose_sampling_fails_mid_reply_leaves_and_the_others_finish(tiny_model, color_images, monkeypatch):
    import vinstruct.model.decoding as engine_module

    model = tiny_model.eval()
    requests = _prompts(model, color_images)[:3]
    real_sample_token, calls = engine_module.sample_token, []

    def sample_token(logits, params, generator):
        if params.seed == 13:
            calls.append(1)
            if len(calls) == 4:
                raise FloatingPointError("row 13 broke")
        return real_sample_token(logits, params, generator)

    monkeypatch.setattr(engine_module, "sample_token", sample_token)
    expected = [model.generate([i], p, max_new_tokens=8, eos_token_ids=[])[0].token_ids for i, p in requests]
    with Engine(model, eos_token_ids=[]) as engine:
        with engine._wakeup:
            handles = [engine.submit(i, p, SamplingParams(max_new_tokens=8)) for i, p in requests]
            failing = engine.submit(*requests[0], SamplingParams(max_new_tokens=8, temperature=1.0, seed=13))
        with pytest.raises(FloatingPointError, match="row 13 broke"):
            failing.result(timeout=60)
        assert [h.result(timeout=60).token_ids for h in handles] == expected
        assert engine.stats.max_batch == 4


def test_freed_memory_is_handed_back_each_time_the_engine_goes_idle_and_not_while_busy(tiny_model, color_images,
                                                                                          monkeypatch):
    import vinstruct.serve.engine as engine_module

    model = tiny_model.eval()
    trims, busy_when_trimmed = [], []
    monkeypatch.setattr(engine_module, "release_free_memory", lambda: trims.append(1) or True)
    ids, pixels = _prompts(model, color_images)[0]
    with Engine(model, eos_token_ids=[]) as engine:
        original_step = engine.decoder.step

        def step():  # record whether a trim ever happens while a row is running
            busy_when_trimmed.append(len(trims))
            return original_step()

        engine.decoder.step = step

        def trims_reach(count):  # the trim follows the result on the engine's thread, a moment later
            for _ in range(1000):
                if len(trims) >= count:
                    return
                threading.Event().wait(0.01)

        # Each request is sent once the engine has gone idle after the one before: a request already
        # waiting when the previous one ends rightly keeps the engine from trimming in between.
        engine.submit(ids, pixels, SamplingParams(max_new_tokens=6)).result()
        trims_reach(1)
        engine.submit(ids, pixels, SamplingParams(max_new_tokens=6)).result()
        trims_reach(2)
    assert len(trims) == 2  # once after each request, none at start-up
    assert busy_when_trimmed == [0] * 5 + [1] * 5  # never while a request was decoding


def test_a_prefix_cache_that_could_never_fit_is_refused_at_start(tiny_model):
    model = tiny_model.eval()
    with pytest.raises(VinstructError, match=r"a prefix cache of 1000000000000 tokens needs .* MiB of key/value "
                                             r"memory, more than the .* MiB available; lower prefix_cache_tokens"):
        Engine(model, prefix_cache_tokens=10**12)


def test_a_prefix_pool_that_cannot_be_allocated_turns_reuse_off_and_the_request_still_succeeds(
        tiny_model, color_images, monkeypatch):
    import vinstruct.serve.prefix as prefix_module

    model = tiny_model.eval()
    ids, pixels = _prompts(model, color_images)[0]
    class NoMemoryTorch:  # torch as the prefix store sees it, with no memory left for the pool
        def __getattr__(self, name):
            return getattr(torch, name)

        def zeros(self, *args, **kwargs):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    with Engine(model, eos_token_ids=[]) as engine:
        monkeypatch.setattr(prefix_module, "torch", NoMemoryTorch())
        reply = engine.submit(ids, pixels, SamplingParams(max_new_tokens=4)).result(timeout=60)
        monkeypatch.undo()
        again = engine.submit(ids, pixels, SamplingParams(max_new_tokens=4))
        assert again.result(timeout=60).token_ids == reply.token_ids
    assert len(reply.token_ids) == 4
    assert again.cached_tokens == 0 and engine.prefix_store.blocks == 0 and len(engine.prefix_store) == 0
