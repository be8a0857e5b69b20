"""Training data: the crop cache, the held-out split, and batched sample construction.

The crop cache is every frame's 328x328 face crop in one (N, 328, 328, 3) uint8 BGR .npy file, made
once from the frames and crop_boxes.npy and then memory-mapped: training never decodes a JPEG.
`FrameData` holds the crops' inner 320x320 and the audio features either on the training device
(the whole cache as uint8 on a GPU) or as the memmap on the host; either way a batch is chosen by
an integer index tensor, and masking, normalisation and audio windows are done batched on the
device. Samples:

* SyncNet: crop i with audio window i (in sync, label 1) or with window j, |i - j| >= 5 (label 0);
  some negatives are drawn 2-15 frames away (hard), and on request training pairs are jittered.
* UNet: target = inner crop of frame i; input = reference crop of another training frame
  concatenated with the target masked by a rectangle; audio = window i.

The package by role: `cache` (crop cache, dataset checks), `features` (audio features), `samples`
(index sampling), `augment` (SyncNet jitter), `frames` (FrameData, the UNet batch). Every name is
importable from `synctalk.data`.
"""

from __future__ import annotations

from ..constants import BORDER, INNER
from .augment import SyncNetAugment
from .cache import build_crop_cache, check_preprocessed, load_crop_cache
from .features import feature_audio_dim, load_features, resolve_asr
from .frames import DEFAULT_MASK, Batch, FrameData, load_frame_data, parse_mask
from .samples import (MIN_NEGATIVE_OFFSET, NEAR_NEGATIVE_OFFSETS, add_hard_negatives, far_indices, frame_groups,
                      near_indices, reference_indices, split_indices, syncnet_pairs)

__all__ = ["BORDER", "DEFAULT_MASK", "INNER", "MIN_NEGATIVE_OFFSET", "NEAR_NEGATIVE_OFFSETS", "Batch", "FrameData",
           "SyncNetAugment", "add_hard_negatives", "build_crop_cache", "check_preprocessed", "far_indices",
           "feature_audio_dim", "frame_groups", "load_crop_cache", "load_features", "load_frame_data", "near_indices", "parse_mask",
           "reference_indices", "resolve_asr", "split_indices", "syncnet_pairs"]
