"""llava-hf directories (transformers' LlavaForConditionalGeneration) in both directions.

On disk, hub checkpoints and what vLLM / SGLang read use these keys:
  vision_tower.vision_model.*            the CLIP/SigLIP vision model
  multi_modal_projector.linear_1/2.*     the 2-layer GELU MLP (our projector.0 / projector.2)
  language_model.model.*                 the LLM body (our llm.model.*)
  language_model.lm_head.*               the LM head (our llm.lm_head.*)
transformers 5.x `save_pretrained` writes `vision_tower.*` without the `vision_model.` level, and
its in-memory names start with `model.`; imports read all of these, exports write the hub layout.
Config facts: `image_token_index`, `vision_feature_layer`, `vision_feature_select_strategy`
("default" drops the first token, i.e. CLS; "full" keeps all), `projector_hidden_act` "gelu".
Prompts are tokenized as one string with the image token repeated once per feature ("joined").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.initialization import no_init_weights

from vinstruct.data.images import ImageProcessor
from vinstruct.data.templates import DEFAULT_TEMPLATE, get_template
from vinstruct.errors import VinstructError
from vinstruct.model.config import IMAGE_TOKEN, LlavaConfig
from vinstruct.model.convert_weights import assign_weights, find_weight_files, match_vision_key, read_weight_files
from vinstruct.model.build import sub_config_dict
from vinstruct.model.llava import LlavaModel
from vinstruct.model.vision import has_cls_token, vision_tower_from_config

METADATA_KEY = "vinstruct"  # our extra settings inside an exported config.json (others ignore it)


# ---- import ----------------------------------------------------------------------------------------
def _read_hf_config(path: Path):
    config_path = path / "config.json"
    try:
        raw = json.loads(config_path.read_text())
        hf_config = AutoConfig.from_pretrained(str(path))
    except FileNotFoundError:
        raise VinstructError(f"{config_path}: not found") from None
    except json.JSONDecodeError as err:
        raise VinstructError(f"{config_path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise VinstructError(f"{config_path}: not a valid llava-hf config ({err})") from None
    return raw, hf_config


def _feature_select(raw: dict, vision_config, where: Path) -> str:
    strategy = raw.get("vision_feature_select_strategy", "default")
    with_cls = has_cls_token(vision_config)
    if strategy == "full":
        return "cls_patch" if with_cls else "patch"
    if strategy == "default" and with_cls:
        return "patch"
    raise VinstructError(
        f"{where}: vision_feature_select_strategy={strategy!r} is not supported for a "
        f"{vision_config.model_type} tower (expected 'default' with a CLS token, or 'full')"
    )


def _check_hf_supported(raw: dict, where: Path) -> None:
    act = raw.get("projector_hidden_act", "gelu")
    if act != "gelu":
        raise VinstructError(f"{where}: projector_hidden_act={act!r} is not supported (expected 'gelu')")
    if not isinstance(raw.get("vision_feature_layer", -2), int):
        raise VinstructError(
            f"{where}: vision_feature_layer must be one layer index, got {raw['vision_feature_layer']!r}"
        )
    if raw.get("image_token_index", raw.get("image_token_id")) is None:
        raise VinstructError(f"{where}: 'image_token_index' is missing")


def map_hf_keys(weights, model: LlavaModel) -> dict[str, tuple[str, torch.Tensor]]:
    """Our key -> (llava-hf key, tensor), for the hub layout and transformers 5.x's own."""
    body = f"llm.{model.llm.base_model_prefix}."
    vision_keys = set(model.vision_tower.state_dict())
    rules = (
        ("multi_modal_projector.linear_1.", "projector.0."),
        ("multi_modal_projector.linear_2.", "projector.2."),
        ("language_model.model.", body),
        ("language_model.lm_head.", "llm.lm_head."),
        ("language_model.", body),  # transformers 5.x in-memory name of the LLM body
        ("lm_head.", "llm.lm_head."),
    )
    mapped = {}
    for key, tensor in weights.tensors.items():
        name = key.removeprefix("model.")  # transformers 5.x in-memory names
        ours = key
        if name.startswith("vision_tower."):
            found = match_vision_key(name[len("vision_tower."):], vision_keys)
            ours = "vision_tower." + found if found else key
        else:
            for theirs, replacement in rules:
                if name.startswith(theirs):
                    ours = replacement + name[len(theirs):]
                    break
        mapped[ours] = (key, tensor)
    return mapped


