"""Import checkpoints written by the official LLaVA code (haotian-liu/LLaVA) as an LlavaModel.

What such a directory holds (the facts this import relies on):
  config.json   the LLM's own config plus the mm_* keys: mm_vision_tower (a hub name or a path,
                the tower itself is not stored), mm_projector_type ("linear" when absent,
                "mlp2x_gelu", ...), mm_vision_select_layer, mm_vision_select_feature ("patch" drops
                CLS, "cls_patch" keeps it), mm_use_im_start_end, mm_use_im_patch_token,
                image_aspect_ratio ("pad" pads to a square), tokenizer_model_max_length
  weights       LLM keys model.* and lm_head.*, projector model.mm_projector.*, a tuned tower
                under model.vision_tower.vision_tower.* when it was trained; safetensors or .bin
  tokenizer     the LLM tokenizer; images are marked by id -200, which no tokenizer holds
Stage-1 runs leave config.json + mm_projector.bin only, LoRA runs leave adapter_config.json,
the adapter weights and non_lora_trainables.bin: both sit on a base LLM given separately.
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
from vinstruct.model.convert_lora import is_adapter_dir, merge_lora
from vinstruct.model.convert_weights import (
    WeightSet,
    assign_weights,
    find_weight_files,
    match_vision_key,
    read_pickle,
    read_weight_file,
    read_weight_files,
)
from vinstruct.model.build import IM_END, IM_START, prepare_tokenizer, sub_config_dict
from vinstruct.model.llava import LlavaModel
from vinstruct.model.projector import build_projector
from vinstruct.model.vision import FEATURE_SELECTS, load_vision_tower
from vinstruct.quiet import quiet_transformers

IM_PATCH = "<im_patch>"
PROJECTOR_ONLY_FILES = ("mm_projector.safetensors", "mm_projector.bin")
NON_LORA_FILE = "non_lora_trainables.bin"

# Official model_type -> the transformers causal LM it wraps (same key names: model.*, lm_head.*).
LLM_TYPE_OF = {
    "llava": "llama", "llava_llama": "llama", "llava_mistral": "mistral", "llava_mixtral": "mixtral",
    "llava_qwen": "qwen2", "llava_gemma": "gemma", "llama": "llama", "mistral": "mistral", "qwen2": "qwen2",
}
# Official conversation modes that our templates reproduce exactly.
TEMPLATE_OF_CONV_MODE = {"v1": "vicuna_v1", "vicuna_v1": "vicuna_v1", "plain": "plain",
                         "llava_llama_2": "llama_2", "llama_2": "llama_2"}
# Keys of the official config that describe training or the multimodal parts, not the LLM.
_NOT_LLM_KEYS = {
    "architectures", "model_type", "_name_or_path", "transformers_version", "image_aspect_ratio",
    "image_grid_pinpoints", "tokenizer_model_max_length", "tokenizer_padding_side", "tune_mm_mlp_adapter",
    "freeze_mm_mlp_adapter", "use_mm_proj", "unfreeze_mm_vision_tower", "pretrain_mm_mlp_adapter",
    "vision_tower_pretrained", "conv_mode", "version", "freeze_mm_vision_resampler", "tune_mm_vision_resampler",
}


def read_official_config(path: Path) -> dict:
    config_path = path / "config.json"
    try:
        data = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise VinstructError(f"{config_path}: not found") from None
    except json.JSONDecodeError as err:
        raise VinstructError(f"{config_path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    _check_supported(data, config_path)
    return data


def _check_supported(cfg: dict, where: Path) -> None:
    if not cfg.get("mm_vision_tower"):
        raise VinstructError(f"{where}: 'mm_vision_tower' is missing (an official LLaVA config names its vision tower)")
    projector = cfg.get("mm_projector_type", "linear")
    try:
        build_projector(projector, 4, 4)  # validates the name only
    except VinstructError:
        raise VinstructError(
            f"{where}: unknown projector type mm_projector_type={projector!r} "
            "(expected 'linear', 'mlp{N}x_gelu' or 'identity')"
        ) from None
    select = cfg.get("mm_vision_select_feature", "patch")
    if select not in FEATURE_SELECTS:
        raise VinstructError(f"{where}: mm_vision_select_feature={select!r} is not one of {FEATURE_SELECTS}")
    merge = cfg.get("mm_patch_merge_type", "flat")
    if merge != "flat" or cfg.get("image_aspect_ratio") == "anyres":
        raise VinstructError(
            f"{where}: mm_patch_merge_type={merge!r} / image_aspect_ratio={cfg.get('image_aspect_ratio')!r} "
            "(LLaVA-NeXT any-resolution tiling) is not supported; expected 'flat' with 'pad' or square images"
        )
    if cfg.get("model_type") not in LLM_TYPE_OF:
        raise VinstructError(
            f"{where}: model_type {cfg.get('model_type')!r} is not supported "
            f"(expected one of {', '.join(sorted(LLM_TYPE_OF))})"
        )


def llm_config_of(cfg: dict):
    """The transformers config of the wrapped LLM: the official config without its mm_* keys."""
    rest = {k: v for k, v in cfg.items() if k not in _NOT_LLM_KEYS and not k.startswith("mm_")}
    return AutoConfig.for_model(LLM_TYPE_OF[cfg["model_type"]], **rest)


def local_dir(name_or_path: str | os.PathLike, what: str) -> Path:
    """A directory given by path, or by hub name when it is in the local hub cache."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path), local_files_only=True))
    except Exception:  # any hub error means the same thing here: not available offline
        raise VinstructError(f"{what} {str(name_or_path)!r}: not a directory and not in the local hub cache") from None


