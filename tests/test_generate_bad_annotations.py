"""`vinstruct generate` on COCO files with unusable entries: each is skipped and counted in the stats
with its id and reason (default), or, with --on-bad-annotation fail, the run stops with one line
naming the file and the entry. Nothing unusable reaches the teacher or the output."""

from __future__ import annotations

import json
import shutil

import pytest

from vinstruct.cli import main
from vinstruct.data.coco import CocoSet
from vinstruct.data.coco_checks import check_bbox
from vinstruct.generate.pipeline import GenerateOptions, plan_run

NAN = float("nan")


def broken_copy(tiny_coco, tmp_path, change):
    """A copy of the tiny set with `change(instances)` applied to its instances file."""
    root = tmp_path / "coco"
    shutil.copytree(tiny_coco, root)
    path = root / "annotations" / "instances_train.json"
    instances = json.loads(path.read_text())
    change(instances)
    path.write_text(json.dumps(instances))  # NaN is written as JSON's NaN literal, as json.dump does
    return root


def set_bbox(bbox):
    return lambda instances: instances["annotations"][0].update(bbox=bbox)


def set_first(key, value):
    def change(instances):
        instances["annotations"][0][key] = value
    return change


def set_image_width(width):
    return lambda instances: instances["images"][0].update(width=width)


def generate(root, out, *extra):
    return main(["generate", "--no-progress", "--coco-dir", str(root), "--types", "caption", "--out", str(out), *extra])


# (change to the instances file, reason code, words of the one-line error)
BAD_ENTRIES = {
    "negative width": (set_bbox([10, 20, -10, 12]), "bbox_empty", "annotation 1 (image 1): bbox [10, 20, -10, 12] has width -10"),
    "zero height": (set_bbox([10, 20, 5, 0]), "bbox_empty", "annotation 1 (image 1): bbox [10, 20, 5, 0]"),
    "NaN coordinates": (set_bbox([NAN, 0, NAN, 5]), "bbox_not_finite", "annotation 1 (image 1): bbox [nan, 0, nan, 5] holds"),
    "infinite size": (set_bbox([0, 0, float("inf"), 5]), "bbox_not_finite", "annotation 1 (image 1)"),
    "three numbers": (set_bbox([1, 2, 3]), "bbox_malformed", "annotation 1 (image 1): bbox [1, 2, 3] is not a list of 4"),
    "a string": (set_bbox("1,2,3,4"), "bbox_malformed", "annotation 1 (image 1): bbox '1,2,3,4' is not a list of 4"),
    "a number as text": (set_bbox([1, "2", 3, 4]), "bbox_malformed", "annotation 1 (image 1)"),
    "outside the image": (set_bbox([50, 50, 40, 40]), "bbox_outside_image", "bbox [50, 50, 40, 40] reaches outside the 64x64 image"),
    "no bbox": (lambda i: i["annotations"][0].pop("bbox"), "bbox_missing", "annotation 1 (image 1): no bbox"),
    "unknown category": (set_first("category_id", 999), "unknown_category", "annotation 1 (image 1): category_id 999"),
    "unknown image": (set_first("image_id", 777), "unknown_image", "annotation 1 (image 777): image_id 777"),
    "image of width 0": (set_image_width(0), "image_size", "image 1: width is 0"),
    "image width as text": (set_image_width("64"), "image_size", "image 1: width is '64'"),
}


@pytest.mark.parametrize("case", list(BAD_ENTRIES))
def test_an_unusable_entry_is_skipped_and_counted_with_its_id_and_reason(tiny_coco, tmp_path, capsys, case):
    change, reason, _ = BAD_ENTRIES[case]
    root = broken_copy(tiny_coco, tmp_path, change)
    out = tmp_path / "out.json"
    assert generate(root, out) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "skipped input: 1 " in captured.out and f"({reason}=1)" in captured.out
    skipped = json.loads(out.with_name("out.stats.json").read_text())["skipped"]
    kind = "images" if reason.startswith("image") else "annotations"
    assert skipped[kind] == {reason: 1}
    (entry,) = skipped["entries"]
    assert entry["reason"] == reason and entry["id"] == 1 and entry["detail"]
    if kind == "images":  # the image is left out with its samples
        first = json.loads((root / "annotations" / "instances_train.json").read_text())["images"][0]["file_name"]
        assert not any(s["image"].endswith("/" + first) for s in json.loads(out.read_text()))


@pytest.mark.parametrize("case", list(BAD_ENTRIES))
def test_with_on_bad_annotation_fail_the_run_stops_in_one_line_naming_file_and_entry(tiny_coco, tmp_path, capsys, case):
    change, _, words = BAD_ENTRIES[case]
    root = broken_copy(tiny_coco, tmp_path, change)
    assert generate(root, tmp_path / "out.json", "--on-bad-annotation", "fail") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "instances_train.json: " in err and words in err
    assert not (tmp_path / "out.json").exists()


