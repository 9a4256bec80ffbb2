"""Nested training state (optimizer, RNG) stored as safetensors, never pickled.

A state such as `optimizer.state_dict()` is a tree of dicts, lists, numbers and
tensors. Its tensors go into a safetensors file under path-like keys; the tree
itself, with each tensor replaced by a reference, goes into the file's metadata
as JSON. Dict keys keep their type (optimizer state is keyed by int).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vinstruct.errors import VinstructError

_TENSOR, _DICT, _TUPLE = "__tensor__", "__dict__", "__tuple__"


def _encode(obj, key: str, tensors: dict):
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().contiguous().cpu()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        return {_DICT: [[k, _encode(v, f"{key}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, f"{key}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{key}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise VinstructError(f"cannot store a {type(obj).__name__} at {key!r} in a training state")


def _decode(obj, tensors: dict):
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _DICT in obj:
            return {k: _decode(v, tensors) for k, v in obj[_DICT]}
        if _TUPLE in obj:
            return tuple(_decode(v, tensors) for v in obj[_TUPLE])
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def save_state(state, path: str | Path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, "", tensors)
    save_file(tensors, str(path), metadata={"tree": json.dumps(tree)})


def load_state(path: str | Path):
    try:
        with safe_open(str(path), framework="pt") as handle:
            tree = json.loads((handle.metadata() or {})["tree"])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (OSError, ValueError, KeyError, json.JSONDecodeError, SafetensorError) as err:
        # (checkpoints are checked against their manifest before this runs; this is the last line of defence)
        raise VinstructError(f"{path}: cannot read training state ({err})") from None
    return _decode(tree, tensors)


# ---- random number generators ---------------------------------------------------------------------
def rng_state() -> dict:
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
