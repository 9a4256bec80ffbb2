"""Training configuration: one dataclass, read from YAML presets, overridden by `--key=value`.

Every option lives here with its default, so a preset file, a command line and
the Python API (`run_training(dict)`) all mean the same thing. Unknown keys and
values of the wrong type raise one-line errors naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vinstruct.errors import VinstructError

STAGES = ("pretrain", "finetune")
PRECISIONS = ("fp32", "bf16")
STRATEGIES = ("auto", "single", "ddp", "fsdp", "deepspeed")
SCHEDULERS = ("cosine", "linear", "constant")
LONG_SAMPLE_POLICIES = ("truncate", "skip")
STAGE_TEMPLATE = {"pretrain": "plain"}  # stage 2 encodes with the model's own chat template

# The repository's presets, so `--config world_pretrain` works from any directory of a source checkout.
PRESET_DIRS = (Path("configs"), Path(__file__).resolve().parents[3] / "configs")


@dataclass
class TrainConfig:
    stage: str = "finetune"
    # ---- where the model comes from
    vision: str | None = None  # base vision encoder (dir or name), with `llm`, for a new model
    llm: str | None = None
    init_from: str | None = None  # a vinstruct checkpoint (e.g. stage 1's output)
    projector_file: str | None = None  # mm_projector.safetensors from stage 1, onto a model built from vision+llm
    projector_type: str = "mlp2x_gelu"
    vision_feature_layer: int = -2
    vision_feature_select: str = "patch"
    vision_feature_pool: int = 1
    projector_tokens: int = 1  # LLM tokens per vision feature (1: the paper; see model/projector.py)
    template: str | None = None  # the model's chat template (new models: vicuna_v1; stage 1 data uses "plain")
    image_aspect: str = "pad"
    max_length: int | None = None  # tokens per sample; default: the model's model_max_length
    # ---- data
    data: str | None = None
    image_dir: str | None = None
    val_data: str | None = None
    on_bad_sample: str = "skip"
    long_samples: str = "truncate"
    # ---- schedule
    output_dir: str = "runs/train"
    epochs: float = 1.0
    max_steps: int = 0  # > 0 overrides epochs
    per_device_batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-5
    projector_lr: float | None = None
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    seed: int = 42
    # ---- speed
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    group_by_length: bool = True
    group_window: int = 32  # micro-batches per length-sorted window
    cache_vision_features: bool = False
    num_threads: int = 0  # 0: leave torch's default
    num_workers: int = 0
    # CPU runs: hand the pages of freed activations back to the OS every K optimizer steps (glibc's
    # malloc_trim; 0: never). Batches of changing length leave the allocator holding gigabytes it
    # cannot reuse; trimming caps that at a small cost in page faults.
    release_memory_every: int = 0
    # ---- partial tuning (stage 2): only the LLM's top layers, optionally with the projector frozen
    llm_train_layers: int = 0  # 0: every LLM parameter; K: the top K decoder layers + final norm
    train_projector: bool = True  # false: the projector keeps its stage-1 weights in stage 2
    # ---- LoRA
    lora: bool = False
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | str = "all-linear"
    lora_merge: bool = True
    # ---- distributed
    strategy: str = "auto"  # auto: ddp under torchrun with >1 process, else single (deepspeed: see below)
    deepspeed_config: str | None = None  # strategy deepspeed: a DeepSpeed JSON, or zero2 / zero3 (configs/deepspeed/)
    # ---- checkpoints
    save_every: int = 0  # steps; 0 = only at the end
    keep_last: int = 2
    resume: bool = False
    save_projector: bool | None = None  # default: on for stage 1
    # ---- logging and evaluation
    log_every: int = 1
    progress: bool = True
    tensorboard: bool = False
    peak_flops: float = 0.0  # FLOP/s of one device for MFU; 0 = measure a matmul at start
    loss_curve: bool = True
    eval_every: int = 0
    eval_max_samples: int = 256
    eval_questions: str | None = None  # JSONL with question_id, image, text, answer: quick exact-QA
    eval_max_questions: int = 64
    eval_hook: str | None = None  # "module:function", called as fn(model) -> dict
    extra: dict = field(default_factory=dict)  # free-form notes carried into the saved config

    # ------------------------------------------------------------------------------------------
    def data_template(self, model) -> str:
        """Stage 1 encodes with "plain"; stage 2 with the model's own chat template."""
        return STAGE_TEMPLATE.get(self.stage, model.config.template)

    @property
    def write_projector_file(self) -> bool:
        return self.stage == "pretrain" if self.save_projector is None else self.save_projector

    def validate(self, where: str = "config") -> "TrainConfig":
        choices = {"stage": STAGES, "precision": PRECISIONS, "strategy": STRATEGIES,
                   "lr_scheduler": SCHEDULERS, "long_samples": LONG_SAMPLE_POLICIES,
                   "on_bad_sample": ("skip", "fail")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise VinstructError(f"{where}: {key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        if not self.data:
            raise VinstructError(f"{where}: 'data' (a LLaVA JSON file) is required")
        if self.init_from is None and not (self.vision and self.llm):
            raise VinstructError(f"{where}: give 'init_from' (a checkpoint) or both 'vision' and 'llm' (base encoders)")
        if self.projector_file and self.init_from:
            raise VinstructError(f"{where}: 'projector_file' goes with 'vision' + 'llm', not with 'init_from'")
        for key in ("per_device_batch_size", "grad_accum", "keep_last", "group_window"):
            if getattr(self, key) < 1:
                raise VinstructError(f"{where}: {key} must be at least 1, got {getattr(self, key)}")
        if self.release_memory_every < 0:
            raise VinstructError(f"{where}: release_memory_every must be 0 (never) or a number of steps, "
                                 f"got {self.release_memory_every}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise VinstructError(f"{where}: set epochs > 0 or max_steps > 0")
        if self.deepspeed_config and self.strategy not in ("auto", "deepspeed"):
            raise VinstructError(f"{where}: deepspeed_config goes with strategy deepspeed, not {self.strategy!r}")
        if self.lora and self.stage == "pretrain":
            raise VinstructError(f"{where}: LoRA applies to stage 2 (finetune); stage 1 trains the projector only")
        if self.llm_train_layers < 0:
            raise VinstructError(f"{where}: llm_train_layers must be 0 (all) or a positive number of top layers, "
                                 f"got {self.llm_train_layers}")
        if self.stage == "pretrain" and (self.llm_train_layers or not self.train_projector):
            raise VinstructError(f"{where}: llm_train_layers and train_projector apply to stage 2 (finetune); "
                                 "stage 1 trains the projector only")
        if self.lora and self.llm_train_layers:
            raise VinstructError(f"{where}: choose LoRA or llm_train_layers, not both")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- reading ----------------------------------------------------------------------------------------
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(key: str, value, where: str):
    """Check a value against the field's declared type (YAML already parsed numbers and booleans)."""
    kind = str(_FIELDS[key].type)
    if value is None:
        if "None" in kind:
            return None
        raise VinstructError(f"{where}: {key} cannot be empty")
    if kind.startswith("bool"):
        if not isinstance(value, bool):
            raise VinstructError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if isinstance(value, str) and kind.startswith(("int", "float")):
        value = _number(value)  # YAML 1.1 reads "2e-3" (no dot) as a string
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise VinstructError(f"{where}: {key} must be an integer, got {value!r}")
        return value
    if kind.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise VinstructError(f"{where}: {key} must be a number, got {value!r}")
        return float(value)
    if kind.startswith("str"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise VinstructError(f"{where}: {key} must be a string, got {value!r}")
        return value
    return value


def _number(text: str):
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def update_config(config: TrainConfig, values: dict, where: str) -> TrainConfig:
    for key, value in values.items():
        if key not in _FIELDS:
            raise VinstructError(f"{where}: unknown option {key!r}")
        setattr(config, key, _coerce(key, value, where))
    return config


def resolve_config_path(name: str | os.PathLike) -> Path:
    """A YAML path, or a preset name looked up in ./configs and the source tree's configs/."""
    path = Path(name)
    if path.is_file():
        return path
    for base in PRESET_DIRS:
        for candidate in (base / path, base / f"{path}.yaml"):
            if candidate.is_file():
                return candidate
    raise VinstructError(f"{name}: config file not found (a YAML file, or a preset name from configs/)")


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise VinstructError(f"{path}{line}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise VinstructError(f"{path}: expected a mapping of option: value")
    return data


def parse_overrides(items: list[str]) -> dict:
    """['--lr=1e-4', 'epochs=2'] -> {'lr': 1e-4, 'epochs': 2}; values parsed as YAML scalars."""
    values = {}
    for item in items:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise VinstructError(f"override {item!r}: expected --key=value")
        key, raw = text.split("=", 1)
        key = key.replace("-", "_")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        values[key] = _number(value) if isinstance(value, str) else value
    return values


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> TrainConfig:
    """Defaults <- YAML file (if any) <- overrides; validated."""
    config = TrainConfig()
    where = "config"
    if path is not None:
        resolved = resolve_config_path(path)
        where = str(resolved)
        update_config(config, read_yaml(resolved), where)
    if overrides:
        update_config(config, overrides, "overrides")
    return config.validate(where)


def as_config(config: TrainConfig | dict) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return config.validate()
    if not isinstance(config, dict):
        raise VinstructError(f"expected a TrainConfig or a dict, got {type(config).__name__}")
    return update_config(TrainConfig(), config, "config").validate()