def resolve_vision(name: str, checkpoint: Path, override: str | os.PathLike | None) -> str:
    """The vision tower's directory: --vision, else mm_vision_tower as a path (relative to the working
    directory, as the official code resolves it, then to the checkpoint), else a hub name already in
    the local hub cache. Conversion never downloads."""
    if override is not None:
        if not Path(override).is_dir():
            raise VinstructError(f"--vision {override}: not a directory")
        return str(override)
    for candidate in (Path(name), checkpoint / name):
        if candidate.is_dir():
            return str(candidate)
    try:
        return str(local_dir(name, "vision tower"))
    except VinstructError:
        raise VinstructError(
            f"{checkpoint / 'config.json'}: mm_vision_tower {name!r} is neither a directory (from the working "
            "directory or the checkpoint) nor in the local hub cache; pass --vision DIR "
            "(or download it first, e.g. `hf download NAME`)"
        ) from None


def _base_dir_needed(path: Path, base, why: str) -> Path:
    if base is None:
        raise VinstructError(f"{path}: {why}; pass the base language model with --base DIR")
    return local_dir(base, "--base")


def _gather_weights(path: Path, base, strict: bool) -> tuple[WeightSet, Path, bool]:
    """(weights in official key names, tokenizer directory, whether a LoRA adapter sits in `path`)."""
    files = find_weight_files(path, strict)
    if is_adapter_dir(path):
        base_dir = _base_dir_needed(path, base, "holds a LoRA adapter on a base LLM")
        weights = read_weight_files(find_weight_files(base_dir, strict), strict)
        if (path / NON_LORA_FILE).is_file():
            weights.update(_non_lora_trainables(path / NON_LORA_FILE, strict))
        return weights, base_dir, True
    if files:
        return read_weight_files(files, strict), path, False
    projector_file = next((path / n for n in PROJECTOR_ONLY_FILES if (path / n).is_file()), None)
    if projector_file is None:
        raise VinstructError(
            f"{path}: no weights found (expected model.safetensors, pytorch_model.bin, their sharded "
            "index, or a stage-1 mm_projector.bin)"
        )
    base_dir = _base_dir_needed(path, base, f"holds only a projector ({projector_file.name})")
    base_files = find_weight_files(base_dir, strict)
    if not base_files:
        raise VinstructError(f"{base_dir}: no weights found for the base language model")
    weights = read_weight_files(base_files, strict)
    weights.update(read_weight_file(projector_file, strict))
    return weights, base_dir, False


def _non_lora_trainables(path: Path, strict: bool) -> WeightSet:
    """The projector (and any other fully trained part) of an official LoRA run, in official key names."""
    state = read_pickle(path, strict)
    state = {k.removeprefix("base_model.model."): v for k, v in state.items()}
    return WeightSet(state, {k: path for k in state})


def map_official_keys(weights: WeightSet, model: LlavaModel) -> dict[str, tuple[str, torch.Tensor]]:
    """Our key -> (official key, tensor)."""
    llm_prefix = f"llm.{model.llm.base_model_prefix}."
    vision_keys = set(model.vision_tower.state_dict())
    mapped = {}
    for key, tensor in weights.tensors.items():
        if key.endswith("rotary_emb.inv_freq"):
            continue  # a buffer older transformers saved; recomputed from the config
        if key.startswith("model.mm_projector."):
            ours = "projector." + key[len("model.mm_projector."):]
        elif key.startswith("model.vision_tower."):
            rest = key[len("model.vision_tower."):].removeprefix("vision_tower.")
            ours = match_vision_key(rest, vision_keys)
            ours = "vision_tower." + ours if ours else key
        elif key.startswith("model."):
            ours = llm_prefix + key[len("model."):]
        elif key.startswith("lm_head."):
            ours = "llm." + key
        else:
            ours = key
        mapped[ours] = (key, tensor)
    return mapped


