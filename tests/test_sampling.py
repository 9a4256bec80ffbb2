"""Sampling parameters: checked with messages naming the field, and numerically safe over their whole range."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vinstruct.errors import VinstructError
from vinstruct.model.generation import MIN_TEMPERATURE, SamplingParams, sample_token, sampling_probs

# Logits as models produce them, plus the extremes float32 allows.
logit_rows = st.lists(st.floats(-1e4, 1e4, width=32) | st.sampled_from([-3e38, 3e38, -math.inf]),
                      min_size=2, max_size=40).filter(lambda row: max(row) > -math.inf)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(logits=logit_rows,
       temperature=st.floats(MIN_TEMPERATURE, 2) | st.sampled_from([MIN_TEMPERATURE, 1e-4, 2.0]),
       top_p=st.floats(0, 1) | st.sampled_from([0.0, 5e-324, 1e-300, 1e-45, 1.0]))
def test_any_temperature_and_top_p_in_range_give_a_distribution_to_sample_from(logits, temperature, top_p):
    probs = sampling_probs(torch.tensor(logits), temperature, top_p)
    assert bool(torch.isfinite(probs).all()) and bool((probs >= 0).all())
    assert float(probs.max()) >= 1 / len(logits) * 0.99  # the most likely token always keeps its mass
    token = sample_token(torch.tensor(logits), SamplingParams(temperature=temperature, top_p=top_p, seed=1),
                         torch.Generator().manual_seed(1))
    assert 0 <= token < len(logits)


@pytest.mark.parametrize("temperature", [0.0, 5e-324, 1e-45, 1e-6])
def test_temperatures_below_the_threshold_decode_greedily(temperature):
    logits = torch.tensor([0.5, 2.0, 1.999999, -1.0])
    assert SamplingParams(temperature=temperature).greedy
    assert sample_token(logits, SamplingParams(temperature=temperature), None) == 1


def test_a_tiny_top_p_keeps_only_the_most_likely_token():
    logits = torch.tensor([0.0, 3.0, 2.9, 1.0])
    generator = torch.Generator().manual_seed(0)
    picks = {sample_token(logits, SamplingParams(temperature=2.0, top_p=1e-300), generator) for _ in range(50)}
    assert picks == {1}


def test_non_finite_logits_are_reported_not_sampled_from():
    with pytest.raises(FloatingPointError, match="non-finite logits"):
        sampling_probs(torch.tensor([0.0, math.nan, 1.0]), 1.0, 1.0)


@pytest.mark.parametrize("change, words", [
    ({"temperature": -0.1}, "temperature must be a finite number >= 0"),
    ({"temperature": math.nan}, "temperature must be a finite number >= 0"),
    ({"temperature": math.inf}, "temperature must be a finite number >= 0"),
    ({"top_p": 1.5}, "top_p must be a number between 0 and 1"),
    ({"top_p": math.nan}, "top_p must be a number between 0 and 1"),
    ({"max_new_tokens": 0}, "max_new_tokens must be an integer of at least 1"),
    ({"stop": "END"}, "stop must be a list of non-empty strings"),
    ({"stop": [""]}, "stop must be a list of non-empty strings"),
    ({"seed": 2**64}, "seed must be an integer"),
])
def test_out_of_range_parameters_are_refused_naming_the_field(change, words):
    with pytest.raises(VinstructError, match=words):
        SamplingParams(**change).check()
    SamplingParams().check()  # the defaults are fine


class _CharTokenizer:
    """Token id = one character's code point (enough to drive the text and stop-string logic)."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(map(chr, ids))


def _longest_open_tail(text: str, stops: list[str]) -> int:
    return max([n for stop in stops for n in range(1, min(len(stop), len(text) + 1)) if text.endswith(stop[:n])],
               default=0)


@settings(max_examples=300, deadline=None)
@given(st.text("ab<|", min_size=1, max_size=40), st.lists(st.text("ab<|", min_size=1, max_size=6), min_size=1, max_size=3))
def test_streamed_text_holds_back_exactly_what_could_start_a_stop_string(reply, stops):
    from vinstruct.model.sampling import RowState

    state = RowState(_CharTokenizer(), SamplingParams(max_new_tokens=len(reply), stop=stops), set())
    sent = ""
    for char in reply:
        state.push(ord(char))
        sent += state.new_text()
        if state.finish_reason:
            break
        # Everything is sent except the longest tail that may still grow into a stop string.
        assert len(state.text) - len(sent) == _longest_open_tail(state.text, stops)
    assert state.text.startswith(sent) and sent == state.text  # nothing sent is ever taken back
    assert not any(stop in state.text for stop in stops)


def test_a_tail_with_too_many_candidate_starts_is_held_back_whole():
    from vinstruct.model.sampling import RowState

    # Every "a" could start the stop string; checking each is what the bound avoids, so the whole tail
    # that might hold a start waits (more than strictly needed, never less), and is sent at the end.
    stop = "a" * 200 + "b"
    reply = "a" * 100 + "c" + "a" * 50
    state = RowState(_CharTokenizer(), SamplingParams(max_new_tokens=len(reply), stop=[stop]), set())
    sent = ""
    for char in reply:
        state.push(ord(char))
        sent += state.new_text()
        if not state.finish_reason:
            assert len(state.text) - len(sent) >= _longest_open_tail(state.text, [stop])
    assert sent == reply and state.finish_reason == "length"
