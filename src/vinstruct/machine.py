"""What the machine is and offers: its CPU's name, native bf16, free memory, handing freed memory back to the OS."""

from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the platform's processor or architecture name."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def bf16_is_fast(device: str = "cpu") -> bool:
    """Whether bfloat16 matrix products beat fp32 here: a CPU with AMX tiles, or any CUDA GPU that supports bf16.

    AVX-512 BF16 alone is not enough. On a 2-core Xeon with it but without AMX, bf16 autocast trained the demo's
    135 M LM (LoRA) at 141 tokens/s against 199 in fp32, and bf16 weights prefilled in 2.5 s against 1.8 s;
    with AMX the same training ran about twice as fast in bf16 (docs/results/demo_quality.md)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return "amx_bf16" in cpu_flags() and torch.backends.mkldnn.is_available()


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    return set((_cpuinfo_field("flags") or "").split())


def _cpuinfo_field(key: str) -> str | None:
    """The value of the first /proc/cpuinfo line starting with `key` (Linux), None where there is none."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return None


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
