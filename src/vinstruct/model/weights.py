"""Weight files of a vinstruct checkpoint: safetensors (sharded with an index when large), tied
weights stored once with the alias in the metadata; pickled files refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vinstruct.errors import VinstructError

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def unique_state_dict(model: torch.nn.Module, state_dict: dict | None = None
                       ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """State dict without tied duplicates (safetensors refuses shared storage); returns aliases too."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in (model.state_dict() if state_dict is None else state_dict).items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor.detach().contiguous().cpu()
    return tensors, aliases


def write_weights(tensors: dict[str, torch.Tensor], directory: Path, aliases: dict[str, str] | None = None,
                  max_shard_size: int | str = "5GB") -> None:
    """Write safetensors weights, sharded with an index when larger than max_shard_size."""
    from huggingface_hub import split_torch_state_dict_into_shards

    metadata = {"format": "pt", "aliases": json.dumps(aliases or {})}
    split = split_torch_state_dict_into_shards(tensors, max_shard_size=max_shard_size,
                                               filename_pattern="model{suffix}.safetensors")
    for filename, names in split.filename_to_tensors.items():
        try:
            save_file({n: tensors[n] for n in names}, str(directory / filename), metadata=metadata)
        except (OSError, SafetensorError) as err:  # safetensors reports a full disk as its own error type
            raise VinstructError(f"{directory.parent}: could not write the weights ({filename}): "
                                 f"{' '.join(str(err).split())}") from err
    if split.is_sharded:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values()),
                              "aliases": aliases or {}},
                 "weight_map": split.tensor_to_filename}
        (directory / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint; refuses pickles with a clear error."""
    index = directory / INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = [directory / name for name in sorted(set(weight_map.values()))]
        for f in files:
            if not f.is_file():
                raise VinstructError(f"{f}: not found (listed in {index.name})")
        return files
    single = directory / WEIGHTS_NAME
    if single.is_file():
        return [single]
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise VinstructError(
            f"{directory / pickles[0]}: refusing to unpickle weights; vinstruct reads safetensors only "
            "(convert the checkpoint first: `vinstruct convert`)"
        )
    raise VinstructError(f"{single}: not found (no weights in {directory})")


def read_safetensors(files: list[Path]) -> tuple[dict[str, torch.Tensor], dict[str, Path], dict[str, str]]:
    """All tensors of the files, which file each came from, and recorded tied-weight aliases."""
    tensors, origin, aliases = {}, {}, {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as handle:
                meta = handle.metadata() or {}
                aliases.update(json.loads(meta.get("aliases", "{}")))
                for key in handle.keys():
                    tensors[key] = handle.get_tensor(key)
                    origin[key] = f
        except (OSError, ValueError, json.JSONDecodeError) as err:
            raise VinstructError(f"{f}: cannot read safetensors ({err})") from None
    return tensors, origin, aliases


def check_fits(expected: dict[str, torch.Tensor], key: str, tensor: torch.Tensor, where, name: str | None = None
               ) -> None:
    """Raise, naming the file and the key as the file spells it (`name`), unless `key` is a parameter of
    the model (`expected`: its state dict) with the tensor's shape."""
    name = key if name is None else name
    if key not in expected:
        raise VinstructError(f"{where}: unexpected key {name!r} (no such parameter in this model)")
    if tuple(tensor.shape) != tuple(expected[key].shape):
        raise VinstructError(f"{where}: shape mismatch for {name!r}: file has {tuple(tensor.shape)}, "
                             f"the model expects {tuple(expected[key].shape)}")


def load_weights_into(model: torch.nn.Module, files: list[Path]) -> None:
    """Copy tensors into `model`, naming the file and key of any mismatch."""
    tensors, origin, aliases = read_safetensors(files)
    expected = model.state_dict()
    for key, tensor in tensors.items():
        check_fits(expected, key, tensor, origin[key])
    missing = [k for k in expected if k not in tensors and k not in aliases]
    if missing:
        raise VinstructError(f"{files[0]}: missing key {missing[0]!r} ({len(missing)} missing in all)")
    for name, source in aliases.items():
        if name in expected and source in tensors:
            tensors.setdefault(name, tensors[source])
    model.load_state_dict(tensors, strict=False)
