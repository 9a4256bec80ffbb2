"""Independent turns: several one-question exchanges about one image, packed into one training sequence,
each trained exactly as if it were asked alone."""

import pytest
import torch

from vinstruct.data.dataset import Collator, LlavaDataset
from vinstruct.data.encoding import EncodingSpec
from vinstruct.train.step import TrainStep
from vinstruct.world.vqa import SHORT_ANSWER_PROMPT, vqa_samples

QUESTIONS = [("What colour is the square?", "Red."), ("How many shapes are there?", "One."),
             ("Is the square on the left or on the right side of the image?", "Left.")]


def _packed(independent=True):
    turns = []
    for k, (question, answer) in enumerate(QUESTIONS):
        turns += [{"from": "human", "value": f"<image>\n{question}" if k == 0 else question},
                  {"from": "gpt", "value": answer}]
    sample = {"id": "packed", "image": "red.png", "conversations": turns}
    if independent:
        sample["independent_turns"] = True
    return sample


def _single(k):
    question, answer = QUESTIONS[k]
    return {"id": f"single-{k}", "image": "red.png",
            "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]}


def _loss(model, dataset, indices):
    batch = Collator(model.tokenizer.pad_token_id or 0)([dataset[i] for i in indices])
    inputs = {k: v for k, v in batch.items() if k != "ids" and v is not None}
    with torch.no_grad():
        loss, count = TrainStep(model)(**inputs)
    return loss.item(), int(count)


@pytest.fixture
def dataset(tiny_model, color_images):
    spec = EncodingSpec.for_model(tiny_model)
    samples = [_packed(), *(_single(k) for k in range(len(QUESTIONS))), _packed(independent=False)]
    return LlavaDataset(samples, spec, tiny_model.image_processor, image_dir=color_images)


def test_packed_exchanges_train_exactly_like_single_questions(tiny_model, dataset):
    tiny_model.eval()
    packed_loss, packed_count = _loss(tiny_model, dataset, [0])
    singles = [_loss(tiny_model, dataset, [k + 1]) for k in range(len(QUESTIONS))]
    assert packed_count == sum(c for _, c in singles)
    assert packed_loss == pytest.approx(sum(l for l, _ in singles), rel=1e-5)
    # The image and the system line are stored once: the packed sample is shorter than the singles together.
    assert len(dataset.items[0]["input_ids"]) < sum(len(dataset.items[k + 1]["input_ids"]) for k in range(3))


def test_a_batch_mixing_packed_and_ordinary_samples_keeps_each_loss(tiny_model, dataset):
    tiny_model.eval()
    separate = [_loss(tiny_model, dataset, [i]) for i in (0, 4)]
    together = _loss(tiny_model, dataset, [0, 4])
    assert together[1] == sum(c for _, c in separate)
    assert together[0] == pytest.approx(sum(l for l, _ in separate), rel=1e-5)


def test_ordinary_packing_lets_later_questions_see_earlier_answers(tiny_model, dataset):
    """Without the mark, the same turns are one conversation: a different loss than the independent one."""
    tiny_model.eval()
    assert _loss(tiny_model, dataset, [4])[0] != pytest.approx(_loss(tiny_model, dataset, [0])[0], rel=1e-4)


def test_world_vqa_samples_are_marked_and_each_question_carries_the_prompt(tiny_world):
    samples = vqa_samples(tiny_world, "test", max_turns=4)
    assert samples and all(s["independent_turns"] for s in samples)
    humans = [t["value"] for t in samples[0]["conversations"] if t["from"] == "human"]
    assert humans[0].startswith("<image>\n") and all(h.endswith(SHORT_ANSWER_PROMPT) for h in humans)
    assert all("<image>" not in h for h in humans[1:])


def test_a_prompt_before_the_questions_is_encoded_once_and_each_exchange_still_trains_alone(tiny_model, tiny_world):
    """prompt_position="before": the short-answer line joins the prefix the packed exchanges share, so a
    sample of k questions carries it once instead of k times; each exchange's loss is unchanged."""
    from vinstruct.data.encoding import encode_independent_turns

    after = vqa_samples(tiny_world, "train", max_turns=4)
    before = vqa_samples(tiny_world, "train", max_turns=4, prompt_position="before")
    humans = [t["value"] for t in before[0]["conversations"] if t["from"] == "human"]
    assert humans[0].startswith(f"<image>\n{SHORT_ANSWER_PROMPT}\n")
    assert all(h.startswith(f"{SHORT_ANSWER_PROMPT}\n") for h in humans[1:])
    spec = EncodingSpec.for_model(tiny_model)
    prompt_tokens = len(tiny_model.tokenizer(f"\n{SHORT_ANSWER_PROMPT}", add_special_tokens=False)["input_ids"])
    sample_after, sample_before = after[0], before[0]
    turns = len(sample_before["conversations"]) // 2
    assert turns > 1
    long = encode_independent_turns(spec, sample_after["conversations"], 1)
    short = encode_independent_turns(spec, sample_before["conversations"], 1)
    assert len(long.input_ids) - len(short.input_ids) >= (turns - 1) * (prompt_tokens - 2)
    assert short.labels.count(-100) < long.labels.count(-100)  # the same answers, fewer context tokens
    assert [t for t in short.labels if t != -100] == [t for t in long.labels if t != -100]

    # each packed exchange trains exactly as its question asked alone with the prompt before it
    conversations = sample_before["conversations"]
    singles = [{"id": f"single-{k}", "image": sample_before["image"],
                "conversations": [{"from": "human", "value": humans[k] if k == 0 else f"<image>\n{humans[k]}"},
                                  conversations[2 * k + 1]]} for k in range(turns)]
    dataset = LlavaDataset([sample_before, *singles], spec, tiny_model.image_processor, image_dir=tiny_world)
    packed_loss, packed_count = _loss(tiny_model, dataset, [0])
    single = [_loss(tiny_model, dataset, [k + 1]) for k in range(turns)]
    assert packed_count == sum(c for _, c in single)
    assert packed_loss == pytest.approx(sum(v for v, _ in single), rel=1e-4)


def test_the_hint_goes_after_or_before_the_question_and_a_bad_position_is_named():
    from vinstruct.data.templates import with_hint
    from vinstruct.errors import VinstructError

    assert with_hint("What color?", "One word.") == "What color?\nOne word."
    assert with_hint("What color?", "One word.", "before") == "One word.\nWhat color?"
    assert with_hint("What color?", "  ", "before") == "What color?"
    with pytest.raises(VinstructError, match="after, before, got 'under'"):
        with_hint("What color?", "One word.", "under")
