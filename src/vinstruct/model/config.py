"""The configuration of a vinstruct LLaVA model, saved as `config.json` in a checkpoint."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from vinstruct.data.templates import DEFAULT_TEMPLATE
from vinstruct.errors import VinstructError

MODEL_TYPE = "vinstruct_llava"
IMAGE_TOKEN = "<image>"

# How text around <image> is tokenized. "joined" tokenizes the prompt as one string
# (transformers' llava-hf processor); "chunks" tokenizes the pieces between image
# markers separately, BOS only on the first (the official LLaVA code). Outputs only
# match a source checkpoint when its convention is kept.
TOKENIZATION_MODES = ("joined", "chunks")
IMAGE_ASPECTS = ("pad", "resize", "crop")


def read_config_json(directory: str | Path) -> tuple[Path, dict]:
    """(path, contents) of a checkpoint directory's config.json, any format."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise VinstructError(f"{path}: not found (a checkpoint directory has config.json)")
    try:
        return path, json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise VinstructError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None


@dataclass
class LlavaConfig:
    vision_config: dict
    text_config: dict
    projector_type: str = "mlp2x_gelu"
    vision_feature_layer: int = -2
    vision_feature_select: str = "patch"
    vision_feature_pool: int = 1
    # LLM tokens made from each (pooled) vision feature; 1 in the paper (see model/projector.py)
    projector_tokens: int = 1
    image_token: str = IMAGE_TOKEN
    image_token_id: int = -1
    template: str = DEFAULT_TEMPLATE
    image_aspect: str = "pad"
    tokenization: str = "joined"
    # official LLaVA's mm_use_im_start_end: wrap image features in <im_start>/<im_end> tokens
    use_im_start_end: bool = False
    model_max_length: int = 2048
    extra: dict = field(default_factory=dict)
    model_type: str = MODEL_TYPE

    def validate(self, where: str = "config.json") -> None:
        if self.image_aspect not in IMAGE_ASPECTS:
            raise VinstructError(f"{where}: image_aspect must be one of {IMAGE_ASPECTS}, got {self.image_aspect!r}")
        if self.tokenization not in TOKENIZATION_MODES:
            raise VinstructError(f"{where}: tokenization must be one of {TOKENIZATION_MODES}, got {self.tokenization!r}")
        if self.vision_feature_pool < 1:
            raise VinstructError(f"{where}: vision_feature_pool must be >= 1")
        if type(self.projector_tokens) is not int or self.projector_tokens < 1:  # (a JSON true is no count)
            raise VinstructError(f"{where}: projector_tokens must be an integer >= 1, got {self.projector_tokens!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, directory: str | Path) -> None:
        path = Path(directory) / "config.json"
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, data: dict, where: str = "config.json") -> "LlavaConfig":
        if data.get("model_type") != MODEL_TYPE:
            raise VinstructError(
                f"{where}: model_type is {data.get('model_type')!r}, expected {MODEL_TYPE!r} (a vinstruct checkpoint)"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise VinstructError(f"{where}: unknown keys {unknown}")
        for key in ("vision_config", "text_config"):
            if not isinstance(data.get(key), dict):
                raise VinstructError(f"{where}: missing or invalid {key!r} (expected an object)")
        config = cls(**data)
        config.validate(where)
        return config

    @classmethod
    def load(cls, directory: str | Path) -> "LlavaConfig":
        path, data = read_config_json(directory)
        return cls.from_dict(data, where=str(path))
