"""Checkpoint save/load: bit-exact round trip, safetensors only, one-line errors naming the file."""

import json
import shutil

import pytest
import torch

from vinstruct.errors import VinstructError
from vinstruct.model.build import build_model
from vinstruct.model.io import load_model, save_model


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_is_bit_exact(tiny_model, tmp_path):
    with torch.no_grad():
        for p in tiny_model.parameters():  # make every weight distinct from a fresh init
            p.add_(torch.randn_like(p) * 0.01)
    save_model(tiny_model, tmp_path / "a")
    loaded = load_model(tmp_path / "a")
    assert _same_weights(tiny_model, loaded)
    assert loaded.config.to_dict() == tiny_model.config.to_dict()
    assert loaded.tokenizer.convert_tokens_to_ids("<image>") == tiny_model.image_token_id
    assert loaded.image_processor.aspect == "pad"


def test_tied_embeddings_are_stored_once_and_stay_tied(tiny_parts, tmp_path):
    vision, llm = tiny_parts
    tied_dir = tmp_path / "llm_tied"
    shutil.copytree(llm, tied_dir)
    cfg = json.loads((tied_dir / "config.json").read_text())
    cfg["tie_word_embeddings"] = True
    (tied_dir / "config.json").write_text(json.dumps(cfg))
    model = build_model(str(vision), str(tied_dir))
    assert model.llm.lm_head.weight is model.llm.get_input_embeddings().weight
    save_model(model, tmp_path / "tied")
    loaded = load_model(tmp_path / "tied")
    assert loaded.llm.lm_head.weight.data_ptr() == loaded.llm.get_input_embeddings().weight.data_ptr()
    assert _same_weights(model, loaded)


def test_sharded_save_loads_back(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path / "sharded", max_shard_size=50_000)
    files = sorted(p.name for p in (tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(files) > 1 and (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert _same_weights(tiny_model, load_model(tmp_path / "sharded"))


def test_saving_over_an_existing_checkpoint_replaces_it_whole(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path / "c")
    (tmp_path / "c" / "stale.txt").write_text("old")
    save_model(tiny_model, tmp_path / "c")
    assert not (tmp_path / "c" / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_pickle_only_directory_is_refused(tiny_checkpoint, tmp_path):
    bad = tmp_path / "pickled"
    shutil.copytree(tiny_checkpoint, bad)
    (bad / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, bad / "pytorch_model.bin")
    with pytest.raises(VinstructError, match=r"pytorch_model.bin: refusing to unpickle"):
        load_model(bad)


def test_missing_weights_name_the_file(tiny_checkpoint, tmp_path):
    bad = tmp_path / "noweights"
    shutil.copytree(tiny_checkpoint, bad)
    (bad / "model.safetensors").unlink()
    with pytest.raises(VinstructError, match=r"model.safetensors: not found"):
        load_model(bad)


def test_wrong_model_type_names_the_config(tiny_checkpoint, tmp_path):
    bad = tmp_path / "wrongtype"
    shutil.copytree(tiny_checkpoint, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_type"] = "bert"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VinstructError) as err:
        load_model(bad)
    assert "config.json" in str(err.value) and "unknown checkpoint format" in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_names_the_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VinstructError, match=r"empty/config.json: not found"):
        load_model(tmp_path / "empty")


def test_shape_mismatch_names_file_and_key(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "shapes"
    shutil.copytree(tiny_checkpoint, bad)
    tensors = load_file(bad / "model.safetensors")
    tensors["projector.0.weight"] = torch.zeros(3, 3)
    save_file(tensors, bad / "model.safetensors")
    with pytest.raises(VinstructError, match=r"model.safetensors: shape mismatch for 'projector.0.weight'"):
        load_model(bad)


def test_unknown_projector_is_named(tiny_checkpoint, tmp_path):
    bad = tmp_path / "proj"
    shutil.copytree(tiny_checkpoint, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["projector_type"] = "qformer"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VinstructError, match="unknown projector type 'qformer'"):
        load_model(bad)


@pytest.mark.parametrize("projector", ["linear", "mlp3x_gelu", "identity"])
def test_projector_choices_build_and_run(tiny_parts, projector, color_images):
    vision, llm = tiny_parts
    if projector == "identity":
        with pytest.raises(VinstructError, match="needs equal dimensions"):
            build_model(str(vision), str(llm), projector=projector)
        return
    model = build_model(str(vision), str(llm), projector=projector, vision_feature_select="cls_patch",
                        vision_feature_pool=2)
    features = model.encode_images(model.image_processor.load([color_images / "red.png"]))
    assert features.shape == (1, model.num_image_tokens, model.llm.config.hidden_size)
    assert model.num_image_tokens == 1 + 2 * 2  # CLS + a 4x4 patch grid pooled by 2


def test_a_full_disk_while_saving_is_one_line_and_leaves_no_half_written_model(tiny_model, tmp_path, monkeypatch,
                                                                                capsys):
    import errno

    import safetensors

    import vinstruct.model.weights
    from vinstruct.cli import main
    from vinstruct.errors import VinstructError
    from vinstruct.model.io import save_model

    def full_disk(*args, **kwargs):
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(vinstruct.model.weights, "save_file", full_disk)
    with pytest.raises(VinstructError, match=r"could not write the weights \(model.safetensors\): .*No space left"):
        save_model(tiny_model, tmp_path / "model")
    assert not (tmp_path / "model").exists() and not list(tmp_path.iterdir())  # the temp directory is gone too

    def no_space(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "data.json"))

    import vinstruct.commands.info as info

    monkeypatch.setattr(info, "run", no_space)
    assert main(["info", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'data.json'}: No space left on device"