def official_tokenizer(directory: Path, cfg: dict):
    """The LLM tokenizer with the tokens the official code adds, in its order, then <image>."""
    try:
        with quiet_transformers():  # it reads config.json and notes that llava_llama is not its own type
            tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as err:
        raise VinstructError(f"{directory}: cannot load the tokenizer ({err})") from None
    # The official loader adds <im_patch> unless the config says otherwise (its default is True).
    if cfg.get("mm_use_im_patch_token", True) and IM_PATCH not in tokenizer.get_vocab():
        tokenizer.add_tokens([IM_PATCH], special_tokens=True)
    if cfg.get("mm_use_im_start_end", False):
        missing = [t for t in (IM_START, IM_END) if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_tokens(missing, special_tokens=True)
    # <image> last: the official vocabulary keeps its ids; the embedding row of <image> is never
    # read (its positions are replaced by image features), so it may lie past the table.
    prepare_tokenizer(tokenizer)
    return tokenizer


def _template_for(cfg: dict, override: str | None) -> str:
    if override:
        return get_template(override).name
    hint = cfg.get("conv_mode") or cfg.get("version")
    return TEMPLATE_OF_CONV_MODE.get(hint, DEFAULT_TEMPLATE)


def _assemble(cfg: dict, vision_source: str, template: str | None) -> LlavaModel:
    vision_tower = load_vision_tower(vision_source)
    text_config = llm_config_of(cfg)
    with no_init_weights():
        llm = AutoModelForCausalLM.from_config(text_config)
    config = LlavaConfig(
        vision_config=sub_config_dict(vision_tower.config),
        text_config=sub_config_dict(llm.config),
        projector_type=cfg.get("mm_projector_type", "linear"),
        vision_feature_layer=int(cfg.get("mm_vision_select_layer", -2)),
        vision_feature_select=cfg.get("mm_vision_select_feature", "patch"),
        template=_template_for(cfg, template),
        image_aspect="pad" if cfg.get("image_aspect_ratio") == "pad" else "crop",
        tokenization="chunks",
        use_im_start_end=bool(cfg.get("mm_use_im_start_end", False)),
        model_max_length=int(cfg.get("tokenizer_model_max_length") or 2048),
        extra={"source_format": "official", "mm_vision_tower": cfg["mm_vision_tower"]},
    )
    config.validate()
    return LlavaModel(config, vision_tower, llm)


def load_official(path: str | os.PathLike, *, vision=None, base=None, template: str | None = None,
                  strict: bool = False, dtype: torch.dtype | str | None = None, device="cpu") -> LlavaModel:
    """An LlavaModel from an official LLaVA directory (full, projector-only + base, or LoRA + base).

    dtype: a torch dtype, "auto" (the dtype the LLM weights are stored in) or None (float32).
    """
    path = Path(path)
    cfg = read_official_config(path)
    vision_source = resolve_vision(cfg["mm_vision_tower"], path, vision)
    weights, tokenizer_dir, has_lora = _gather_weights(path, base, strict)
    has_projector = any(k.startswith("model.mm_projector.") for k in weights.tensors)
    if not has_projector and cfg.get("mm_projector_type") != "identity":
        raise VinstructError(f"{path}: no projector weights (model.mm_projector.*) in the checkpoint")
    model = _assemble(cfg, vision_source, template)
    mapped = map_official_keys(weights, model)
    tied = bool(getattr(model.llm.config, "tie_word_embeddings", False))
    assign_weights(
        model, mapped, weights, ("llm.", "projector."), path,
        optional={"llm.lm_head.weight"} if tied else set(),
        source_name=_official_name,
    )
    model.llm.tie_weights()
    if has_lora:
        merge_lora(model, path, strict)
    if tokenizer_dir == path and not (path / "tokenizer_config.json").is_file() and base is not None:
        tokenizer_dir = local_dir(base, "--base")
    tokenizer = official_tokenizer(tokenizer_dir, cfg)
    _fit_vocabulary(model, tokenizer)
    model.config.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    target = weights.dominant_dtype("model.layers.") if dtype == "auto" else dtype
    model = model.to(target or torch.float32).to(device).eval()
    model.tokenizer = tokenizer
    model.image_processor = ImageProcessor.from_pretrained(vision_source, aspect=model.config.image_aspect)
    return model


def _official_name(ours: str) -> str:
    """The official key for one of ours (for error messages)."""
    if ours.startswith("projector."):
        return "model.mm_projector." + ours[len("projector."):]
    if ours.startswith("llm.lm_head."):
        return ours[len("llm."):]
    if ours.startswith("llm."):
        return "model." + ours.split(".", 2)[2]
    return ours


def _fit_vocabulary(model: LlavaModel, tokenizer) -> None:
    """Grow the embeddings if official tokens (not <image>) have no rows yet, as the official
    loader does when a checkpoint predates them."""
    needed = 1 + max(i for token, i in tokenizer.get_vocab().items() if token != IMAGE_TOKEN)
    if needed > model.llm.get_input_embeddings().num_embeddings:
        model.llm.resize_token_embeddings(needed, mean_resizing=False)
    model.config.text_config = sub_config_dict(model.llm.config)
