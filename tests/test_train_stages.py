"""What each stage trains, that it learns, and the projector-only file between stages."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vinstruct.errors import VinstructError
from vinstruct.model.build import build_model
from vinstruct.model.io import load_model
from vinstruct.train import run_training
from vinstruct.train.model_init import load_projector_file
from vinstruct.train.stages import freeze_for_stage


def _weights(directory):
    return load_file(str(directory / "model.safetensors"))


def _changed(before, after, prefix):
    return [k for k in after if k.startswith(prefix) and not torch.equal(before[k], after[k])]


def test_stage1_changes_only_the_projector(train_config, tiny_parts):
    config = train_config("pretrain")
    result = run_training(config)
    torch.manual_seed(0)  # the run seeds itself the same way before building the model
    start = build_model(str(tiny_parts[0]), str(tiny_parts[1])).state_dict()
    end = _weights(result.checkpoint)
    assert set(start) == set(end)
    assert _changed(start, end, "vision_tower.") == []
    assert _changed(start, end, "llm.") == []
    assert sorted(_changed(start, end, "projector.")) == sorted(k for k in end if k.startswith("projector."))
    assert result.trainable.trainable == result.trainable.projector > 0
    # stage 1 also writes the projector alone, keys without the "projector." prefix
    projector = load_file(str(result.projector_file))
    assert sorted(projector) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert torch.equal(projector["0.weight"], end["projector.0.weight"])


def test_stage2_leaves_the_vision_tower_bit_identical(train_config, tiny_checkpoint):
    result = run_training(train_config("finetune", init_from=str(tiny_checkpoint), vision=None, llm=None))
    start, end = _weights(tiny_checkpoint), _weights(result.checkpoint)
    assert _changed(start, end, "vision_tower.") == []
    assert _changed(start, end, "projector.")
    assert _changed(start, end, "llm.model.layers.")
    assert result.trainable.vision_tower == 0 and result.trainable.llm > 0


def test_loss_goes_down_on_a_tiny_overfit_set(train_config):
    result = run_training(train_config("finetune", epochs=25, per_device_batch_size=11, lr=5e-3,
                                       warmup_ratio=0.0, lr_scheduler="constant", max_grad_norm=0.0))
    rows = [json.loads(line) for line in result.metrics.read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert len(losses) == 25
    assert losses[-1] < 0.3 * losses[0]


def test_stage2_from_a_projector_file(train_config, tiny_parts, tmp_path):
    stage1 = run_training(train_config("pretrain", max_steps=2))
    stage2 = run_training(train_config("finetune", projector_file=str(stage1.projector_file), max_steps=1,
                                       lr=0.0, warmup_ratio=0.0, output_dir=str(tmp_path / "s2")))
    # with lr 0 the stage-2 model still holds exactly stage 1's projector
    assert torch.equal(_weights(stage2.checkpoint)["projector.0.weight"],
                       load_file(str(stage1.projector_file))["0.weight"])


def test_a_projector_file_of_another_kind_is_refused(train_config, tiny_parts):
    stage1 = run_training(train_config("pretrain", max_steps=1))
    linear = build_model(str(tiny_parts[0]), str(tiny_parts[1]), projector="linear")
    with pytest.raises(VinstructError, match="projector_type is 'mlp2x_gelu' but the model has 'linear'"):
        load_projector_file(linear, stage1.projector_file)
    with pytest.raises(VinstructError, match="not a vinstruct projector file"):
        load_projector_file(linear, stage1.checkpoint / "model.safetensors")


def test_freezing_is_decided_by_stage(tiny_model):
    pretrain = freeze_for_stage(tiny_model, "pretrain")
    assert pretrain.trainable == pretrain.projector and pretrain.llm == 0
    finetune = freeze_for_stage(tiny_model, "finetune")
    assert finetune.vision_tower == 0 and finetune.llm == sum(p.numel() for p in tiny_model.llm.parameters())
    assert "trainable parameters:" in finetune.line()


def test_cached_vision_features_train_exactly_like_computed_ones(train_config, tmp_path):
    computed = run_training(train_config("pretrain", max_steps=3, output_dir=str(tmp_path / "a")))
    cached = run_training(train_config("pretrain", max_steps=3, cache_vision_features=True,
                                       output_dir=str(tmp_path / "b")))
    a, b = _weights(computed.checkpoint), _weights(cached.checkpoint)
    torch.testing.assert_close(a["projector.0.weight"], b["projector.0.weight"], atol=1e-5, rtol=0)
    assert load_model(cached.checkpoint).num_image_tokens > 0


def test_partial_tuning_changes_only_the_top_layers_and_final_norm(train_config, tiny_checkpoint):
    result = run_training(train_config("finetune", init_from=str(tiny_checkpoint), vision=None, llm=None,
                                       llm_train_layers=1, train_projector=False))
    start, end = _weights(tiny_checkpoint), _weights(result.checkpoint)
    top = max(int(k.split(".")[3]) for k in end if k.startswith("llm.model.layers."))
    changed = _changed(start, end, "")
    assert changed and all(k.startswith((f"llm.model.layers.{top}.", "llm.model.norm.")) for k in changed)
    assert result.trainable.projector == 0 and result.trainable.vision_tower == 0


@pytest.mark.parametrize("overrides, message", [
    ({"llm_train_layers": -1}, "llm_train_layers must be"),
    ({"stage": "pretrain", "llm_train_layers": 2}, "apply to stage 2"),
    ({"lora": True, "llm_train_layers": 2}, "LoRA or llm_train_layers"),
])
def test_partial_tuning_options_are_checked(train_config, overrides, message):
    stage = overrides.pop("stage", "finetune")
    with pytest.raises(VinstructError, match=message):
        run_training(train_config(stage, **overrides))


def test_release_memory_every_k_steps_and_the_same_weights(train_config, monkeypatch, tmp_path):
    """Trimming the C heap every K steps changes memory, never the weights."""
    from vinstruct.train import loop

    calls = []
    monkeypatch.setattr(loop, "release_free_memory", lambda: calls.append(1) or True)
    plain = run_training(train_config("finetune", max_steps=4, output_dir=str(tmp_path / "plain")))
    assert calls == []
    trimmed = run_training(train_config("finetune", max_steps=4, release_memory_every=2,
                                        output_dir=str(tmp_path / "trimmed")))
    assert len(calls) == 2
    a, b = _weights(plain.checkpoint), _weights(trimmed.checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_release_memory_every_rejects_a_negative_count(train_config):
    with pytest.raises(VinstructError, match="release_memory_every"):
        run_training(train_config("finetune", release_memory_every=-1))


def test_release_free_memory_runs_here():
    from vinstruct.machine import release_free_memory

    assert release_free_memory() in (True, False)
    assert release_free_memory() is release_free_memory()  # the library is looked up once, the answer stable


@pytest.mark.parametrize("flags, fast", [({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, True),
                                         ({"avx512f", "avx512_bf16"}, False),  # measured slower than fp32
                                         (set(), False)])
def test_bf16_counts_as_fast_on_a_cpu_only_with_amx(monkeypatch, flags, fast):
    import vinstruct.machine as machine
    from vinstruct.demo.settings import preset, resolved_precision

    monkeypatch.setattr(machine, "cpu_flags", lambda: flags)
    assert machine.bf16_is_fast("cpu") is (fast and torch.backends.mkldnn.is_available())
    assert resolved_precision(preset("default")) == ("bf16" if machine.bf16_is_fast("cpu") else "fp32")


def test_cpu_flags_reads_this_machine():
    from vinstruct.machine import cpu_flags

    flags = cpu_flags()
    assert isinstance(flags, set) and all(f and " " not in f for f in flags)
    info = Path("/proc/cpuinfo")
    if info.exists() and "\nflags" in "\n" + info.read_text():
        assert flags  # a machine that lists its flags gets them, one word each