def _hf_name(ours: str) -> str:
    """The hub llava-hf key for one of ours (for error messages)."""
    if ours.startswith("projector."):
        index, rest = ours[len("projector."):].split(".", 1)
        return f"multi_modal_projector.linear_{1 if index == '0' else 2}.{rest}"
    if ours.startswith("llm.lm_head."):
        return "language_model." + ours[len("llm."):]
    if ours.startswith("llm."):
        return "language_model.model." + ours.split(".", 2)[2]
    return "vision_tower.vision_model." + ours.removeprefix("vision_tower.")


def _hf_tokenizer(path: Path, image_token_id: int):
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise VinstructError(f"{path}: cannot load the tokenizer ({err})") from None
    found = tokenizer.get_vocab().get(IMAGE_TOKEN)
    if found != image_token_id:
        raise VinstructError(
            f"{path}: the tokenizer's {IMAGE_TOKEN} id is {found}, "
            f"but config.json has image_token_index={image_token_id}"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    return tokenizer


def _hf_image_processor(path: Path) -> ImageProcessor:
    """The directory's image processor; LlavaImageProcessor's do_pad becomes our "pad" aspect."""
    processor = ImageProcessor.from_pretrained(path, aspect="crop")
    if getattr(processor.hf, "do_pad", False):
        processor.aspect = "pad"
    return processor


def load_llava_hf(path: str | os.PathLike, *, template: str | None = None, strict: bool = False,
                  dtype: torch.dtype | str | None = None, device="cpu") -> LlavaModel:
    """An LlavaModel from a llava-hf directory, padded vocabulary rows kept (logits match).

    dtype: a torch dtype, "auto" (the dtype the weights are stored in) or None (float32).
    """
    path = Path(path)
    raw, hf_config = _read_hf_config(path)
    where = path / "config.json"
    _check_hf_supported(raw, where)
    image_token_id = int(raw.get("image_token_index", raw.get("image_token_id")))
    meta = raw.get(METADATA_KEY) or {}
    with no_init_weights():
        vision_tower = vision_tower_from_config(hf_config.vision_config.to_dict())
        llm = AutoModelForCausalLM.from_config(hf_config.text_config)
    tokenizer = _hf_tokenizer(path, image_token_id)
    image_processor = _hf_image_processor(path)
    config = LlavaConfig(
        vision_config=sub_config_dict(vision_tower.config),
        text_config=sub_config_dict(llm.config),
        projector_type="mlp2x_gelu",
        vision_feature_layer=int(raw.get("vision_feature_layer", -2)),
        vision_feature_select=_feature_select(raw, vision_tower.config, where),
        image_token_id=image_token_id,
        template=get_template(template or meta.get("template", DEFAULT_TEMPLATE)).name,
        image_aspect=image_processor.aspect,
        tokenization="joined",
        model_max_length=int(meta.get("model_max_length") or min(int(tokenizer.model_max_length), 1 << 16)),
    )
    config.validate(str(where))
    model = LlavaModel(config, vision_tower, llm)
    files = find_weight_files(path, strict)
    if not files:
        raise VinstructError(f"{path}: no weights found (expected model.safetensors or its sharded index)")
    weights = read_weight_files(files, strict)
    optional = set()
    if not raw.get("multimodal_projector_bias", True):
        optional |= {"projector.0.bias", "projector.2.bias"}  # zero biases are the same function
    if getattr(llm.config, "tie_word_embeddings", False) or raw.get("tie_word_embeddings"):
        optional.add("llm.lm_head.weight")
    with torch.no_grad():
        for name in ("projector.0.bias", "projector.2.bias"):
            model.get_parameter(name).zero_()
    assign_weights(model, map_hf_keys(weights, model), weights, ("vision_tower.", "projector.", "llm."), path,
                   optional=optional, source_name=_hf_name)
    model.llm.tie_weights()
    target = weights.dominant_dtype() if dtype == "auto" else dtype
    model = model.to(target or torch.float32).to(device).eval()
    model.tokenizer, model.image_processor = tokenizer, image_processor
    return model
