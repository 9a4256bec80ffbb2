"""`vinstruct generate` end to end: COCO set -> scripted teacher over HTTP -> LLaVA JSON -> dataset."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from coco_shapes import check_answer, ground_truth

from vinstruct.cli import main
from vinstruct.data.dataset import LlavaDataset
from vinstruct.data.encoding import IGNORE_INDEX, EncodingSpec
from vinstruct.endpoint.client import EndpointConfig
from vinstruct.generate.faults import FaultPlan
from vinstruct.generate.pipeline import GenerateOptions, generate
from vinstruct.generate.scripted import create_app
from vinstruct.generate.server import running_server


def run_cli(*args) -> int:
    return main(["generate", "--no-progress", *map(str, args)])


def load(path):
    return json.loads(path.read_text())


def test_end_to_end_data_loads_in_the_dataset_with_correct_masks_and_true_answers(tiny_coco, tmp_path, tiny_model):
    out = tmp_path / "data" / "stage2.json"
    with running_server(create_app()) as url:
        assert run_cli("--coco-dir", tiny_coco, "--teacher-url", url, "--types", "conversation,detail,complex,caption",
                       "--per-image", "conversation=3,detail=1,complex=1,caption=2", "--boxes", "all", "--out", out) == 0
    samples = load(out)
    assert Counter(s["id"].split("-")[1] for s in samples) == {"conversation": 24, "detail": 8, "complex": 8, "caption": 16}
    assert len({s["id"] for s in samples}) == len(samples)
    for sample in samples:
        turns = sample["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert sum(t["value"].count("<image>") for t in turns) == 1
        assert turns[0]["value"].startswith("<image>\n") or turns[0]["value"].endswith("\n<image>")

    dataset = LlavaDataset(out, EncodingSpec.for_model(tiny_model), tiny_model.image_processor, on_bad_sample="fail")
    assert len(dataset) == len(samples)
    tokenizer = tiny_model.tokenizer
    for item, sample in zip(dataset.items, samples):
        targets = [t for t in item["labels"] if t != IGNORE_INDEX]
        decoded = re.sub(r"\s+", "", tokenizer.decode(targets))
        replies = "".join(t["value"] + tokenizer.eos_token for t in sample["conversations"] if t["from"] == "gpt")
        assert decoded == re.sub(r"\s+", "", replies)  # exactly the assistant replies are supervised
    assert dataset[0]["pixel_values"] is not None

    truth = ground_truth(tiny_coco)
    checked = Counter()
    for sample in samples:
        objects = truth[sample["image"].rsplit("/", 1)[-1]]
        turns = sample["conversations"]
        for question, answer in zip(turns[0::2], turns[1::2]):
            kind = check_answer(question["value"], answer["value"], objects)
            if kind:
                checked[kind] += 1
    assert checked["count"] >= 5 and checked["color"] >= 3 and checked["exists"] >= 3, checked
    assert checked["detail_count"] >= 8, checked  # every description (and overview answer) states the count right
    stats = load(out.with_name("stage2.stats.json"))
    assert stats["types"]["conversation"]["kept"] == 24 and stats["samples"] == len(samples)


def options(coco, out, url, **overrides):
    teacher = EndpointConfig(base_url=url, model="scripted", concurrency=4, timeout=0.5, max_retries=8,
                            backoff_base=0.01, backoff_max=0.05)
    return GenerateOptions(coco_dir=coco, out=out, teacher=teacher, boxes_for=frozenset({"conversation", "detail", "complex"}),
                           progress=False, **overrides)


def test_faults_everywhere_the_run_completes_and_accounts_for_every_image(tiny_coco, tmp_path):
    plan = FaultPlan(rates={"429": 0.1, "500": 0.1, "timeout": 0.05, "malformed": 0.1, "truncated": 0.1, "slow": 0.1},
                     retry_after_s=0.02, hang_s=1.5, slow_ms=100, seed=3)
    with running_server(create_app(faults=plan)) as url:
        stats = generate(options(tiny_coco, tmp_path / "faulty.json", url, per_image={"conversation": 2}))
    assert all(plan.counts[kind] > 0 for kind in ("429", "500", "timeout", "malformed", "truncated", "slow")), plan.counts
    for task, s in stats.types.items():
        assert s.kept + sum(s.dropped.values()) + sum(s.failed.values()) == s.tasks, (task, s)
    assert stats.types["conversation"].tasks == 16 and stats.types["detail"].tasks == 8
    samples = load(tmp_path / "faulty.json")
    assert len({s["id"] for s in samples}) == len(samples) == sum(s.kept for s in stats.types.values())
    assert sum(stats.client["retries"].values()) > 0
    journal = [json.loads(line) for line in (tmp_path / "faulty.cache.jsonl").read_text().splitlines()]
    assert len({row["key"] for row in journal}) == len(journal)  # nothing recorded twice


def test_a_rerun_asks_nothing_and_writes_the_same_file(tiny_coco, tmp_path):
    app = create_app()
    with running_server(app) as url:
        generate(options(tiny_coco, tmp_path / "a.json", url))
        first, asked = (tmp_path / "a.json").read_text(), app.state.requests
        stats = generate(options(tiny_coco, tmp_path / "a.json", url))
    assert app.state.requests == asked == 24
    assert (tmp_path / "a.json").read_text() == first
    assert stats.types["detail"].cached == 8 and stats.client == {}
    assert not (tmp_path / "a.partial.jsonl").exists()


def test_shards_split_the_images_and_merge_into_the_unsharded_output(tiny_coco, tmp_path):
    with running_server(create_app()) as url:
        generate(options(tiny_coco, tmp_path / "all.json", url))
        for i in range(3):
            generate(options(tiny_coco, tmp_path / f"shard{i}.json", url, shard=(i, 3)))
    shards = [load(tmp_path / f"shard{i}.json") for i in range(3)]
    images = [{s["image"] for s in shard} for shard in shards]
    assert not (images[0] & images[1] or images[0] & images[2] or images[1] & images[2])
    assert run_cli("--merge", *(tmp_path / f"shard{i}.json" for i in range(3)), "--out", tmp_path / "merged.json") == 0
    merged, whole = load(tmp_path / "merged.json"), load(tmp_path / "all.json")
    assert sorted(merged, key=lambda s: s["id"]) == sorted(whole, key=lambda s: s["id"])
    assert load(tmp_path / "merged.stats.json")["types"]["conversation"]["kept"] == 8
    assert run_cli("--merge", tmp_path / "shard0.json", tmp_path / "shard0.json", "--out", tmp_path / "x.json") == 1


def test_mixing_keeps_types_in_the_given_proportions(tiny_coco, tmp_path):
    with running_server(create_app()) as url:
        stats = generate(options(tiny_coco, tmp_path / "mix.json", url, types=("conversation", "detail", "complex", "caption"),
                                 per_image={"conversation": 2, "caption": 1}, mix={"conversation": 2, "detail": 1, "complex": 0,
                                                                                    "caption": 1}))
    counts = Counter(s["id"].split("-")[1] for s in load(tmp_path / "mix.json"))
    assert counts == {"conversation": 16, "detail": 8, "caption": 8} == stats.mixed


def test_caption_expansion_needs_no_teacher(tiny_coco, tmp_path):
    out = tmp_path / "stage1.json"
    assert run_cli("--coco-dir", tiny_coco, "--types", "caption", "--per-image", "5", "--out", out) == 0
    samples = load(out)
    assert len(samples) == 40
    questions = Counter(s["conversations"][0]["value"].replace("<image>", "").strip() for s in samples)
    assert len(questions) >= 8  # drawn from the list of brief-description instructions
    assert {s["conversations"][0]["value"].startswith("<image>") for s in samples} == {True, False}
    captions = json.loads((tiny_coco / "annotations" / "captions_train.json").read_text())["annotations"]
    assert {s["conversations"][1]["value"] for s in samples} <= {c["caption"] for c in captions}


def test_more_samples_per_image_are_different(tiny_coco, tmp_path):
    with running_server(create_app()) as url:
        generate(options(tiny_coco, tmp_path / "many.json", url, types=("conversation",), per_image={"conversation": 3}))
    by_image = {}
    for sample in load(tmp_path / "many.json"):
        by_image.setdefault(sample["image"], []).append(json.dumps(sample["conversations"]))
    assert all(len(set(texts)) == 3 for texts in by_image.values())


def test_show_prompt_prints_system_examples_and_symbolic_input(tiny_coco, tmp_path, capsys):
    assert run_cli("--coco-dir", tiny_coco, "--teacher-url", "http://127.0.0.1:9/v1", "--types", "conversation,detail",
                   "--out", tmp_path / "x.json", "--show-prompt") == 0
    shown = capsys.readouterr().out
    assert "=== conversation" in shown and "=== detail" in shown
    conversation = shown.split("=== detail")[0]
    box_line = re.compile(r"^\w+ \w+: \[[\d., ]+\]$", re.MULTILINE)
    captions = json.loads((tiny_coco / "annotations" / "captions_train.json").read_text())["annotations"]
    assert captions[0]["caption"] in conversation and not box_line.search(conversation)  # captions only by default
    assert box_line.search(shown.split("=== detail")[1])  # detail sees boxes
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--types", "conversation,poems"], "unknown type(s) poems"),
    (["--types", "caption", "--shard", "3/3"], "--shard: expected I/N"),
    (["--types", "caption", "--shard", "a/b"], "--shard: expected I/N"),
    (["--types", "conversation"], "need a teacher"),
    (["--types", "caption", "--per-image", "caption=x"], "--per-image"),
    (["--types", "caption", "--mix", "caption"], "--mix"),
    (["--types", "caption", "--split", "nosuch"], "instances_nosuch.json: not found"),
])
def test_bad_arguments_give_one_clear_line(tiny_coco, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert run_cli("--coco-dir", tiny_coco, "--out", tmp_path / "x.json", *args) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x.json").exists()


def test_broken_coco_sets_are_reported_with_the_file_at_fault(tiny_coco, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_coco, broken)
    captions = json.loads((broken / "annotations" / "captions_train.json").read_text())
    captions["annotations"] = [a for a in captions["annotations"] if a["image_id"] != 3]
    (broken / "annotations" / "captions_train.json").write_text(json.dumps(captions))
    assert run_cli("--coco-dir", broken, "--types", "caption", "--out", tmp_path / "x.json") == 1
    assert "captions_train.json: 1 image(s) have no caption (e.g. image id 3)" in capsys.readouterr().err
    assert run_cli("--coco-dir", broken, "--types", "caption", "--skip-uncaptioned", "--out", tmp_path / "x.json") == 0
    assert len(load(tmp_path / "x.json")) == 7
    captions["images"].append({"id": 99, "file_name": "nope.png", "width": 1, "height": 1})
    (broken / "annotations" / "captions_train.json").write_text(json.dumps(captions))
    assert run_cli("--coco-dir", broken, "--types", "caption", "--out", tmp_path / "x.json") == 1
    assert "not in instances_train.json" in capsys.readouterr().err
    (broken / "annotations" / "instances_train.json").write_text("{not json")
    assert run_cli("--coco-dir", broken, "--types", "caption", "--out", tmp_path / "x.json") == 1
    assert "instances_train.json: invalid JSON at line 1" in capsys.readouterr().err


def test_packing_joins_each_images_samples_into_one_conversation(tiny_coco, tmp_path):
    with running_server(create_app()) as url:
        generate(options(tiny_coco, tmp_path / "flat.json", url, types=("conversation", "complex", "caption")))
        generate(options(tiny_coco, tmp_path / "packed.json", url, types=("conversation", "complex", "caption"), pack=True))
    flat, packed = load(tmp_path / "flat.json"), load(tmp_path / "packed.json")
    assert Counter(s["id"].split("-")[1] for s in packed) == {"packed": 8, "caption": 8}
    for sample in (s for s in packed if "-packed-" in s["id"]):
        parts = [s for s in flat if s["image"] == sample["image"] and "-caption-" not in s["id"]]
        assert len(sample["conversations"]) == sum(len(p["conversations"]) for p in parts)
        assert sum(t["value"].count("<image>") for t in sample["conversations"]) == 1
        assert "<image>" in sample["conversations"][0]["value"]
