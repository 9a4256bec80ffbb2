"""Our official-format import against the official LLaVA code itself (PyPI llava-torch).

The official code needs transformers 4.37, so it runs in its own environment, built by
`tests/oracles/setup_llava_torch.sh`; these tests are skipped until that exists.
"""

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from official_layout import expand_image_index, write_official_checkpoint
from safetensors.torch import load_file, save_file

import vinstruct
from vinstruct.data.encoding import EncodingSpec, encode_prompt

ORACLE_PYTHON = Path(__file__).parent / "oracles" / ".venv" / "bin" / "python"
ORACLE_SCRIPT = Path(__file__).parent / "oracles" / "llava_torch_forward.py"
QUESTION = "What colour is the shape?"
NEW_TOKENS = 8

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ORACLE_PYTHON.exists(), reason="run tests/oracles/setup_llava_torch.sh first"),
]


def _hub_layout_tower(vision_dir: Path, destination: Path) -> Path:
    """The tiny tower as hub CLIP checkpoints store it (keys under vision_model.), which is what
    the official code's transformers 4.37 reads."""
    shutil.copytree(vision_dir, destination)
    tensors = load_file(str(destination / "model.safetensors"))
    save_file({"vision_model." + k: v for k, v in tensors.items()}, str(destination / "model.safetensors"),
              metadata={"format": "pt"})
    return destination


@pytest.mark.parametrize("layout", [
    {},
    {"projector": "linear", "select_feature": "cls_patch", "select_layer": -1, "aspect": "square"},
    {"use_im_start_end": True},
])
def test_import_matches_the_official_llava_code(tiny_parts, tmp_path, color_images, layout):
    vision_dir, llm_dir = tiny_parts
    tower = _hub_layout_tower(vision_dir, tmp_path / "clip-hub")
    # the official loader only takes its LLaVA path for directory names containing "llava"
    checkpoint = write_official_checkpoint(tmp_path / "llava-tiny", tower, llm_dir, **layout)
    image = color_images / "blue.png"
    out = tmp_path / "official.pt"
    subprocess.run([str(ORACLE_PYTHON), str(ORACLE_SCRIPT), str(checkpoint), str(image), QUESTION,
                    str(NEW_TOKENS), str(out)], check=True, capture_output=True, timeout=300)
    official = torch.load(out, weights_only=True)

    model = vinstruct.load(checkpoint)
    ids = encode_prompt(EncodingSpec.for_model(model), [("human", f"<image>\n{QUESTION}")])
    assert ids == expand_image_index(official["input_ids"].tolist(), model.image_token_id, model.num_image_tokens)
    pixels = model.image_processor.load([image])
    assert torch.equal(pixels, official["pixel_values"])
    with torch.no_grad():
        logits = model(torch.tensor([ids]), pixel_values=pixels).logits[0]
    torch.testing.assert_close(logits, official["logits"], atol=1e-5, rtol=0)
    greedy = model.generate([ids], pixels, max_new_tokens=NEW_TOKENS, eos_token_ids=[])[0].token_ids
    # generating from embeddings, transformers 4.37 returns a BOS ahead of the new tokens
    assert greedy == official["greedy"].tolist()[-NEW_TOKENS:]
