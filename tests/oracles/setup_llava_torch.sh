#!/usr/bin/env bash
# Build the separate environment where the official LLaVA code (PyPI: llava-torch) runs on CPU,
# so that tests/test_convert_oracle.py can compare our official-format import with it.
# The official code pins transformers 4.37.2; it cannot share vinstruct's environment.
#   usage: tests/oracles/setup_llava_torch.sh            (creates tests/oracles/.venv)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${LLAVA_ORACLE_VENV:-$here/.venv}"
python="${PYTHON:-python3.11}"
test -x "$venv/bin/python" || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q torch==2.13.0 transformers==4.37.2 tokenizers==0.15.1 accelerate==0.21.0 \
  safetensors==0.4.5 sentencepiece==0.2.0 protobuf==4.25.3 "numpy<2" pillow einops==0.6.1 shortuuid==1.0.13
# --no-deps: llava-torch's own pins (gradio, deepspeed, an old torch) are for its demo and training
"$venv/bin/python" -m pip install -q --no-deps llava-torch==1.2.2.post1
"$venv/bin/python" -c "from llava.model import LlavaLlamaForCausalLM; print('llava-torch ready:', '$venv')"
