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
