"""The LLaVA architecture: vision encoder -> projector -> causal LLM, image features spliced in.

Prompts carry the image token id once per image *feature* (the tokenizer side
expands each `<image>` marker to `num_image_tokens` ids). The forward pass
replaces those positions' word embeddings with projected image features, in the
order the images appear in the batch. This keeps shapes static, lets padding,
truncation checks and the KV cache treat image positions like any other token,
and matches transformers' `LlavaForConditionalGeneration` exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from vinstruct.errors import VinstructError
from vinstruct.model.config import LlavaConfig
from vinstruct.model.positions import positions_from_mask
from vinstruct.model.projector import build_projector
from vinstruct.model.vision import has_cls_token, num_image_tokens, select_features


class LlavaModel(nn.Module):
    """Vision tower + projector + language model.

    Attributes set by `vinstruct.model.build` when building or loading: `tokenizer` and
    `image_processor`, so a loaded model is everything needed to chat.
    """

    def __init__(self, config: LlavaConfig, vision_tower: nn.Module, llm: nn.Module):
        super().__init__()
        self.config = config
        self.vision_tower = vision_tower
        self.llm = llm
        self.projector = build_projector(
            config.projector_type, vision_tower.config.hidden_size, llm.config.hidden_size, config.projector_tokens
        )
        self.tokenizer = None
        self.image_processor = None

    # ---- sizes -------------------------------------------------------------------------
    @property
    def num_image_tokens(self) -> int:
        c = self.config
        features = num_image_tokens(self.vision_tower.config, c.vision_feature_select, c.vision_feature_pool)
        return features * c.projector_tokens

    @property
    def image_token_id(self) -> int:
        return self.config.image_token_id

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.llm.parameters()).dtype

    # ---- image features ---------------------------------------------------------------
    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Selected (not yet projected) features: [num_images, num_image_tokens, vision_dim]."""
        c = self.config
        vision_dtype = next(self.vision_tower.parameters()).dtype
        out = self.vision_tower(pixel_values.to(vision_dtype), output_hidden_states=True)
        hidden = out.hidden_states[c.vision_feature_layer]
        return select_features(
            hidden, c.vision_feature_select, has_cls_token(self.vision_tower.config), c.vision_feature_pool
        )

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected image features in LLM embedding space: [num_images, tokens, hidden]."""
        return self.project(self.vision_features(pixel_values))

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Vision features [num_images, n, vision_dim] -> LLM tokens [num_images, n * projector_tokens, hidden];
        the tokens of one feature are consecutive."""
        projector_dtype = next(self.projector.parameters(), features).dtype
        out = self.projector(features.to(projector_dtype))
        k = self.config.projector_tokens
        return out if k == 1 else out.reshape(out.shape[0], out.shape[1] * k, out.shape[2] // k)

    # ---- splicing ------------------------------------------------------------------------
    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Word embeddings with image-token positions replaced by image features."""
        embeddings = self.llm.get_input_embeddings()
        image_mask = input_ids == self.image_token_id
        n_slots = int(image_mask.sum())
        if n_slots == 0:
            return embeddings(input_ids)
        if image_features is None:
            if pixel_values is None:
                raise VinstructError(f"the prompt holds {n_slots} image token(s) but no image was given")
            image_features = self.encode_images(pixel_values)
        n_features = image_features.shape[0] * image_features.shape[1]
        if n_features != n_slots:
            raise VinstructError(
                f"image tokens and features disagree: {n_slots} image token positions in the batch, "
                f"{image_features.shape[0]} image(s) x {image_features.shape[1]} features = {n_features}"
            )
        # The image token's own embedding is never used: clamp keeps lookups in range even
        # when a checkpoint's image token id sits past the embedding table (official -200 style).
        safe_ids = input_ids.masked_fill(image_mask, 0)
        inputs_embeds = embeddings(safe_ids)
        flat = image_features.reshape(-1, image_features.shape[-1]).to(inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(image_mask.unsqueeze(-1), flat)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool = False,
        image_features: torch.Tensor | None = None,
        **kwargs,
    ):
        """Causal-LM forward over spliced embeddings; returns the LLM's output (loss if labels)."""
        inputs_embeds = self.embed_inputs(input_ids, pixel_values, image_features)
        if position_ids is None and attention_mask is not None and past_key_values is None:
            position_ids = positions_from_mask(attention_mask)
        return self.llm(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels,
            past_key_values=past_key_values,
            use_cache=use_cache,
            **kwargs,
        )

    # ---- generation (see vinstruct.model.generation) --------------------------------------
    def generate(self, prompts, pixel_values=None, **kwargs):
        from vinstruct.model.generation import generate

        return generate(self, prompts, pixel_values, **kwargs)

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        self.llm.gradient_checkpointing_enable(**kwargs)
        if hasattr(self.vision_tower, "gradient_checkpointing_enable"):
            self.vision_tower.gradient_checkpointing_enable(**kwargs)