def test_the_teacher_never_sees_a_skipped_box(tiny_coco, tmp_path):
    from vinstruct.endpoint.client import EndpointConfig

    root = broken_copy(tiny_coco, tmp_path, set_bbox([NAN, 0, NAN, 5]))
    plan = plan_run(GenerateOptions(coco_dir=root, out=tmp_path / "x.json", types=("detail",),
                                    teacher=EndpointConfig(base_url="http://127.0.0.1:9/v1", model="m")))
    first = next(t for t in plan.tasks if t.image.id == 1)
    symbolic = first.messages[-1]["content"]
    assert "nan" not in symbolic and symbolic.count(": [") == len(plan.images[0].objects)
    assert [p.reason for p in plan.skipped] == ["bbox_not_finite"]


def test_a_box_past_the_edge_by_rounding_noise_is_clipped_not_skipped():
    assert check_bbox([0, 0, 64.0000001, 10], 64, 64) == ([0.0, 0.0, 64.0, 10.0], None)
    assert check_bbox([-0.4, 3, 10, 10], 64, 64) == ([0.0, 3.0, pytest.approx(9.6), 10.0], None)
    assert check_bbox([63.5, 0, 1.4, 10], 64, 64) == ([63.5, 0.0, 0.5, 10.0], None)  # 0.9 px past: clipped
    assert check_bbox([10, 10, 5, 5], 64, 64) == ([10, 10, 5, 5], None)  # inside: unchanged
    assert check_bbox([10, 10, 60, 5], 64, 64)[1][0] == "bbox_outside_image"  # 6 px past: refused
    assert check_bbox([64.5, 0, 0.4, 5], 64, 64)[1][0] == "bbox_outside_image"  # only in the tolerance band


def test_a_missing_image_file_is_skipped_and_counted_and_no_sample_points_at_it(tiny_coco, tmp_path, capsys):
    root = tmp_path / "coco"
    shutil.copytree(tiny_coco, root)
    first = sorted((root / "images" / "train").iterdir())[0]
    first.unlink()
    out = tmp_path / "out.json"
    assert generate(root, out) == 0
    samples = json.loads(out.read_text())
    assert samples and not any(s["image"].endswith(first.name) for s in samples)
    stats = json.loads(out.with_name("out.stats.json").read_text())
    assert stats["skipped"]["images"] == {"image_file_missing": 1}
    assert stats["skipped"]["entries"][0]["id"] == 1 and stats["images"] == 7
    assert generate(root, out, "--on-bad-annotation", "fail") == 1
    assert f"image 1: file {first} not found" in capsys.readouterr().err


def test_no_image_file_at_all_is_an_error_not_an_empty_output(tiny_coco, tmp_path, capsys):
    root = tmp_path / "coco"
    shutil.copytree(tiny_coco, root)
    shutil.rmtree(root / "images")
    assert generate(root, tmp_path / "out.json") == 1
    assert "none of the 8 image files" in capsys.readouterr().err


def test_merged_shard_stats_name_each_skipped_entry_once(tiny_coco, tmp_path):
    def break_three(instances):
        instances["annotations"][0]["bbox"] = [1, 2, 3]  # an annotation of image 1
        instances["annotations"][-1]["bbox"] = [0, 0, -1, 4]  # an annotation of the last image
        instances["images"][3]["height"] = 0  # image 4, with its annotations
        instances["annotations"].append({"id": 999, "image_id": 1234, "category_id": 1, "bbox": [0, 0, 1, 1]})

    root = broken_copy(tiny_coco, tmp_path, break_three)
    shards = [tmp_path / f"shard{i}.json" for i in range(3)]
    for i, out in enumerate(shards):
        assert generate(root, out, "--shard", f"{i}/3") == 0
    assert main(["generate", "--merge", *map(str, shards), "--out", str(tmp_path / "all.json")]) == 0
    merged = json.loads((tmp_path / "all.stats.json").read_text())["skipped"]
    assert merged["annotations"] == {"bbox_empty": 1, "bbox_malformed": 1, "unknown_image": 1}
    assert merged["images"] == {"image_size": 1}
    assert sorted(str(e["id"]) for e in merged["entries"]) == sorted(["1", "4", "999", str(_last_annotation_id(root))])


def _last_annotation_id(root):
    instances = json.loads((root / "annotations" / "instances_train.json").read_text())
    return [a for a in instances["annotations"] if a["id"] != 999][-1]["id"]


def test_other_readers_of_a_coco_set_skip_the_same_entries(tiny_coco, tmp_path):
    root = broken_copy(tiny_coco, tmp_path, set_bbox("oops"))
    coco = CocoSet.load(root, "train")
    assert [(p.id, p.reason) for p in coco.problems] == [(1, "bbox_malformed")]
    assert all(len(o.bbox) == 4 for image in coco.images for o in image.objects)
