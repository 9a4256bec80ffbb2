#!/usr/bin/env bash
# The training benchmark on one CUDA GPU: bf16, a ~0.9 B-parameter random model (CLIP-L-like tower +
# 0.6 B Llama), built with vinstruct.model.random_parts. Prints the same table as the CPU run and
# writes docs/results/train_gpu.md.
#
#   bash benchmarks/gpu.sh                 # uses $PYTHON (default python3) if it has torch with CUDA,
#                                          # otherwise creates .venv-gpu with the pinned packages
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
has_cuda_torch() {
  "$1" - <<'PYCODE' 2>/dev/null
import sys
import torch
sys.exit(0 if torch.cuda.is_available() else 1)
PYCODE
}

if ! has_cuda_torch "$PY"; then
  echo "no CUDA-enabled torch for $PY; creating .venv-gpu" >&2
  test -x .venv-gpu/bin/python || "$PY" -m venv .venv-gpu
  PY=.venv-gpu/bin/python
  # Only what training needs, at the project's pinned versions (the Linux torch wheel ships CUDA).
  pins=$(grep -E '^(torch|transformers|tokenizers|safetensors|peft|accelerate|pyyaml|tqdm|matplotlib)==' requirements.txt)
  "$PY" -m pip install -q --upgrade pip
  # shellcheck disable=SC2086
  "$PY" -m pip install -q $pins pillow numpy huggingface_hub
  has_cuda_torch "$PY" || { echo "error: torch in .venv-gpu cannot see a CUDA device" >&2; exit 1; }
fi

"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" "$PY" benchmarks/bench_train.py \
  --device cuda --precision bf16 --size gpu --threads 8 --batch-size 8 --seq 1024 --rounds 3 \
  --out docs/results/train_gpu.md
