"""Run the official LLaVA code (llava-torch) on one image and one question; save what it computes.

Runs inside the environment built by setup_llava_torch.sh (transformers 4.37), not vinstruct's:
  python llava_torch_forward.py CHECKPOINT IMAGE QUESTION MAX_NEW_TOKENS OUT.pt
The official class and helpers do all the work: the vicuna_v1 conversation, tokenizer_image_token
(image index -200), process_images (pad to square), the multimodal forward and greedy generate.
Weights load in float32; the official builder would force float16, which a CPU reference cannot use
for a 1e-5 comparison.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image
from transformers import PreTrainedTokenizerFast

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model import LlavaLlamaForCausalLM


def readable_tokenizer(checkpoint: str) -> str:
    """A copy of the tokenizer files that tokenizers 0.15 can read: newer releases write BPE merges
    as pairs and add fields it does not know; the vocabulary and merges themselves are unchanged."""
    copy = Path(tempfile.mkdtemp(prefix="tokenizer-"))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (Path(checkpoint) / name).is_file():
            shutil.copy(Path(checkpoint) / name, copy / name)
    data = json.loads((copy / "tokenizer.json").read_text())
    model = data["model"]
    model["merges"] = [" ".join(m) if isinstance(m, list) else m for m in model.get("merges", [])]
    model.pop("ignore_merges", None)
    (copy / "tokenizer.json").write_text(json.dumps(data))
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    return str(copy)


def main(checkpoint: str, image_path: str, question: str, max_new_tokens: str, out: str) -> None:
    torch.manual_seed(0)
    model = LlavaLlamaForCausalLM.from_pretrained(checkpoint, torch_dtype=torch.float32).eval()
    tower = model.get_vision_tower()
    if not tower.is_loaded:
        tower.load_model()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(readable_tokenizer(checkpoint))
    conversation = conv_templates["vicuna_v1"].copy()
    image_marker = DEFAULT_IMAGE_TOKEN
    if getattr(model.config, "mm_use_im_start_end", False):  # as the official CLI builds the question
        image_marker = DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN
    conversation.append_message(conversation.roles[0], image_marker + "\n" + question)
    conversation.append_message(conversation.roles[1], None)
    input_ids = tokenizer_image_token(conversation.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
    pixels = process_images([Image.open(image_path).convert("RGB")], tower.image_processor, model.config)
    pixels = pixels.to(torch.float32)
    with torch.no_grad():
        logits = model(input_ids=input_ids.unsqueeze(0), images=pixels).logits[0]
        greedy = model.generate(input_ids.unsqueeze(0), images=pixels, do_sample=False, num_beams=1,
                                max_new_tokens=int(max_new_tokens), min_new_tokens=int(max_new_tokens),
                                pad_token_id=tokenizer.pad_token_id, use_cache=True)[0]
    torch.save({"prompt": conversation.get_prompt(), "input_ids": input_ids, "pixel_values": pixels,
                "logits": logits, "greedy": greedy}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
