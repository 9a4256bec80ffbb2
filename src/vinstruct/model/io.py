"""Build a model from pretrained parts, save it as a checkpoint directory, load it back.

A vinstruct checkpoint directory holds:
  config.json                   LlavaConfig (vision/LLM sub-configs, projector, feature selection, template, ...)
  model.safetensors             all weights (or model-0000x-of-0000y.safetensors + model.safetensors.index.json)
  tokenizer files               the LLM tokenizer with <image> added
  preprocessor_config.json      the vision encoder's image processor
Weights are read from safetensors only; pickled files are refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.initialization import no_init_weights

from vinstruct.data.images import ImageProcessor
from vinstruct.errors import VinstructError
from vinstruct.model.config import IMAGE_TOKEN, MODEL_TYPE, LlavaConfig
from vinstruct.model.llava import LlavaModel
from vinstruct.model.vision import load_vision_tower, vision_tower_from_config
from vinstruct.quiet import quiet_transformers

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
IM_START, IM_END = "<im_start>", "<im_end>"


# ---- tokenizer --------------------------------------------------------------------------------
def prepare_tokenizer(tokenizer, use_im_start_end: bool = False) -> None:
    """Add <image> (and optionally <im_start>/<im_end>) as special tokens; make sure a pad token exists."""
    extra = [IMAGE_TOKEN] + ([IM_START, IM_END] if use_im_start_end else [])
    missing = [t for t in extra if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    if tokenizer.pad_token is None:
        # Llama-family tokenizers ship without a pad token; LLaVA pads with <unk> (else EOS).
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token


def _resize_embeddings(llm, tokenizer) -> None:
    if len(tokenizer) > llm.get_input_embeddings().num_embeddings:
        llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)


def _attach(model: LlavaModel, tokenizer, image_processor) -> LlavaModel:
    model.tokenizer = tokenizer
    model.image_processor = image_processor
    return model


# Keys of a transformers config that describe the run or the machine, not the model.
_VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "output_hidden_states", "output_attentions",
                         "return_dict", "use_cache", "_attn_implementation_autoset")


def sub_config_dict(config) -> dict:
    """A transformers config as a stable dict for our config.json (model facts only)."""
    data = config.to_dict()
    for key in _VOLATILE_CONFIG_KEYS:
        data.pop(key, None)
    return json.loads(json.dumps(data))  # the form it takes after a save/load (e.g. int keys become str)


# ---- build from parts ----------------------------------------------------------------------------
def build_model(
    vision: str,
    llm: str,
    *,
    projector: str = "mlp2x_gelu",
    vision_feature_layer: int = -2,
    vision_feature_select: str = "patch",
    vision_feature_pool: int = 1,
    template: str = "vicuna_v1",
    image_aspect: str = "pad",
    tokenization: str = "joined",
    use_im_start_end: bool = False,
    model_max_length: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> LlavaModel:
    """A new LLaVA model from a pretrained vision encoder and a pretrained causal LM (names or directories).

    The projector starts untrained; everything else keeps its pretrained weights.
    """
    vision_tower = load_vision_tower(vision, dtype=dtype)
    try:
        language_model = AutoModelForCausalLM.from_pretrained(llm, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(llm)
    except OSError as err:
        raise VinstructError(f"language model {llm!r}: cannot load ({err})") from None
    prepare_tokenizer(tokenizer, use_im_start_end)
    _resize_embeddings(language_model, tokenizer)
    image_processor = ImageProcessor.from_pretrained(vision, aspect=image_aspect)
    config = LlavaConfig(
        vision_config=sub_config_dict(vision_tower.config),
        text_config=sub_config_dict(language_model.config),
        projector_type=projector,
        vision_feature_layer=vision_feature_layer,
        vision_feature_select=vision_feature_select,
        vision_feature_pool=vision_feature_pool,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        template=template,
        image_aspect=image_aspect,
        tokenization=tokenization,
        use_im_start_end=use_im_start_end,
        model_max_length=model_max_length or min(int(getattr(tokenizer, "model_max_length", 2048)), 1 << 16),
    )
    config.validate()
    model = LlavaModel(config, vision_tower, language_model).to(dtype)
    return _attach(model, tokenizer, image_processor)


def model_from_config(config: LlavaConfig) -> LlavaModel:
    """An LlavaModel with the configured shapes and uninitialised weights (to be loaded)."""
    with no_init_weights():
        vision_tower = vision_tower_from_config(config.vision_config)
        text = dict(config.text_config)
        llm_config = AutoConfig.for_model(text.pop("model_type"), **text)
        language_model = AutoModelForCausalLM.from_config(llm_config)
        return LlavaModel(config, vision_tower, language_model)


# ---- save ------------------------------------------------------------------------------------------
def _unique_state_dict(model: torch.nn.Module, state_dict: dict | None = None
                       ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """State dict without tied duplicates (safetensors refuses shared storage); returns aliases too."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in (model.state_dict() if state_dict is None else state_dict).items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor.detach().contiguous().cpu()
    return tensors, aliases


