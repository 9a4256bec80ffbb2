"""The training dataset: validation up front, skip-or-fail on bad samples, padded batches."""

import json
import logging

import pytest
import torch

from vinstruct.data.dataset import Collator, LlavaDataset
from vinstruct.data.encoding import IGNORE_INDEX, EncodingSpec
from vinstruct.errors import BadSampleError, VinstructError


def _sample(sample_id, image="red.png", question="<image>\nWhat colour?", answer="Red."):
    sample = {"id": sample_id, "conversations": [{"from": "human", "value": question},
                                                 {"from": "gpt", "value": answer}]}
    if image is not None:
        sample["image"] = image
    return sample


@pytest.fixture
def data_dir(color_images, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    for name in ("red.png", "blue.png", "green.png"):
        (tmp_path / name).write_bytes((color_images / name).read_bytes())
    return tmp_path


def _write(data_dir, samples):
    path = data_dir / "data.json"
    path.write_text(json.dumps(samples))
    return path


def test_loads_images_and_text_only_samples(tiny_model, data_dir):
    samples = [_sample("a"), _sample("b", image=None, question="Say hi.", answer="Hi."), _sample("c", "blue.png")]
    ds = LlavaDataset(_write(data_dir, samples), EncodingSpec.for_model(tiny_model), tiny_model.image_processor)
    assert len(ds) == 3 and ds.has_image == [True, False, True]
    batch = Collator(tiny_model.tokenizer.pad_token_id)([ds[i] for i in range(3)])
    assert batch["pixel_values"].shape[0] == 2
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    out = tiny_model(batch["input_ids"], attention_mask=batch["attention_mask"],
                     pixel_values=batch["pixel_values"], labels=batch["labels"])
    assert torch.isfinite(out.loss)


def test_bad_samples_are_skipped_and_counted(tiny_model, data_dir, caplog):
    samples = [
        _sample("ok"),
        _sample("missing", image="nope.png"),
        _sample("twice", question="<image><image> hi"),
        _sample("gpt-image", answer="<image>"),
        {"id": "empty", "image": "red.png", "conversations": []},
    ]
    with caplog.at_level(logging.WARNING):
        ds = LlavaDataset(_write(data_dir, samples), EncodingSpec.for_model(tiny_model), tiny_model.image_processor)
    assert [item["id"] for item in ds.items] == ["ok"]
    assert ds.skipped.total == 4
    assert "skipped 4 sample(s)" in caplog.text


def test_fail_mode_raises_naming_the_sample(tiny_model, data_dir):
    samples = [_sample("ok"), _sample("missing", image="nope.png")]
    with pytest.raises(BadSampleError, match=r"sample 'missing': missing image: image file not found: .*nope.png"):
        LlavaDataset(_write(data_dir, samples), EncodingSpec.for_model(tiny_model), tiny_model.image_processor,
                     on_bad_sample="fail")


def test_undecodable_image_is_skipped_or_raised(tiny_model, data_dir):
    path = _write(data_dir, [_sample("broken", image="broken.png")])
    skip = LlavaDataset(path, EncodingSpec.for_model(tiny_model), tiny_model.image_processor)
    assert skip[0] is None and skip.skipped.total == 1
    assert Collator(0)([skip[0]])["input_ids"] is None
    fail = LlavaDataset(path, EncodingSpec.for_model(tiny_model), tiny_model.image_processor, on_bad_sample="fail")
    with pytest.raises(BadSampleError, match=r"sample 'broken': undecodable image: .*cannot decode image"):
        fail[0]


def test_invalid_json_names_the_line(tiny_model, data_dir):
    path = data_dir / "bad.json"
    path.write_text('[{"id": "a",\n  "conversations": [}\n]')
    with pytest.raises(VinstructError, match=r"bad.json: invalid JSON at line 2"):
        LlavaDataset(path, EncodingSpec.for_model(tiny_model), tiny_model.image_processor)


@pytest.mark.parametrize("side", ["left", "right"])
def test_collator_padding_sides(tiny_model, data_dir, side):
    samples = [_sample("a"), _sample("b", image=None, question="Hi.", answer="A much longer answer than before.")]
    ds = LlavaDataset(_write(data_dir, samples), EncodingSpec.for_model(tiny_model), tiny_model.image_processor)
    batch = Collator(tiny_model.tokenizer.pad_token_id, padding_side=side)([ds[0], ds[1]])
    short = int(batch["attention_mask"].sum(1).argmin())
    pad_columns = (batch["attention_mask"][short] == 0).nonzero().flatten()
    assert len(pad_columns) > 0
    assert (pad_columns[0] == 0) if side == "left" else (pad_columns[-1] == batch["input_ids"].shape[1] - 1)
    assert (batch["labels"][short][pad_columns] == IGNORE_INDEX).all()
