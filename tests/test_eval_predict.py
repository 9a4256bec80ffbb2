"""Batched prediction over question files: the official formats, resume, bad input."""

import json

import pytest

from vinstruct.cli import main
from vinstruct.data.formats import read_jsonl, write_jsonl
from vinstruct.errors import VinstructError
from vinstruct.eval.predict import PredictOptions, predict, predict_files, prompt_text

pytestmark = pytest.mark.usefixtures("one_thread")


def _questions(n, image="red.png"):
    return [{"question_id": f"q{i}", "image": image, "text": f"What color is shape {i}?", "category": "color"}
            for i in range(n)]


def test_answers_in_the_official_format_and_question_order(tiny_model, color_images, tmp_path):
    questions = _questions(5) + [{"question_id": "t", "text": "Say hi."}]  # one text-only question
    stats = predict(tiny_model, questions, tmp_path / "a.jsonl", color_images,
                    PredictOptions(batch_size=4, max_new_tokens=4, model_id="tiny"), progress=False)
    rows = read_jsonl(tmp_path / "a.jsonl")
    assert [r["question_id"] for r in rows] == [q["question_id"] for q in questions]
    assert set(rows[0]) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert rows[0]["prompt"] == questions[0]["text"] and rows[0]["model_id"] == "tiny"
    assert stats.answered == 6 and stats.reused == 0 and not stats.skipped


def test_batched_answers_equal_one_at_a_time(tiny_model, color_images, tmp_path):
    questions = [{"question_id": i, "image": name, "text": text} for i, (name, text) in enumerate(
        [("red.png", "What is it?"), ("blue.png", "Describe the picture in a few words please."),
         ("green.png", "Color?")])]
    opts = dict(max_new_tokens=6)
    predict(tiny_model, questions, tmp_path / "batched.jsonl", color_images, PredictOptions(batch_size=3, **opts),
            progress=False)
    predict(tiny_model, questions, tmp_path / "single.jsonl", color_images, PredictOptions(batch_size=1, **opts),
            progress=False)
    texts = lambda p: [r["text"] for r in read_jsonl(p)]  # noqa: E731
    assert texts(tmp_path / "batched.jsonl") == texts(tmp_path / "single.jsonl")


def test_resume_skips_answered_ids_and_repairs_a_torn_line(tiny_model, color_images, tmp_path):
    questions = _questions(6)
    answers = tmp_path / "a.jsonl"
    options = PredictOptions(batch_size=2, max_new_tokens=3)
    predict(tiny_model, questions[:3], answers, color_images, options, progress=False)
    first = {r["question_id"]: r for r in read_jsonl(answers)}
    with answers.open("a") as handle:  # a run killed while writing its next line
        handle.write('{"question_id": "q3", "prompt": "What col')
    stats = predict(tiny_model, questions, answers, color_images, options, progress=False)
    rows = read_jsonl(answers)
    assert [r["question_id"] for r in rows] == [q["question_id"] for q in questions]
    assert stats.reused == 3 and stats.answered == 3
    assert all(first[r["question_id"]] == r for r in rows[:3])  # kept, not regenerated
    again = predict(tiny_model, questions, answers, color_images, options, progress=False)
    assert again.answered == 0 and again.reused == 6 and len(read_jsonl(answers)) == 6


def test_missing_images_are_skipped_counted_and_answered_later(tiny_model, color_images, tmp_path):
    import shutil

    images = tmp_path / "images"
    shutil.copytree(color_images, images)
    questions = _questions(2) + [{"question_id": "late", "image": "later.png", "text": "What is it?"}]
    answers = tmp_path / "a.jsonl"
    stats = predict(tiny_model, questions, answers, images, PredictOptions(max_new_tokens=2), progress=False)
    assert stats.answered == 2
    assert stats.skipped == [{"question_id": "late", "reason": f"image not found: {images / 'later.png'}"}]
    (images / "later.png").write_bytes((images / "red.png").read_bytes())
    stats = predict(tiny_model, questions, answers, images, PredictOptions(max_new_tokens=2), progress=False)
    assert stats.answered == 1 and stats.reused == 2 and not stats.skipped


