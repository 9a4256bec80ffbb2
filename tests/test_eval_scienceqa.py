"""ScienceQA: the reader on files in ScienceQA's own schema, the world emitter, the judge ensemble."""

import json
import re

import pytest
from eval_support import serve

from vinstruct.eval import scienceqa, scripted_judge, sqa_world
from vinstruct.eval.endpoints import make_judge
from vinstruct.errors import VinstructError

pytestmark = pytest.mark.usefixtures("one_thread")


def _sqa_files(tmp_path, problems=None, splits=None):
    """problems.json / pid_splits.json exactly as ScienceQA ships them (all fields, string pids)."""
    problems = problems or {
        "11": {"question": "Which tense does the sentence use?\nMona will print her name with care.",
               "choices": ["present tense", "future tense", "past tense"], "answer": 1, "hint": "",
               "image": None, "task": "closed choice", "grade": "grade3", "subject": "language science",
               "topic": "verbs", "category": "Verb tense", "skill": "Is the sentence in the past, present, or future tense?",
               "lecture": "Present tense verbs tell you about something that is happening now.",
               "solution": "The sentence is in future tense.", "split": "test"},
        "12": {"question": "Which of these states is farthest north?", "choices": ["Arizona", "Ohio", "Georgia", "Louisiana"],
               "answer": 1, "hint": "", "image": "image.png", "task": "closed choice", "grade": "grade4",
               "subject": "social science", "topic": "geography", "category": "Geography",
               "skill": "Read a map: cardinal directions", "lecture": "", "solution": "", "split": "test"},
        "13": {"question": "Which property do these two objects have in common?", "choices": ["hard", "bendable"],
               "answer": 0, "hint": "Select the best answer.", "image": "image.png", "task": "closed choice",
               "grade": "grade9", "subject": "natural science", "topic": "physics", "category": "Materials",
               "skill": "Compare properties of objects", "lecture": "", "solution": "", "split": "test"},
        "14": {"question": "What is the mass of a pencil?", "choices": ["9 grams", "9 kilograms"], "answer": 0,
               "hint": "Select the better estimate.", "image": None, "task": "closed choice", "grade": "grade5",
               "subject": "natural science", "topic": "units-and-measurement", "category": "Units and measurement",
               "skill": "Choose metric units of mass", "lecture": "", "solution": "", "split": "train"},
    }
    splits = splits or {"train": ["14"], "val": [], "test": ["11", "12", "13"], "minival": [], "minitest": ["11"]}
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    (tmp_path / "pid_splits.json").write_text(json.dumps(splits))
    return tmp_path / "problems.json", tmp_path / "pid_splits.json"


def test_reader_takes_one_split_and_fills_the_breakdowns(tmp_path):
    problems = scienceqa.load_problems(*_sqa_files(tmp_path), split="test")
    assert [p.pid for p in problems] == ["11", "12", "13"]
    assert [p.groups() for p in problems] == [["LAN", "NO", "G1-6"], ["SOC", "IMG", "G1-6"],
                                              ["NAT", "TXT", "IMG", "G7-12"]]
    assert problems[1].answer_letter == "B"
    assert scienceqa.prompt(problems[2]) == (
        "Context: Select the best answer.\nQuestion: Which property do these two objects have in common?\n"
        "Options:\nA. hard\nB. bendable\nAnswer with the letter of the correct option.")
    questions = scienceqa.questions(problems)
    assert questions[1]["image"] == "12/image.png" and "image" not in questions[0]


@pytest.mark.parametrize("change, message", [
    (lambda p: p["11"].pop("choices"), r"problem '11': missing field 'choices'"),
    (lambda p: p["11"].update(answer=3), r"problem '11': 'answer' must be an index into 'choices' \(0-2\), got 3"),
    (lambda p: p["12"].update(choices="Ohio"), r"problem '12': 'choices' must be a list"),
    (lambda p: p["13"].update(image=7), r"problem '13': 'image' must be a file name or null"),
])
def test_reader_names_the_problem_and_field_at_fault(tmp_path, change, message):
    files = _sqa_files(tmp_path)
    problems = json.loads(files[0].read_text())
    change(problems)
    files = _sqa_files(tmp_path, problems)
    with pytest.raises(VinstructError, match=message):
        scienceqa.load_problems(*files, split="test")