def write_weights(tensors: dict[str, torch.Tensor], directory: Path, aliases: dict[str, str] | None = None,
                  max_shard_size: int | str = "5GB") -> None:
    """Write safetensors weights, sharded with an index when larger than max_shard_size."""
    from huggingface_hub import split_torch_state_dict_into_shards

    metadata = {"format": "pt", "aliases": json.dumps(aliases or {})}
    split = split_torch_state_dict_into_shards(tensors, max_shard_size=max_shard_size,
                                               filename_pattern="model{suffix}.safetensors")
    for filename, names in split.filename_to_tensors.items():
        save_file({n: tensors[n] for n in names}, str(directory / filename), metadata=metadata)
    if split.is_sharded:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values()),
                              "aliases": aliases or {}},
                 "weight_map": split.tensor_to_filename}
        (directory / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def atomic_directory(destination: str | os.PathLike):
    """A temp directory beside `destination`; call .commit() to replace destination with it."""
    return _AtomicDir(Path(destination))


class _AtomicDir:
    def __init__(self, destination: Path):
        self.destination = destination
        destination.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{destination.name}.tmp-", dir=destination.parent))

    def commit(self) -> None:
        old = None
        if self.destination.exists():
            old = self.destination.with_name(f".{self.destination.name}.old-{os.getpid()}")
            os.replace(self.destination, old)
        os.replace(self.path, self.destination)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def save_model(model: LlavaModel, directory: str | os.PathLike, max_shard_size: int | str = "5GB",
               state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Save a checkpoint directory atomically (written beside it, then renamed into place).

    state_dict: weights to write instead of model.state_dict() (a training run passes the full
    weights gathered from shards, or LoRA-merged weights); keys as in our checkpoints.
    """
    directory = Path(directory)
    model.config.text_config = sub_config_dict(model.llm.config)
    model.config.vision_config = sub_config_dict(model.vision_tower.config)
    with atomic_directory(directory) as tmp:
        model.config.save(tmp.path)
        tensors, aliases = _unique_state_dict(model, state_dict)
        write_weights(tensors, tmp.path, aliases, max_shard_size)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(str(tmp.path))
        if model.image_processor is not None:
            model.image_processor.save_pretrained(tmp.path)
    return directory


# ---- load --------------------------------------------------------------------------------------------
def detect_format(path: str | os.PathLike) -> str:
    """'vinstruct', 'llava-hf' or 'official' from a checkpoint directory's config.json."""
    config_path = Path(path) / "config.json"
    if not Path(path).is_dir():
        raise VinstructError(f"{path}: not a directory")
    if not config_path.is_file():
        raise VinstructError(f"{config_path}: not found (a checkpoint directory has config.json)")
    try:
        data = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise VinstructError(f"{config_path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    if data.get("model_type") == MODEL_TYPE:
        return "vinstruct"
    # Official configs come first: LLaVA-1.5 and NeXT configs also say model_type "llava".
    if "mm_vision_tower" in data or "mm_projector_type" in data or "mm_hidden_size" in data:
        return "official"
    if data.get("model_type") == "llava":
        return "llava-hf"
    raise VinstructError(
        f"{config_path}: unknown checkpoint format (model_type {data.get('model_type')!r}); expected a vinstruct "
        "checkpoint, a llava-hf (LlavaForConditionalGeneration) directory or an official LLaVA directory"
    )


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint; refuses pickles with a clear error."""
    index = directory / INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = [directory / name for name in sorted(set(weight_map.values()))]
        for f in files:
            if not f.is_file():
                raise VinstructError(f"{f}: not found (listed in {index.name})")
        return files
    single = directory / WEIGHTS_NAME
    if single.is_file():
        return [single]
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise VinstructError(
            f"{directory / pickles[0]}: refusing to unpickle weights; vinstruct reads safetensors only "
            "(convert the checkpoint first: `vinstruct convert`)"
        )
    raise VinstructError(f"{single}: not found (no weights in {directory})")


def read_safetensors(files: list[Path]) -> tuple[dict[str, torch.Tensor], dict[str, Path], dict[str, str]]:
    """All tensors of the files, which file each came from, and recorded tied-weight aliases."""
    tensors, origin, aliases = {}, {}, {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as handle:
                meta = handle.metadata() or {}
                aliases.update(json.loads(meta.get("aliases", "{}")))
                for key in handle.keys():
                    tensors[key] = handle.get_tensor(key)
                    origin[key] = f
        except (OSError, ValueError, json.JSONDecodeError) as err:
            raise VinstructError(f"{f}: cannot read safetensors ({err})") from None
    return tensors, origin, aliases


def load_weights_into(model: torch.nn.Module, files: list[Path]) -> None:
    """Copy tensors into `model`, naming the file and key of any mismatch."""
    tensors, origin, aliases = read_safetensors(files)
    expected = model.state_dict()
    for key, tensor in tensors.items():
        if key not in expected:
            raise VinstructError(f"{origin[key]}: unexpected key {key!r} (not part of this model)")
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise VinstructError(
                f"{origin[key]}: shape mismatch for {key!r}: file has {tuple(tensor.shape)}, "
                f"model expects {tuple(expected[key].shape)}"
            )
    missing = [k for k in expected if k not in tensors and k not in aliases]
    if missing:
        raise VinstructError(f"{files[0]}: missing key {missing[0]!r} ({len(missing)} missing in all)")
    for name, source in aliases.items():
        if name in expected and source in tensors:
            tensors.setdefault(name, tensors[source])
    model.load_state_dict(tensors, strict=False)


def load_model(path: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
               **kwargs) -> LlavaModel:
    """Load any supported checkpoint directory (vinstruct, llava-hf or official LLaVA)."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt != "vinstruct":
        from vinstruct.model import convert

        return convert.load_foreign(path, fmt, dtype=dtype, device=device, **kwargs)
    config = LlavaConfig.load(path)
    files = weight_files(path)
    model = model_from_config(config)
    load_weights_into(model, files)
    model.llm.tie_weights()
    try:
        with quiet_transformers():  # it reads our config.json and warns that it is not its own
            tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise VinstructError(f"{path}: cannot load the tokenizer ({err})") from None
    image_processor = ImageProcessor.from_pretrained(path, aspect=config.image_aspect)
    if dtype is not None:
        model = model.to(dtype)
    model = model.to(device).eval()
    return _attach(model, tokenizer, image_processor)