def test_unreadable_image_is_a_counted_skip(tiny_model, color_images, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    questions = [{"question_id": 1, "image": "broken.png", "text": "What is it?"}]
    stats = predict(tiny_model, questions, tmp_path / "a.jsonl", tmp_path, PredictOptions(max_new_tokens=2),
                    progress=False)
    assert stats.answered == 0 and "cannot decode image" in stats.skipped[0]["reason"]


def test_image_blind_needs_no_image_and_sends_no_image_tokens(tiny_model, tmp_path):
    question = {"question_id": 1, "image": "nowhere.png", "text": "<image>\nWhat color is it?"}
    assert prompt_text(question, with_image=False) == "What color is it?"
    assert prompt_text({"text": "Color?"}, with_image=True) == "<image>\nColor?"
    stats = predict(tiny_model, [question], tmp_path / "a.jsonl", tmp_path,
                    PredictOptions(image_blind=True, max_new_tokens=2), progress=False)
    assert stats.answered == 1 and not stats.skipped
    assert read_jsonl(tmp_path / "a.jsonl")[0]["metadata"]["image_blind"] is True


def test_answers_made_for_other_questions_are_refused(tiny_model, color_images, tmp_path):
    answers = tmp_path / "a.jsonl"
    predict(tiny_model, _questions(1), answers, color_images, PredictOptions(max_new_tokens=2), progress=False)
    changed = [{"question_id": "q0", "image": "red.png", "text": "A different question?"}]
    with pytest.raises(VinstructError, match="different question text"):
        predict(tiny_model, changed, answers, color_images, PredictOptions(max_new_tokens=2), progress=False)


@pytest.mark.parametrize("lines, message", [
    ([{"question_id": 1, "text": "a"}, {"question_id": 1, "text": "b"}], r"q\.jsonl:2: duplicate question_id 1"),
    ([{"question_id": 1, "text": "a"}, {"text": "b"}], r"q\.jsonl:2: missing field 'question_id'"),
    ([{"question_id": 1}], r"q\.jsonl:1: missing field 'text'"),
    ([{"question_id": 1, "text": "a", "image": 5}], r"'image' must be a file name"),
])
def test_bad_question_files_name_file_line_and_field(tiny_checkpoint, tmp_path, lines, message):
    write_jsonl(tmp_path / "q.jsonl", lines)
    with pytest.raises(VinstructError, match=message):
        predict_files(tiny_checkpoint, tmp_path / "q.jsonl", tmp_path / "a.jsonl", progress=False)
    assert not (tmp_path / "a.jsonl").exists() or not read_jsonl(tmp_path / "a.jsonl")


def test_cli_predict_end_to_end(tiny_checkpoint, color_images, tmp_path, capsys):
    write_jsonl(tmp_path / "q.jsonl", _questions(3) + [{"question_id": "x", "image": "gone.png", "text": "?"}])
    args = ["predict", "--model", str(tiny_checkpoint), "--questions", str(tmp_path / "q.jsonl"), "--image-dir",
            str(color_images), "--answers", str(tmp_path / "a.jsonl"), "--batch-size", "2", "--max-new-tokens", "3",
            "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "answered 3" in out and "skipped 1" in out and "gone.png" in out
    assert [json.loads(line)["model_id"] for line in (tmp_path / "a.jsonl").read_text().splitlines()] == ["tiny"] * 3
    assert main(args) == 0
    assert "already answered 3" in capsys.readouterr().out
    assert main(["predict", "--model", str(tiny_checkpoint), "--questions", str(tmp_path / "nope.jsonl"),
                 "--answers", str(tmp_path / "b.jsonl")]) == 1
    assert "nope.jsonl: file not found" in capsys.readouterr().err
