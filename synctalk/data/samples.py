"""Index sampling with torch generators: the held-out split, SyncNet pairs (with hard negatives),
UNet reference frames, runs of consecutive frames."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import SyncTalkError

if TYPE_CHECKING:  # pragma: no cover
    import torch

MIN_NEGATIVE_OFFSET = 5  # an off-sync pair is at least this many frames apart
NEAR_NEGATIVE_OFFSETS = (2, 15)  # a hard negative's audio is this many frames away (both ends included)


def split_indices(n: int, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) frame indices: the last `val_fraction` of the video is held out, contiguous."""
    if not 0.0 <= val_fraction < 1.0:
        raise SyncTalkError(f"--val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n_val == 0 and n >= 2:
        n_val = 1
    if n - n_val < 2:
        raise SyncTalkError(f"only {n} frames: too few to train on (with {n_val} held out)")
    return np.arange(0, n - n_val, dtype=np.int64), np.arange(n - n_val, n, dtype=np.int64)


def syncnet_pairs(frames: "torch.Tensor", pool: "torch.Tensor", generator: "torch.Generator",
                  min_offset: int = MIN_NEGATIVE_OFFSET, shuffle: bool = True
                  ) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor]":
    """One epoch of SyncNet pairs: (face_idx, audio_idx, label) over `frames`.

    Each frame appears once; labels alternate 1, 0 along the (shuffled) order so every batch is
    balanced; a negative's audio frame is drawn from `pool` at least `min_offset` frames away.
    """
    import torch

    order = frames[torch.randperm(len(frames), generator=generator)] if shuffle else frames.clone()
    labels = (torch.arange(len(order)) % 2 == 0).float()
    audio = order.clone()
    neg = labels == 0
    audio[neg] = far_indices(order[neg], pool, generator, min_offset)
    return order, audio, labels


def far_indices(idx: "torch.Tensor", pool: "torch.Tensor", generator: "torch.Generator",
                min_offset: int = MIN_NEGATIVE_OFFSET) -> "torch.Tensor":
    """For each index, a random member of `pool` at least `min_offset` away from it."""
    import torch

    out = torch.empty_like(idx)
    todo = torch.arange(len(idx))
    for _ in range(64):
        if len(todo) == 0:
            return out
        pick = pool[torch.randint(len(pool), (len(todo),), generator=generator)]
        ok = (pick - idx[todo]).abs() >= min_offset
        out[todo[ok]] = pick[ok]
        todo = todo[~ok]
    # the few left (tiny pools): take the pool end farthest away, if it is far enough
    lo, hi = pool.min(), pool.max()
    rest = idx[todo]
    far = torch.where((rest - lo).abs() >= (hi - rest).abs(), lo, hi)
    if ((far - rest).abs() < min_offset).any():
        raise SyncTalkError(
            f"too few frames ({len(pool)}) to draw off-sync pairs at least {min_offset} frames apart"
        )
    out[todo] = far
    return out


def reference_indices(idx: "torch.Tensor", pool: "torch.Tensor", generator: "torch.Generator") -> "torch.Tensor":
    """For each frame a random *other* frame of `pool` (sorted; the UNet's reference crops)."""
    import torch

    ref = pool[torch.randint(len(pool), (len(idx),), generator=generator)]
    same = ref == idx
    if same.any() and len(pool) > 1:
        # shift to the pool neighbour: still random, never the frame itself
        pos = torch.searchsorted(pool, ref[same])
        ref[same] = pool[(pos + 1) % len(pool)]
    return ref


def frame_groups(centres: "torch.Tensor", frames: int, lo: int, hi: int) -> "torch.Tensor":
    """(G, frames) runs of consecutive frames centred on `centres`, clamped to [lo, hi].

    The UNet trains on such runs when its SyncNet judges several frames at once: the critic then
    sees `frames` generated crops in a row, and the held-out tail stays out of every run.
    """
    import torch

    offsets = torch.arange(frames, device=centres.device) - frames // 2
    return (centres[:, None] + offsets[None, :]).clamp(lo, hi)


# ---------------------------------------------------------------- SyncNet: hard negatives and augmentation
#
# A person's video is short (a few hundred to a few thousand frames), and a SyncNet trained on it
# with plain pairs learns to recognise the frames instead of the sync: a negative drawn from
# anywhere in the video differs from the positive in head pose, lighting and the sentence being
# spoken, all of which identify the moment without looking at the lips. Negatives a few frames
# away share all of that and differ only in the mouth and the sound of that instant; random
# geometric and photometric jitter takes away what is left of the frame identity.



def near_indices(idx: "torch.Tensor", pool: "torch.Tensor", generator: "torch.Generator",
                 offsets: tuple[int, int] = NEAR_NEGATIVE_OFFSETS) -> "torch.Tensor":
    """For each index, a member of `pool` (sorted) min..max frames before or after it; far when none is."""
    import torch

    lo, hi = int(offsets[0]), int(offsets[1])
    if not 1 <= lo <= hi:
        raise SyncTalkError(f"near-negative offsets must satisfy 1 <= min <= max, got {offsets}")
    n = len(idx)
    dist = torch.randint(lo, hi + 1, (n,), generator=generator)
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1, 1)

    def member(j: "torch.Tensor") -> "torch.Tensor":
        pos = torch.searchsorted(pool, j).clamp(max=len(pool) - 1)
        return pool[pos] == j

    out = idx + sign * dist
    bad = ~member(out)
    out[bad] = idx[bad] - sign[bad] * dist[bad]  # the other side (frames near either end of the pool)
    bad = ~member(out)
    if bad.any():
        out[bad] = far_indices(idx[bad], pool, generator, lo)
    return out


def add_hard_negatives(face_idx: "torch.Tensor", audio_idx: "torch.Tensor", labels: "torch.Tensor",
                       pool: "torch.Tensor", generator: "torch.Generator", fraction: float,
                       offsets: tuple[int, int] = NEAR_NEGATIVE_OFFSETS) -> "torch.Tensor":
    """`audio_idx` with `fraction` of the negatives (label 0) re-drawn near their face frame."""
    import torch

    if not 0.0 <= fraction <= 1.0:
        raise SyncTalkError(f"the hard-negative fraction must be in [0, 1], got {fraction}")
    neg = torch.nonzero(labels == 0).flatten()
    pick = torch.rand(len(neg), generator=generator) < fraction
    rows = neg[pick]
    out = audio_idx.clone()
    if len(rows):
        out[rows] = near_indices(face_idx[rows], pool, generator, offsets)
    return out
