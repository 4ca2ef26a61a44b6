"""Device and dtype choice, shared by every command: ``auto`` picks CUDA when present, else the CPU."""

from __future__ import annotations

import ctypes

import torch

from bmbench.errors import BmbenchError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a torch.device; asking for CUDA without it is a BmbenchError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BmbenchError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BmbenchError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise BmbenchError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``fp32`` | ``fp16`` | ``bf16`` -> a torch.dtype; fp16 needs CUDA (CPU half kernels are incomplete/slow)."""
    if name not in DTYPES:
        raise BmbenchError(f"unknown dtype {name!r} (use {', '.join(DTYPES)})")
    if name == "fp16" and device.type != "cuda":
        raise BmbenchError("--dtype fp16 needs a CUDA device; on the CPU use fp32 or bf16")
    return DTYPES[name]


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_ALLOCATOR = {"mode": "system default"}


def reuse_freed_memory() -> str:
    """Make glibc keep freed memory for reuse instead of returning it to the OS (no mmap'd blocks, no trimming),
    as PyTorch's CPU performance guide gets from jemalloc or tcmalloc. Without it, every run of a stage that
    allocates tens of MiB pays fresh page faults: on this project's CPU that made a 256 MiB clone 3.5x slower and
    an N=100 paste at 800x1088 1.8x slower, and noisy. Process-wide and irreversible; returns the mode recorded in
    results (unchanged where the C library is not glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        # mallopt(M_TRIM_THRESHOLD=-1, 1 GiB) and mallopt(M_MMAP_MAX=-4, 0); each returns 1 on success.
        if libc.mallopt(-1, 1 << 30) == 1 and libc.mallopt(-4, 0) == 1:
            _ALLOCATOR["mode"] = "glibc, freed memory reused (M_MMAP_MAX=0, M_TRIM_THRESHOLD=1GiB)"
    except (OSError, AttributeError):
        pass
    return _ALLOCATOR["mode"]


def allocator_mode() -> str:
    """How host memory is allocated in this process (see reuse_freed_memory)."""
    return _ALLOCATOR["mode"]
