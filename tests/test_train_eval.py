"""The evaluation hook: held-out loss, quick exact QA, any fn(model) -> dict; bf16 and checkpointing run."""

import json
import math

import pytest

from vinstruct.errors import VinstructError
from vinstruct.train import run_training
from vinstruct.train.evaluation import normalize_answer, resolve_hook


def _eval_rows(result):
    rows = [json.loads(line) for line in result.metrics.read_text().splitlines()]
    return [r for r in rows if r["kind"] == "eval"]


def test_eval_rows_hold_held_out_loss_exact_qa_and_hook_results(train_config, tiny_llava_data, tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in [
        {"question_id": 1, "image": "red_circle.png", "text": "What color is the shape?", "answer": "red."},
        {"question_id": 2, "image": "blue_square.png", "text": "What shape is it?", "answer": "a square"},
    ]))
    seen = []

    def hook(model):
        seen.append(model.training)
        return {"my_metric": 0.25}

    result = run_training(train_config(max_steps=4, eval_every=2, val_data=str(tiny_llava_data / "val.json"),
                                       eval_questions=str(questions), image_dir=str(tiny_llava_data)),
                          eval_hooks=[hook])
    rows = _eval_rows(result)
    assert [r["step"] for r in rows] == [2, 4]
    for row in rows:
        assert math.isfinite(row["eval_loss"]) and row["eval_loss"] > 0
        assert 0.0 <= row["exact_qa"] <= 1.0 and row["exact_qa_n"] == 2
        assert row["my_metric"] == 0.25
    assert seen == [True, True]  # hooks get the model as it trains


def test_hooks_by_name_and_clear_errors():
    assert resolve_hook("json:dumps") is json.dumps
    with pytest.raises(VinstructError, match="eval_hook 'nowhere:fn': cannot import"):
        resolve_hook("nowhere:fn")
    assert normalize_answer(" A Square! ") == "a square"


def test_bf16_autocast_and_gradient_checkpointing_train(train_config):
    result = run_training(train_config(max_steps=2, precision="bf16", gradient_checkpointing=True))
    assert math.isfinite(result.final_loss)
