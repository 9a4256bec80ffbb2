"""What the machine is and offers: its CPU's name, native bf16, free memory, handing freed memory back to the OS."""

from __future__ import annotations

import contextlib
import functools
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


def available_memory(device) -> int | None:
    """Bytes a new allocation on `device` can still get (Linux MemAvailable for the CPU, free CUDA memory),
    or None where that is not known."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def release_free_memory() -> bool:
    """Return the C heap's free pages to the OS (glibc `malloc_trim(0)`); False where there is none.

    PyTorch's CPU tensors come from the C allocator. Activations of changing sizes (every batch has
    its own length) leave freed blocks that glibc keeps mapped and often cannot reuse, so a training
    process's resident memory grows step after step while its live tensors do not.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, looked up once; None on a C library without it (musl, macOS, Windows)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        library = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return getattr(library, "malloc_trim", None)
