"""Reading the weight files of foreign checkpoints and copying them into our model by key.

Foreign directories hold safetensors (`model.safetensors`, or shards with
`model.safetensors.index.json`) or, in older releases, pickled PyTorch shards
(`pytorch_model.bin`, or shards with `pytorch_model.bin.index.json`). Pickles are
read with `torch.load(weights_only=True)`, which rebuilds tensors only and runs
no code; strict mode refuses them altogether.

Every error names the file and the key at fault, in the source's own key names.
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from vinstruct.errors import VinstructError
from vinstruct.model.weights import check_fits, read_safetensors

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SINGLE = "pytorch_model.bin"


@dataclass
class WeightSet:
    """Tensors read from one or more files, keyed by their names in those files."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    origin: dict[str, Path] = field(default_factory=dict)

    def update(self, other: "WeightSet") -> None:
        self.tensors.update(other.tensors)
        self.origin.update(other.origin)

    def dominant_dtype(self, prefix: str = "") -> torch.dtype | None:
        """The floating dtype most of the (prefixed) weights are stored in."""
        counts = Counter(t.dtype for k, t in self.tensors.items() if k.startswith(prefix) and t.is_floating_point())
        return counts.most_common(1)[0][0] if counts else None


def refuse_pickle(path: Path) -> VinstructError:
    return VinstructError(
        f"{path}: pickled weights refused in strict mode (expected safetensors; drop --strict to read it "
        "with torch.load(weights_only=True))"
    )


def read_pickle(path: Path, strict: bool = False) -> dict[str, torch.Tensor]:
    """A `.bin` state dict, unpickled with weights_only=True (tensors only, no code)."""
    if strict:
        raise refuse_pickle(path)
    if not path.is_file():
        raise VinstructError(f"{path}: not found")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise VinstructError(f"{path}: not a plain tensor state dict ({first_line})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VinstructError(f"{path}: expected a dict of tensors (a state dict), found {type(state).__name__}")
    return state


def _indexed_files(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise VinstructError(f"{index}: invalid index (expected a JSON object with 'weight_map': {err})") from None
    files = [index.parent / name for name in sorted(set(weight_map.values()))]
    for f in files:
        if not f.is_file():
            raise VinstructError(f"{f}: not found (listed in {index.name})")
    return files


def find_weight_files(directory: Path, strict: bool = False) -> list[Path]:
    """The weight files of a transformers-style directory; empty when it holds none."""
    if (directory / SAFETENSORS_INDEX).is_file():
        return _indexed_files(directory / SAFETENSORS_INDEX)
    if (directory / SAFETENSORS_SINGLE).is_file():
        return [directory / SAFETENSORS_SINGLE]
    for pickled in (directory / PICKLE_INDEX, directory / PICKLE_SINGLE):
        if pickled.is_file():
            if strict:
                raise refuse_pickle(pickled)
            return _indexed_files(pickled) if pickled.name == PICKLE_INDEX else [pickled]
    return []


def read_weight_files(files: list[Path], strict: bool = False) -> WeightSet:
    """All tensors of safetensors and/or pickle files, remembering which file held each key."""
    weights = WeightSet()
    for f in tqdm(files, desc="reading weights", unit="file", disable=len(files) < 2):
        if f.suffix == ".safetensors":
            tensors, origin, _ = read_safetensors([f])
            weights.update(WeightSet(tensors, origin))
        else:
            state = read_pickle(f, strict)
            weights.update(WeightSet(state, {k: f for k in state}))
    return weights


def read_weight_file(path: Path, strict: bool = False) -> WeightSet:
    """One weights file, safetensors or pickle, by its suffix."""
    if path.suffix != ".safetensors" and not path.is_file():
        raise VinstructError(f"{path}: not found")
    return read_weight_files([path], strict)


def assign_weights(
    model: torch.nn.Module,
    mapped: dict[str, tuple[str, torch.Tensor]],
    weights: WeightSet,
    required_prefixes: tuple[str, ...],
    where: Path,
    optional: set[str] = frozenset(),
    source_name=lambda key: key,
) -> None:
    """Copy `mapped` (our key -> (source key, tensor)) into `model`.

    Every parameter under `required_prefixes` must be given, except those in `optional`;
    errors name the source file and key (`source_name` turns our key into the source's).
    """
    expected = model.state_dict()
    for ours, (source_key, tensor) in mapped.items():
        check_fits(expected, ours, tensor, weights.origin.get(source_key, where), source_key)
    missing = [k for k in expected if k.startswith(required_prefixes) and k not in mapped and k not in optional]
    if missing:
        raise VinstructError(
            f"{where}: missing weights for {source_name(missing[0])!r} ({len(missing)} missing in all)"
        )
    # assign: the freshly read tensors become the parameters (no second copy of every weight)
    result = model.load_state_dict({k: t for k, (_, t) in mapped.items()}, strict=False, assign=True)
    if result.unexpected_keys:  # already excluded above; kept as a guard against silent drops
        raise VinstructError(f"{where}: unexpected key {result.unexpected_keys[0]!r}")


def match_vision_key(remainder: str, vision_keys: set[str]) -> str | None:
    """Our vision-tower key for a source key (without its tower prefix).

    Hub checkpoints nest CLIP/SigLIP weights under `vision_model.`; transformers 5.x
    models hold them without that level. Accept either spelling on both sides.
    """
    if remainder in vision_keys:
        return remainder
    if remainder.startswith("vision_model.") and remainder[len("vision_model."):] in vision_keys:
        return remainder[len("vision_model."):]
    if "vision_model." + remainder in vision_keys:
        return "vision_model." + remainder
    return None
