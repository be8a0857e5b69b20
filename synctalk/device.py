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
