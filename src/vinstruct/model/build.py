"""A new LLaVA model from pretrained parts (a vision encoder, a causal LM), and the pieces every
loader shares: the tokenizer's added tokens, the sub-configs we store, an empty model of a config.
"""

from __future__ import annotations

import json

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.initialization import no_init_weights

from vinstruct.data.images import ImageProcessor
from vinstruct.data.templates import DEFAULT_TEMPLATE
from vinstruct.errors import VinstructError
from vinstruct.model.config import IMAGE_TOKEN, LlavaConfig
from vinstruct.model.llava import LlavaModel
from vinstruct.model.vision import load_vision_tower, vision_tower_from_config

IM_START, IM_END = "<im_start>", "<im_end>"


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


def attach(model: LlavaModel, tokenizer, image_processor) -> LlavaModel:
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


def build_model(
    vision: str,
    llm: str,
    *,
    projector: str = "mlp2x_gelu",
    vision_feature_layer: int = -2,
    vision_feature_select: str = "patch",
    vision_feature_pool: int = 1,
    projector_tokens: int = 1,
    template: str = DEFAULT_TEMPLATE,
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
        projector_tokens=projector_tokens,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        template=template,
        image_aspect=image_aspect,
        tokenization=tokenization,
        use_im_start_end=use_im_start_end,
        model_max_length=model_max_length or min(int(getattr(tokenizer, "model_max_length", 2048)), 1 << 16),
    )
    config.validate()
    model = LlavaModel(config, vision_tower, language_model).to(dtype)
    return attach(model, tokenizer, image_processor)


def model_from_config(config: LlavaConfig) -> LlavaModel:
    """An LlavaModel with the configured shapes and uninitialised weights (to be loaded)."""
    with no_init_weights():
        vision_tower = vision_tower_from_config(config.vision_config)
        text = dict(config.text_config)
        llm_config = AutoConfig.for_model(text.pop("model_type"), **text)
        language_model = AutoModelForCausalLM.from_config(llm_config)
        return LlavaModel(config, vision_tower, language_model)
