"""Bad input never trains silently, and the batch plan (length grouping, seeds, processes)."""

import json
import logging

import pytest

from vinstruct.errors import BadSampleError, VinstructError
from vinstruct.train import run_training
from vinstruct.train.sampler import StepPlan, epoch_micro_batches


def _bad_data(tiny_llava_data, tmp_path):
    good = json.loads((tiny_llava_data / "finetune.json").read_text())
    samples = good + [
        {"id": "no-image-file", "image": "missing.png", "conversations": good[0]["conversations"]},
        {"id": "malformed", "image": good[0]["image"], "conversations": [{"from": "human"}]},
        {"id": "too-long", "image": good[0]["image"], "conversations": [
            {"from": "human", "value": "<image>\n" + "describe the red circle " * 60},
            {"from": "gpt", "value": "a red circle."}]},
        {"id": "no-answer", "conversations": [{"from": "human", "value": "hi"}]},
    ]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(samples))
    return path, len(good)


def test_bad_samples_are_counted_and_skipped(train_config, tiny_llava_data, tmp_path, caplog):
    path, n_good = _bad_data(tiny_llava_data, tmp_path)
    with caplog.at_level(logging.WARNING):
        result = run_training(train_config(data=str(path), image_dir=str(tiny_llava_data), max_length=200,
                                           long_samples="skip", max_steps=1))
    assert sum(result.skipped.values()) == 4
    assert set(result.skipped) == {"missing image", "turn 0", "too long", "no supervised tokens"}
    assert "skipped 4 sample(s)" in caplog.text and "1 x too long" in caplog.text


def test_fail_mode_names_the_first_bad_sample(train_config, tiny_llava_data, tmp_path):
    path, _ = _bad_data(tiny_llava_data, tmp_path)
    with pytest.raises(BadSampleError, match="sample 'no-image-file': missing image"):
        run_training(train_config(data=str(path), image_dir=str(tiny_llava_data), on_bad_sample="fail"))


def test_over_long_samples_are_truncated_while_answers_survive(train_config, tiny_llava_data, tmp_path):
    samples = [{"id": "answer-cut-off", "image": "red_circle.png", "conversations": [
        {"from": "human", "value": "<image>\n" + "describe the red circle " * 60},
        {"from": "gpt", "value": "a red circle."}]}]
    path = tmp_path / "long.json"
    path.write_text(json.dumps(samples))
    with pytest.raises(VinstructError, match="no usable training samples .*no supervised tokens.*after truncation"):
        run_training(train_config(data=str(path), image_dir=str(tiny_llava_data), max_length=200))


def test_a_batch_whose_labels_are_all_ignored_is_reported(train_config, tiny_llava_data, tmp_path, caplog):
    data = json.loads((tiny_llava_data / "pretrain.json").read_text())[:4]
    for sample in data:
        sample["image"] = "unreadable.png"
    (tmp_path / "unreadable.png").write_bytes(b"not an image")
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        result = run_training(train_config("pretrain", data=str(path), max_steps=1))
    assert "no supervised tokens in the whole batch" in caplog.text
    assert result.empty_batches >= 1 and result.skipped == {"undecodable image": 4}
    with pytest.raises(BadSampleError, match="undecodable image"):
        run_training(train_config("pretrain", data=str(path), max_steps=1, on_bad_sample="fail",
                                  output_dir=str(tmp_path / "fail")))


def test_unreadable_images_are_found_before_training_when_caching(train_config, tiny_llava_data, tmp_path):
    data = json.loads((tiny_llava_data / "pretrain.json").read_text())
    (tmp_path / "broken.png").write_bytes(b"not an image")
    data[0]["image"] = str(tmp_path / "broken.png")
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data))
    result = run_training(train_config("pretrain", data=str(path), image_dir=str(tiny_llava_data),
                                       cache_vision_features=True, max_steps=1))
    assert result.skipped == {"undecodable image": 1} and result.empty_batches == 0


# ---- the batch plan ----------------------------------------------------------------------------------------
LENGTHS = [5, 50, 7, 48, 6, 52, 8, 47, 30, 31, 29, 33] * 4
IMAGES = [i % 3 != 0 for i in range(len(LENGTHS))]


def test_length_grouping_keeps_modalities_apart_and_lengths_close():
    batches = epoch_micro_batches(LENGTHS, IMAGES, batch_size=4, seed=1, epoch=0, group_by_length=True, window=8)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    for batch in batches:
        assert len({IMAGES[i] for i in batch}) == 1
    grouped_pad = sum(len(b) * max(LENGTHS[i] for i in b) for b in batches)
    shuffled = epoch_micro_batches(LENGTHS, IMAGES, 4, 1, 0, group_by_length=False)
    random_pad = sum(len(b) * max(LENGTHS[i] for i in b) for b in shuffled)
    assert grouped_pad < random_pad


def test_shuffling_is_seeded_and_differs_between_epochs():
    one = epoch_micro_batches(LENGTHS, IMAGES, 4, seed=3, epoch=0)
    assert one == epoch_micro_batches(LENGTHS, IMAGES, 4, seed=3, epoch=0)
    assert one != epoch_micro_batches(LENGTHS, IMAGES, 4, seed=3, epoch=1)
    assert one != epoch_micro_batches(LENGTHS, IMAGES, 4, seed=4, epoch=0)


def test_two_processes_see_what_one_process_with_double_accumulation_sees():
    single = StepPlan(LENGTHS, IMAGES, batch_size=2, grad_accum=2, world_size=1, seed=0)
    double = StepPlan(LENGTHS, IMAGES, batch_size=2, grad_accum=1, world_size=2, seed=0)
    assert single.steps_per_epoch == double.steps_per_epoch
    for step in range(2 * single.steps_per_epoch):
        assert sorted(single.step_batches(step, 0)) == sorted(double.step_batches(step, 0) +
                                                               double.step_batches(step, 1))
