"""`generate()`, a thin wrapper over the engine in `decoding.py` (sampling and the stopping rule: `sampling.py`).

Prompts are token-id lists (image tokens already expanded); images are encoded
once when a prompt is prefilled. Each row has its own sampling parameters, stop
strings and streaming callback output, so the serving engine can batch unrelated
requests through the same code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vinstruct.errors import VinstructError
from vinstruct.model.decoding import Decoder, Sequence as Row
from vinstruct.model.sampling import (  # noqa: F401  (the sampling names are used from here too)
    Generation,
    MIN_TEMPERATURE,
    RowState,
    SamplingParams,
    TokenCallback,
    accepts_logits_to_keep,
    choose_tokens,
    default_eos_ids,
    filter_top_p,
    left_pad,
    sample_token,
    sampling_probs,
    seeded_generator,
)


def generate(
    model,
    prompts: Sequence[Sequence[int]] | tuple[torch.Tensor, torch.Tensor],
    pixel_values: torch.Tensor | None = None,
    params: SamplingParams | Sequence[SamplingParams] | None = None,
    on_token: TokenCallback | None = None,
    eos_token_ids: Sequence[int] | None = None,
    image_features: torch.Tensor | None = None,
    kv_tokens: int | None = None,
    **overrides,
) -> list[Generation]:
    """Generate continuations for a batch of prompts through the engine (`vinstruct.model.decoding`).

    `prompts`: token-id lists, or an (input_ids, attention_mask) pair of padded tensors (left or right
    padding; the padding is dropped). `params` may be one SamplingParams for all rows or one per row;
    keyword overrides (max_new_tokens=..., temperature=...) build a shared one. `pixel_values` holds the
    images in prompt order, row after row. `kv_tokens` bounds the key/value memory (default: room for
    the whole batch at once); rows that do not fit wait for others to finish.
    """
    prompts = unpad(prompts)
    if not prompts:
        return []
    if params is None:
        params = SamplingParams(**overrides)
    if isinstance(params, SamplingParams):
        params = [params] * len(prompts)
    for p in params:
        p.check()
    if image_features is not None:
        raise VinstructError("generate() takes pixel values; precomputed image features are no longer accepted")
    tokenizer = model.tokenizer
    eos = set(default_eos_ids(tokenizer) if eos_token_ids is None else eos_token_ids)
    rows = []
    images = split_images(model, prompts, pixel_values)
    for index, (prompt, p, pixels) in enumerate(zip(prompts, params, images)):
        stream = None if on_token is None else (lambda delta, row=index: delta and on_token(row, delta))
        rows.append(Row(list(prompt), p, RowState(tokenizer, p, eos), seeded_generator(p.seed, model.device),
                        on_text=stream, pixel_values=pixels))
    budget = kv_tokens or len(rows) * (max(r.reserve for r in rows) + 256)
    decoder = Decoder(model, max_batch_size=len(rows), kv_tokens=budget, eos_ids=eos, pad_id=pad_token_id(tokenizer, eos, model))
    for row in rows:
        decoder.check_alone(row.reserve)
    waiting = list(rows)
    with torch.inference_mode():
        while waiting or decoder.rows:
            joining = []
            while waiting and decoder.fits([r.reserve for r in joining + waiting[:1]]):
                joining.append(waiting.pop(0))
            decoder.admit(joining)
            decoder.step()
    results = []
    for row, prompt in zip(rows, prompts):
        if row.error is not None:
            raise row.error
        state = row.state
        if on_token is not None:
            delta = state.new_text()  # flush the held-back tail
            if delta:
                row.on_text(delta)
        results.append(Generation(state.ids, state.text, state.finish_reason, len(prompt)))
    return results


def unpad(prompts) -> list[list[int]]:
    """Token-id lists from lists, or from a padded (input_ids, attention_mask) pair (either side)."""
    if isinstance(prompts, tuple) and len(prompts) == 2 and isinstance(prompts[0], torch.Tensor):
        input_ids, attention_mask = prompts
        if input_ids.shape != attention_mask.shape:
            raise VinstructError(f"input_ids {list(input_ids.shape)} and attention_mask "
                                 f"{list(attention_mask.shape)} must have the same shape")
        return [ids[mask.bool()].tolist() for ids, mask in zip(input_ids.cpu(), attention_mask.cpu())]
    return [list(p) for p in prompts]


def split_images(model, prompts: list[list[int]], pixel_values) -> list[torch.Tensor | None]:
    """Each prompt's own images, taken in order from the batch's pixel values."""
    per_image = model.num_image_tokens
    counts = [sum(1 for t in p if t == model.image_token_id) for p in prompts]
    if any(c % per_image for c in counts) or (pixel_values is None and any(counts)):
        raise VinstructError(f"image tokens per prompt {counts} are not whole images of {per_image} tokens "
                             f"(or no pixel values were given)")
    images = [c // per_image for c in counts]
    given = 0 if pixel_values is None else pixel_values.shape[0]
    if sum(images) != given:
        raise VinstructError(f"the prompts hold {sum(images)} image(s) but {given} were given")
    out, first = [], 0
    for n in images:
        out.append(pixel_values[first:first + n] if n else None)
        first += n
    return out


def pad_token_id(tokenizer, eos_ids, model) -> int:
    """Filler for padding columns (never attended): the tokenizer's pad or EOS id, never the image id."""
    for candidate in (getattr(tokenizer, "pad_token_id", None), *sorted(eos_ids), 0):
        if candidate is not None and candidate != model.image_token_id and candidate >= 0:
            return candidate
    return 0