def test_reader_checks_the_split_file(tmp_path):
    files = _sqa_files(tmp_path, splits={"test": ["11", "99"]})
    with pytest.raises(VinstructError, match=r"lists 1 id\(s\) not in problems.json \(e.g. '99'\)"):
        scienceqa.load_problems(*files, split="test")
    with pytest.raises(VinstructError, match=r"no split 'val'"):
        scienceqa.load_problems(*files, split="val")


def test_world_problems_use_the_scienceqa_schema(tiny_world, tmp_path):
    problems_path, splits_path = sqa_world.build_problems(tiny_world, "test", tmp_path, seed=0)
    raw = json.loads(problems_path.read_text())
    assert set(next(iter(raw.values()))) >= {"question", "choices", "answer", "hint", "image", "task", "grade",
                                             "subject", "topic", "category", "skill", "lecture", "solution", "split"}
    problems = scienceqa.load_problems(problems_path, splits_path, "test")
    groups = {g for p in problems for g in p.groups()}
    assert groups >= {"NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12"}
    for p in problems:
        if p.image:
            assert (tmp_path / "images" / "test" / p.pid / p.image).is_file()


def test_judge_ensemble_arbitrates_disagreements_over_http(tiny_world, tmp_path):
    problems = scienceqa.load_problems(*sqa_world.build_problems(tiny_world, "test", tmp_path), split="test")
    # A model that gets every image problem right and every text problem wrong.
    wrong = lambda p: "ABCD"[(p.answer + 1) % len(p.choices)]  # noqa: E731
    replies = {p.pid: p.answer_letter if p.image else wrong(p) for p in problems}
    with serve([scripted_judge.respond]) as url:
        result = scienceqa.ensemble(problems, replies, make_judge(url), progress=False)
    n_text = sum(1 for p in problems if not p.image)
    model = scienceqa.accuracy(problems, {p.pid: scienceqa.model_letter(replies[p.pid], p) for p in problems})
    assert model["overall"]["correct"] == len(problems) - n_text
    assert result["disputed"] == n_text  # the judge solves every text problem and disagrees with the model
    assert result["judge_alone"]["overall"]["correct"] == n_text  # it abstains on the image problems
    assert result["ensemble"]["overall"]["accuracy"] == 100.0
    assert result["complement"]["overall"]["accuracy"] == 100.0
    assert not result["incomplete"]


def test_world_training_samples_teach_the_evaluation_prompt(tiny_world):
    from vinstruct.data.coco import CocoSet

    scenes = [img for img in CocoSet.load(tiny_world, "train").images if img.objects]
    both = sqa_world.training_samples(tiny_world, "train", seed=0)
    one = sqa_world.training_samples(tiny_world, "train", seed=0, per_image=1)
    assert len(both) == 2 * len(scenes) and len(one) == len(scenes)
    assert 0 < sum("image" in s for s in one) < len(one)  # the two kinds alternate
    for sample in both:
        human, gpt = sample["conversations"]
        text = human["value"].removeprefix("<image>\n")
        assert text.endswith(scienceqa.ANSWER_INSTRUCTION) and "\nOptions:\nA. " in text
        assert human["value"].startswith("<image>\n") == ("image" in sample)
        if "image" in sample:
            assert (tiny_world / sample["image"]).is_file()
        letter = gpt["value"].removesuffix(".")
        options = [line[3:] for line in text.splitlines() if len(line) > 3 and line[1:3] == ". "]
        assert letter in "ABCDE"[:len(options)]
    # the reply's letter is the right option: for colour questions, the colour of the named shape
    by_id = {img.id: img for img in scenes}
    checked = 0
    for sample in both:
        human, gpt = sample["conversations"]
        match = re.search(r"What color is the (\w+) in the picture\?", human["value"])
        if not match:
            continue
        scene = by_id[int(sample["id"].split("-")[1])]
        colors = {o.attributes["color"] for o in scene.objects if o.attributes["shape"] == match.group(1)}
        options = dict(line.split(". ", 1) for line in human["value"].splitlines() if re.match(r"^[A-E]\. ", line))
        assert options[gpt["value"].removesuffix(".")] in colors
        checked += 1
    assert checked > 0
    with pytest.raises(VinstructError, match="per_image"):
        sqa_world.training_samples(tiny_world, "train", per_image=3)
