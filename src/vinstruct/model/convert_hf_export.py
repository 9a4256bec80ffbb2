"""Export an LlavaModel as a llava-hf directory that transformers, vLLM and SGLang load.

Written files:
  config.json                 LlavaForConditionalGeneration config (+ a "vinstruct" object with our
                              template and max length, ignored by other readers)
  model*.safetensors          hub key layout (see convert_hf.py), sharded with an index when large
  tokenizer files             with <image> at image_token_index and a chat template equal to ours
  preprocessor_config.json    CLIPImageProcessor, or LlavaImageProcessor with do_pad for "pad" images
  processor_config.json       LlavaProcessor: patch size, feature strategy, extra (CLS) tokens
  chat_template.jinja/.json   the chat template for processors of every transformers version
  generation_config.json      bos/eos/pad ids; rows added to the vocabulary are suppressed
Only what llava-hf can express is exported: anything else is refused with the reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import transformers
from transformers import GenerationConfig

from vinstruct.errors import VinstructError
from vinstruct.model.convert_chat import jinja_chat_template
from vinstruct.model.convert_hf import METADATA_KEY
from vinstruct.atomic import atomic_directory
from vinstruct.model.weights import write_weights
from vinstruct.model.llava import LlavaModel
from vinstruct.model.vision import has_cls_token


def check_exportable(model: LlavaModel) -> list[str]:
    """Raise for what llava-hf cannot express; return notes on what changes in meaning."""
    c = model.config
    if c.projector_type != "mlp2x_gelu":
        raise VinstructError(
            f"cannot export to llava-hf: its projector is a 2-layer GELU MLP (multi_modal_projector.linear_1/"
            f"linear_2), this model's projector is {c.projector_type!r}; export to vinstruct instead"
        )
    if c.vision_feature_pool > 1:
        raise VinstructError(
            f"cannot export to llava-hf: it has no feature pooling, this model pools patches {c.vision_feature_pool}x"
        )
    if c.projector_tokens > 1:
        raise VinstructError(
            f"cannot export to llava-hf: its projector makes one token per patch, this model's makes "
            f"{c.projector_tokens} (projector_tokens); export to vinstruct instead"
        )
    if c.use_im_start_end:
        raise VinstructError(
            "cannot export to llava-hf: its processor does not wrap images in <im_start>/<im_end> "
            "(mm_use_im_start_end); export to vinstruct instead"
        )
    notes = []
    if c.tokenization == "chunks":
        notes.append(
            "llava-hf tokenizes a prompt as one string; this model tokenized the text around <image> "
            "in separate chunks (official LLaVA), so the token after an image may differ in llava-hf prompts"
        )
    return notes


def _vision_key(key: str) -> str:
    rest = key[len("vision_tower."):]
    return "vision_tower." + (rest if rest.startswith("vision_model.") else "vision_model." + rest)


def hf_state_dict(model: LlavaModel, rows: int) -> dict[str, torch.Tensor]:
    """Our weights under hub llava-hf names, embedding/LM-head rows zero-padded to `rows`."""
    body = f"llm.{model.llm.base_model_prefix}."
    tied = bool(getattr(model.llm.config, "tie_word_embeddings", False))
    embed_key = body + "embed_tokens.weight"
    out, storages = {}, set()
    for key, tensor in model.state_dict().items():
        if key.startswith("vision_tower."):
            name = _vision_key(key)
        elif key.startswith("projector."):
            index, rest = key[len("projector."):].split(".", 1)
            name = f"multi_modal_projector.linear_{1 if index == '0' else 2}.{rest}"
        elif key.startswith("llm.lm_head."):
            if tied:
                continue  # stored once, as the embedding; readers tie it back
            name = "language_model." + key[len("llm."):]
        elif key.startswith(body):
            name = "language_model.model." + key[len(body):]
        else:
            raise VinstructError(f"cannot export to llava-hf: no llava-hf name for weight {key!r}")
        tensor = tensor.detach().cpu()
        if key in (embed_key, "llm.lm_head.weight") and tensor.shape[0] < rows:
            tensor = torch.cat([tensor, tensor.new_zeros(rows - tensor.shape[0], tensor.shape[1])])
        tensor = tensor.contiguous()
        if tensor.untyped_storage().data_ptr() in storages:  # safetensors refuses shared memory
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        out[name] = tensor
    return out


def exported_rows(model: LlavaModel, pad_vocab_to: int | None) -> int:
    """Embedding rows after export: room for every token (incl. <image>), optionally rounded up."""
    rows = max(model.llm.get_input_embeddings().num_embeddings, model.image_token_id + 1, len(model.tokenizer))
    if pad_vocab_to:
        if pad_vocab_to < 1:
            raise VinstructError(f"--pad-vocab-to must be a positive multiple, got {pad_vocab_to}")
        rows = -(-rows // pad_vocab_to) * pad_vocab_to
    return rows


def hf_config_dict(model: LlavaModel, rows: int) -> dict:
    c = model.config
    text = model.llm.config.to_dict()
    text["vocab_size"] = rows
    with_cls = has_cls_token(model.vision_tower.config)
    hf = transformers.LlavaConfig(
        vision_config=model.vision_tower.config.to_dict(),
        text_config=text,
        image_token_index=model.image_token_id,
        vision_feature_layer=c.vision_feature_layer,
        vision_feature_select_strategy="default" if (c.vision_feature_select == "patch" and with_cls) else "full",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        image_seq_length=model.num_image_tokens,
        tie_word_embeddings=bool(text.get("tie_word_embeddings", False)),
    )
    data = hf.to_dict()
    rope = data["text_config"].get("rope_parameters") or {}
    if rope.get("rope_type") == "default" and "rope_theta" in rope:
        data["text_config"]["rope_theta"] = rope["rope_theta"]  # the key transformers 4.x readers look for
    data["architectures"] = ["LlavaForConditionalGeneration"]
    dtype = str(model.dtype).removeprefix("torch.")
    data["dtype"] = data["torch_dtype"] = dtype
    data["image_token_index"] = model.image_token_id
    data[METADATA_KEY] = {"template": c.template, "model_max_length": c.model_max_length}
    return data


def preprocessor_dict(model: LlavaModel) -> dict:
    """The image processor config that reproduces our preprocessing in transformers."""
    processor = model.image_processor
    data = {k: v for k, v in processor.hf.to_dict().items() if k not in ("backend", "processor_class")}
    kind = str(data.get("image_processor_type", "CLIPImageProcessor")).removesuffix("Fast").removesuffix("Pil")
    if processor.aspect == "resize":
        height, width = processor.input_size
        data.update(size={"height": height, "width": width}, do_center_crop=False)
    if processor.aspect == "pad":
        kind = "LlavaImageProcessor"
        data.setdefault("do_center_crop", False)
    data["do_pad"] = processor.aspect == "pad"
    data["image_processor_type"] = kind
    data["processor_class"] = "LlavaProcessor"
    return data


def processor_dict(model: LlavaModel, strategy: str) -> dict:
    return {
        "image_token": model.config.image_token,
        "num_additional_image_tokens": 1 if has_cls_token(model.vision_tower.config) else 0,
        "patch_size": model.vision_tower.config.patch_size,
        "processor_class": "LlavaProcessor",
        "vision_feature_select_strategy": strategy,
    }


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _generation_config(model: LlavaModel, first_added_row: int, rows: int) -> GenerationConfig:
    tokenizer = model.tokenizer
    generation = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    if rows > first_added_row:
        # Rows added for <image> or padding were never trained; their logit is 0, so keep them
        # from being picked (transformers honours this; the rows can never be inputs anyway).
        generation.suppress_tokens = list(range(first_added_row, rows))
    return generation


def export_llava_hf(model: LlavaModel, destination: str | os.PathLike, *, pad_vocab_to: int | None = None,
                    max_shard_size: int | str = "5GB") -> list[str]:
    """Write `model` as a llava-hf directory (atomically); returns notes for the user."""
    if model.tokenizer is None or model.image_processor is None:
        raise VinstructError("cannot export to llava-hf: the model has no tokenizer or image processor attached")
    notes = check_exportable(model)
    rows = exported_rows(model, pad_vocab_to)
    config = hf_config_dict(model, rows)
    tensors = hf_state_dict(model, rows)
    first_added_row = model.llm.get_input_embeddings().num_embeddings
    template = jinja_chat_template(model.config.template)
    with atomic_directory(destination) as tmp:
        _write_json(tmp.path / "config.json", config)
        write_weights(tensors, tmp.path, None, max_shard_size)
        previous = model.tokenizer.chat_template
        model.tokenizer.chat_template = template
        try:
            model.tokenizer.save_pretrained(str(tmp.path))
        finally:
            model.tokenizer.chat_template = previous
        _write_json(tmp.path / "preprocessor_config.json", preprocessor_dict(model))
        _write_json(tmp.path / "processor_config.json",
                    processor_dict(model, config["vision_feature_select_strategy"]))
        (tmp.path / "chat_template.jinja").write_text(template)
        _write_json(tmp.path / "chat_template.json", {"chat_template": template})
        _generation_config(model, first_added_row, rows).save_pretrained(str(tmp.path))
    return notes
