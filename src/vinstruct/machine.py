"""The name of the machine's CPU, for reports that say where a number was measured."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the platform's processor or architecture name."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def bf16_is_fast(device: str = "cpu") -> bool:
    """Whether bfloat16 matrix products run natively here (AMX / AVX-512 BF16 on CPUs, any CUDA GPU
    that supports bf16); elsewhere bf16 is emulated and slower than fp32."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    flags = ""
    with contextlib.suppress(OSError):
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), "")
    native = any(f" {flag}" in flags for flag in ("amx_bf16", "avx512_bf16"))
    return native and torch.backends.mkldnn.is_available()
