"""Device choice: 'auto' means the first CUDA GPU when there is one, else the CPU."""

from __future__ import annotations


def resolve_device(spec: "str | None" = "auto"):
    """Turn 'auto', 'cpu', 'cuda', 'cuda:1' into a torch.device."""
    import torch

    if spec in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from .errors import SyncTalkError

        raise SyncTalkError(f"device {spec!r} asked for, but torch sees no CUDA GPU (is this a CPU build of torch?)")
    return dev


def resolve_amp(amp: str, device) -> str:
    """'auto' → bf16 on a GPU that supports it, else none; checks explicit choices (auto, bf16, fp16, none)."""
    import torch

    from .errors import SyncTalkError

    if amp not in ("auto", "bf16", "fp16", "none"):
        raise SyncTalkError(f"--amp must be auto, bf16, fp16 or none, got {amp!r}")
    if amp == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "none"
    if amp == "fp16" and device.type != "cuda":
        raise SyncTalkError("--amp fp16 needs a CUDA device; use bf16 or none on the CPU")
    return amp


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's or taskset's; else all)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


MALLOC_MMAP_THRESHOLD = 512 << 20


def tune_cpu_allocator() -> bool:
    """Keep glibc from returning big activation buffers to the OS after every layer (Linux only).

    By default each large tensor is a fresh mmap, and touching it again costs a page fault per
    4 KiB: on two cores that doubled a network's time. Raising the mmap threshold lets the heap
    reuse the memory. Returns whether the setting was applied.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD) == 1
        return bool(ok and libc.mallopt(m_trim_threshold, 2 * MALLOC_MMAP_THRESHOLD) == 1)
    except (OSError, AttributeError):  # not glibc (musl, …): nothing to tune
        return False
