"""Tiny checkpoints in the official LLaVA layout, and a reference forward written from that layout.

The reference does what the official code documents, independently of vinstruct: it
tokenizes the text between `<image>` markers chunk by chunk (one BOS at the start,
image index -200 between chunks), runs the CLIP tower, takes hidden layer
`mm_vision_select_layer`, drops CLS for "patch", applies `model.mm_projector`, splices
the features where -200 stands, and runs the Llama LM on the embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

IMAGE_TOKEN_INDEX = -200
IM_START, IM_END = "<im_start>", "<im_end>"
TRAINING_KEYS = {  # keys official training writes into config.json besides the LLM's own
    "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False, "use_mm_proj": True,
    "mm_patch_merge_type": "flat", "mm_projector_lr": None, "unfreeze_mm_vision_tower": False,
    "tokenizer_padding_side": "right", "tokenizer_model_max_length": 2048,
}


def official_llm_config(llm: LlamaForCausalLM) -> dict:
    """The LLM config as transformers 4.x wrote it (rope_theta, torch_dtype)."""
    data = llm.config.to_dict()
    rope = data.pop("rope_parameters", None) or {}
    data["rope_theta"] = rope.get("rope_theta", 10000.0)
    data["torch_dtype"] = str(data.pop("dtype", "float32") or "float32").removeprefix("torch.")
    return data


def make_projector(kind: str, vision_dim: int, text_dim: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "linear":
        return nn.Linear(vision_dim, text_dim)
    return nn.Sequential(nn.Linear(vision_dim, text_dim), nn.GELU(), nn.Linear(text_dim, text_dim))


def write_official_checkpoint(
    directory: Path, vision_dir: Path, llm_dir: Path, *, projector: str = "mlp2x_gelu",
    select_feature: str = "patch", select_layer: int = -2, use_im_start_end: bool = False,
    aspect: str = "pad", weights: str = "safetensors", vision_name: str | None = None, seed: int = 1,
    projector_only: bool = False,
) -> Path:
    """Write a tiny official LLaVA directory; weights: "safetensors" or "bin-shards"."""
    directory.mkdir(parents=True, exist_ok=True)
    llm = LlamaForCausalLM.from_pretrained(str(llm_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
    if use_im_start_end:
        tokenizer.add_tokens([IM_START, IM_END], special_tokens=True)
        torch.manual_seed(seed)
        llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    vision = CLIPVisionModel.from_pretrained(str(vision_dir))
    proj = make_projector(projector, vision.config.hidden_size, llm.config.hidden_size, seed)
    config = official_llm_config(llm)
    config.update(TRAINING_KEYS)
    config.update({
        "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama",
        "mm_vision_tower": vision_name if vision_name is not None else str(vision_dir),
        "mm_hidden_size": vision.config.hidden_size, "mm_projector_type": projector,
        "mm_vision_select_layer": select_layer, "mm_vision_select_feature": select_feature,
        "mm_use_im_start_end": use_im_start_end, "mm_use_im_patch_token": False,
        "image_aspect_ratio": aspect,
    })
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    projector_state = {f"model.mm_projector.{k}": v.detach().clone() for k, v in proj.state_dict().items()}
    if projector_only:
        torch.save(projector_state, directory / "mm_projector.bin")
        return directory
    state = {k: v.detach().clone().contiguous() for k, v in llm.state_dict().items()}
    state.update(projector_state)
    if weights == "safetensors":
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    else:
        _write_bin_shards(state, directory)
    tokenizer.save_pretrained(str(directory))
    return directory


def _write_bin_shards(state: dict, directory: Path) -> None:
    keys = sorted(state)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    for i, names in enumerate(halves, start=1):
        name = f"pytorch_model-0000{i}-of-00002.bin"
        torch.save({k: state[k] for k in names}, directory / name)
        weight_map.update({k: name for k in names})
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps(index))


def _read_state(directory: Path) -> dict:
    if (directory / "model.safetensors").is_file():
        return load_file(str(directory / "model.safetensors"))
    state = {}
    for f in sorted(directory.glob("pytorch_model-*.bin")) + sorted(directory.glob("mm_projector.bin")):
        state.update(torch.load(f, weights_only=True))
    return state


class OfficialReference:
    """The official model's forward, rebuilt from the documented directory layout."""

    def __init__(self, directory: Path, vision_dir: Path, base_dir: Path | None = None):
        config = json.loads((directory / "config.json").read_text())
        state = _read_state(base_dir) if base_dir else {}
        state.update(_read_state(directory))
        llm_keys = {k: v for k, v in config.items() if not k.startswith("mm_") and k not in TRAINING_KEYS}
        llm_keys = {k: v for k, v in llm_keys.items() if k not in ("architectures", "model_type", "image_aspect_ratio")}
        self.llm = LlamaForCausalLM(LlamaConfig(**llm_keys)).eval()
        self.llm.load_state_dict({k: v for k, v in state.items() if not k.startswith("model.mm_projector.")})
        self.tower = CLIPVisionModel.from_pretrained(str(vision_dir)).eval()
        self.projector = make_projector(config["mm_projector_type"], config["mm_hidden_size"],
                                        self.llm.config.hidden_size, seed=0).eval()
        self.projector.load_state_dict({k[len("model.mm_projector."):]: v for k, v in state.items()
                                        if k.startswith("model.mm_projector.")})
        self.layer = config["mm_vision_select_layer"]
        self.feature = config["mm_vision_select_feature"]
        self.tokenizer = AutoTokenizer.from_pretrained(str(base_dir or directory))

    def tokenize(self, prompt: str) -> list[int]:
        """Chunks between <image> tokenized separately; one BOS at the start; -200 between chunks."""
        chunks = [self.tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]
        bos = self.tokenizer.bos_token_id
        ids = [bos]
        for index, chunk in enumerate(chunks):
            if index:
                ids.append(IMAGE_TOKEN_INDEX)
            ids += chunk[1:] if chunk and chunk[0] == bos else chunk
        return ids

    @torch.no_grad()
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.tower(pixel_values, output_hidden_states=True).hidden_states[self.layer]
        if self.feature == "patch":
            hidden = hidden[:, 1:]
        return self.projector(hidden)

    @torch.no_grad()
    def embed(self, ids: list[int], pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.image_features(pixel_values)
        pieces, chunk, image = [], [], 0
        table = self.llm.get_input_embeddings()
        for token in ids + [None]:
            if token is None or token == IMAGE_TOKEN_INDEX:
                if chunk:
                    pieces.append(table(torch.tensor(chunk)))
                chunk = []
                if token == IMAGE_TOKEN_INDEX:
                    pieces.append(features[image])
                    image += 1
            else:
                chunk.append(token)
        return torch.cat(pieces).unsqueeze(0)

    @torch.no_grad()
    def logits(self, ids: list[int], pixel_values: torch.Tensor) -> torch.Tensor:
        return self.llm(inputs_embeds=self.embed(ids, pixel_values)).logits[0]

    @torch.no_grad()
    def greedy(self, ids: list[int], pixel_values: torch.Tensor, max_new_tokens: int) -> list[int]:
        embeds = self.embed(ids, pixel_values)
        out = []
        for _ in range(max_new_tokens):
            token = int(self.llm(inputs_embeds=embeds).logits[0, -1].argmax())
            out.append(token)
            embeds = torch.cat([embeds, self.llm.get_input_embeddings()(torch.tensor([[token]]))], dim=1)
        return out


def expand_image_index(ids: list[int], image_token_id: int, count: int) -> list[int]:
    """The official ids with each -200 replaced by `count` copies of our image token id."""
    out = []
    for token in ids:
        out += [image_token_id] * count if token == IMAGE_TOKEN_INDEX else [token]
    return out
