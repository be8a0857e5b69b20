"""Rendering: new speech → lip-synced video of a person (`synctalk infer`), and the pieces eval shares.

generator: checkpoint → UNet on crops + audio windows · paste: crops back into frames · frames: the
avatar's walk, decoding and encoding threads · silence: voice activity and the resting mouth ·
pipeline: the one render path (`render_chunks`) and `render` · command: the command line.
"""

from .command import add_arguments, run
from .frames import FrameSink, cv2_shape, load_boxes, pingpong_indices, prefetch_frames
from .generator import (CPU_MICRO_BATCH, Generator, crops_to_uint8, dataset_asr_models, fuse_conv_bn,
                        load_generator, resolve_checkpoint)
from .paste import FEATHER_FRACTION, feather_alpha, paste_back, paste_back_torch
from .pipeline import (FramePlan, RenderedChunk, RenderResult, default_output, frame_plan, load_speech, render,
                       render_chunks, speech_features)
from .silence import (PAUSE_SECONDS, frame_rms, generation_weights, pauses, rest_weights, resting_candidates,
                      silent_edges, voice_activity)

__all__ = [
    "CPU_MICRO_BATCH", "FEATHER_FRACTION", "FramePlan", "FrameSink", "Generator", "PAUSE_SECONDS", "RenderResult",
    "RenderedChunk", "add_arguments", "crops_to_uint8", "cv2_shape", "dataset_asr_models", "default_output",
    "feather_alpha", "frame_plan", "frame_rms", "fuse_conv_bn", "generation_weights", "load_boxes",
    "load_generator", "load_speech", "paste_back", "paste_back_torch", "pauses", "pingpong_indices",
    "prefetch_frames", "render", "render_chunks", "resolve_checkpoint", "rest_weights", "resting_candidates", "run",
    "silent_edges", "speech_features", "voice_activity",
]
