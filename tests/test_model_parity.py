"""Our LLaVA forward and greedy generation equal transformers' LlavaForConditionalGeneration."""

import torch
from PIL import Image
from transformers import LlavaConfig as HFLlavaConfig
from transformers import LlavaForConditionalGeneration

from vinstruct.data.encoding import EncodingSpec, encode_prompt
from vinstruct.model.generation import left_pad
from vinstruct.model.positions import positions_from_mask


def _hf_twin(model) -> LlavaForConditionalGeneration:
    """transformers' own Llava class holding exactly our weights."""
    config = HFLlavaConfig(
        vision_config=model.vision_tower.config.to_dict(),
        text_config=model.llm.config.to_dict(),
        image_token_index=model.image_token_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
    )
    twin = LlavaForConditionalGeneration(config).eval()
    mapped = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("vision_tower."):
            mapped["model." + key] = tensor
        elif key.startswith("projector.0."):
            mapped["model.multi_modal_projector.linear_1." + key.rsplit(".", 1)[1]] = tensor
        elif key.startswith("projector.2."):
            mapped["model.multi_modal_projector.linear_2." + key.rsplit(".", 1)[1]] = tensor
        elif key.startswith("llm.model."):
            mapped["model.language_model." + key[len("llm.model."):]] = tensor
        elif key == "llm.lm_head.weight":
            mapped["lm_head.weight"] = tensor
    result = twin.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return twin


def _batch(model, color_images):
    spec = EncodingSpec.for_model(model)
    prompts = [
        encode_prompt(spec, [("human", "<image>\nWhat colour is the shape on the left?")]),
        encode_prompt(spec, [("human", "Describe it. <image>")]),
        encode_prompt(spec, [("human", "hi")]),  # a text-only sample in the same batch
    ]
    pixels = model.image_processor.load([color_images / "red.png", color_images / "blue.png"])
    return prompts, pixels


def test_logits_match_transformers_llava_with_left_padding(tiny_model, color_images):
    model = tiny_model.eval()
    twin = _hf_twin(model)
    prompts, pixels = _batch(model, color_images)
    ids, mask = left_pad(prompts, model.tokenizer.pad_token_id, "cpu")
    assert len(set(len(p) for p in prompts)) == 3  # mixed lengths, so padding is exercised
    with torch.no_grad():
        ours = model(ids, attention_mask=mask, pixel_values=pixels).logits
        theirs = twin(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                      position_ids=positions_from_mask(mask)).logits
    valid = mask.bool()
    torch.testing.assert_close(ours[valid], theirs[valid], atol=1e-5, rtol=0)


def test_logits_match_with_right_padding(tiny_model, color_images):
    model = tiny_model.eval()
    twin = _hf_twin(model)
    prompts, pixels = _batch(model, color_images)
    width = max(len(p) for p in prompts)
    pad = model.tokenizer.pad_token_id
    ids = torch.tensor([p + [pad] * (width - len(p)) for p in prompts])
    mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
    with torch.no_grad():
        ours = model(ids, attention_mask=mask, pixel_values=pixels).logits
        theirs = twin(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    torch.testing.assert_close(ours[mask.bool()], theirs[mask.bool()], atol=1e-5, rtol=0)


def test_greedy_generation_matches_transformers(tiny_model, color_images):
    model = tiny_model.eval()
    twin = _hf_twin(model)
    prompts, pixels = _batch(model, color_images)
    ours = model.generate(prompts, pixels, max_new_tokens=12, eos_token_ids=[])
    ids, mask = left_pad(prompts, model.tokenizer.pad_token_id, "cpu")
    theirs = twin.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=12,
                           do_sample=False, pad_token_id=model.tokenizer.pad_token_id, eos_token_id=None)
    assert [g.token_ids for g in ours] == theirs[:, ids.shape[1]:].tolist()


def test_batched_generation_equals_one_at_a_time(tiny_model, color_images):
    model = tiny_model.eval()
    prompts, pixels = _batch(model, color_images)
    batched = model.generate(prompts, pixels, max_new_tokens=8, eos_token_ids=[])
    singles = [
        model.generate([prompts[0]], pixels[:1], max_new_tokens=8, eos_token_ids=[])[0],
        model.generate([prompts[1]], pixels[1:], max_new_tokens=8, eos_token_ids=[])[0],
        model.generate([prompts[2]], None, max_new_tokens=8, eos_token_ids=[])[0],
    ]
    assert [g.token_ids for g in batched] == [g.token_ids for g in singles]


def test_several_images_in_one_sample(tiny_model, color_images):
    model = tiny_model.eval()
    spec = EncodingSpec.for_model(model)
    prompt = encode_prompt(spec, [("human", "<image> and <image>: same colour?")])
    assert prompt.count(model.image_token_id) == 2 * model.num_image_tokens
    pixels = model.image_processor.load([color_images / "red.png", color_images / "blue.png"])
    swapped = model.image_processor.load([color_images / "blue.png", color_images / "red.png"])
    with torch.no_grad():
        a = model(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                  pixel_values=pixels).logits
        b = model(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                  pixel_values=swapped).logits
    assert not torch.allclose(a, b)  # order of images matters: they land in their own slots


def test_stop_strings_streaming_and_sampling(tiny_model, color_images):
    from vinstruct.model.generation import SamplingParams

    model = tiny_model.eval()
    prompts, pixels = _batch(model, color_images)
    free = model.generate(prompts[:1], pixels[:1], max_new_tokens=10, eos_token_ids=[])[0]
    stop = free.text[3:5]
    streamed = []
    cut = model.generate(prompts[:1], pixels[:1], params=SamplingParams(max_new_tokens=10, stop=[stop]),
                         eos_token_ids=[], on_token=lambda row, delta: streamed.append(delta))[0]
    assert cut.finish_reason == "stop" and stop not in cut.text and free.text.startswith(cut.text)
    assert "".join(streamed) == cut.text  # held-back text never leaks a stop string
    sampled = [model.generate(prompts[:1], pixels[:1], params=SamplingParams(max_new_tokens=6, temperature=1.0,
                                                                             top_p=0.9, seed=s))[0].token_ids
               for s in (1, 1, 2)]
    assert sampled[0] == sampled[1]  # same seed, same sample
