"""On real COCO the audit checks category mentions (with synonyms) and counts; colours and places are unverifiable.

The fixture is a hand-written COCO 2017-style set: real category ids and names, 640x480 images,
instance boxes in pixels, five captions per image.
"""

from __future__ import annotations

import json

import pytest

from vinstruct.audit import audit_file
from vinstruct.audit.engine import Auditor
from vinstruct.data.coco import CocoSet

CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person"},
              {"id": 2, "name": "bicycle", "supercategory": "vehicle"},
              {"id": 3, "name": "car", "supercategory": "vehicle"},
              {"id": 6, "name": "bus", "supercategory": "vehicle"},
              {"id": 17, "name": "cat", "supercategory": "animal"},
              {"id": 18, "name": "dog", "supercategory": "animal"},
              {"id": 38, "name": "kite", "supercategory": "sports"},
              {"id": 63, "name": "couch", "supercategory": "furniture"}]
IMAGES = [{"id": 139, "file_name": "000000000139.jpg", "width": 640, "height": 480},
          {"id": 285, "file_name": "000000000285.jpg", "width": 640, "height": 480}]
BOXES = [(139, 1, [40, 120, 80, 300]), (139, 1, [150, 110, 90, 310]), (139, 18, [260, 330, 120, 100]),
         (139, 2, [420, 250, 200, 180]), (285, 6, [100, 80, 400, 300]), (285, 3, [10, 300, 90, 60]),
         (285, 3, [520, 310, 100, 70]), (285, 3, [560, 200, 70, 50])]
CAPTIONS = {139: ["Two people walk a dog past a bike.", "A man and a woman with their puppy near a bicycle.",
                  "A kite flies above two people in a park.", "People walking a small dog.",
                  "A couple and their dog on a path."],
            285: ["A red bus driving down a street with cars.", "A city bus next to several parked cars.",
                  "A large bus on a road.", "Traffic with a bus and cars.", "A double decker bus in town."]}


def write_coco(root):
    (root / "annotations").mkdir(parents=True)
    annotations = [{"id": i + 1, "image_id": image, "category_id": cat, "bbox": box, "area": box[2] * box[3],
                    "iscrowd": 0, "segmentation": []} for i, (image, cat, box) in enumerate(BOXES)]
    captions = [{"id": 100 + i, "image_id": image, "caption": text}
                for i, (image, text) in enumerate((im, t) for im, texts in CAPTIONS.items() for t in texts)]
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(
        {"images": IMAGES, "annotations": annotations, "categories": CATEGORIES}))
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps({"images": IMAGES, "annotations": captions}))
    return root


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return write_coco(tmp_path_factory.mktemp("coco2017"))


@pytest.fixture(scope="module")
def park(coco_root):
    coco = CocoSet.load(coco_root, "val2017")
    return Auditor.for_set(coco), coco.by_id()[139]


def verdicts(auditor, image, answer, question=None):
    return [(v.claim.ref.noun if v.claim.ref else None, v.kind, v.status)
            for v in auditor.audit_turn(question, answer, image).verdicts]


def test_real_coco_categories_are_read_through_synonyms_and_plurals(park):
    auditor, image = park
    assert auditor.mode == "coco"
    assert verdicts(auditor, image, "A man and a woman are walking their puppy past a bike.") == [
        ("person", "object", "grounded"), ("dog", "object", "grounded"), ("bicycle", "object", "grounded")]
    assert verdicts(auditor, image, "Yes, there is a cat sleeping on the sofa.") == [
        ("cat", "object", "contradicted"), ("couch", "object", "contradicted")]


def test_counts_are_checked_against_instances_and_captions(park):
    auditor, image = park
    assert verdicts(auditor, image, "There are two people in the image.") == [("person", "count", "grounded")]
    assert verdicts(auditor, image, "Three people are walking.") == [("person", "count", "contradicted")]
    assert verdicts(auditor, image, "2", "How many dogs are there?") == [("dog", "count", "contradicted")]


def test_a_category_named_by_a_caption_counts_as_present(park):
    auditor, image = park
    # No kite is annotated, but a caption names one (as CHAIR counts it).
    assert verdicts(auditor, image, "A kite is flying above them.") == [("kite", "object", "grounded")]


def test_colours_and_positions_are_unverifiable_on_coco(park):
    auditor, image = park
    assert verdicts(auditor, image, "The dog is brown.") == [("dog", "color", "unverifiable"),
                                                              ("dog", "object", "grounded")]
    assert verdicts(auditor, image, "The bicycle is on the right side.")[0] == ("bicycle", "position", "unverifiable")


def test_a_data_file_is_matched_to_images_by_file_name_or_the_id_in_it(coco_root, tmp_path):
    data = [
        {"id": "000000000139", "image": "000000000139.jpg", "conversations": [
            {"from": "human", "value": "<image>\nHow many people are in the picture?"},
            {"from": "gpt", "value": "There are two people walking a dog."},
            {"from": "human", "value": "Is there a cat?"}, {"from": "gpt", "value": "Yes, a cat is on the couch."}]},
        {"id": "285", "image": "coco/val2014/COCO_val2014_000000000285.jpg", "conversations": [
            {"from": "human", "value": "What vehicles are there?\n<image>"},
            {"from": "gpt", "value": "A bus and three cars."}]},
        {"id": "gone", "image": "000000999999.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A dog."}]},
        {"id": "text", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]},
    ]
    path = tmp_path / "llava.json"
    path.write_text(json.dumps(data))
    stats = audit_file(path, coco_root, "val2017").stats
    assert stats["audited_samples"] == 2
    assert stats["skipped_samples"] == {"image not in the annotations": 1, "no image": 1}
    assert stats["skipped_examples"]["image not in the annotations"] == ["gone"]
    assert stats["claims"] == {"grounded": 4, "contradicted": 2, "unverifiable": 0}
    assert stats["turns"]["contradicted"] == 1
