"""The streaming protocol: one WebSocket per viewer, JSON text messages and binary audio/frame messages.

Client → server
  text   {"type": "start", "name": AVATAR, "pace": "realtime"|"asap", "quality": 1..100, "start_frame": N,
          "max_side": PIXELS, "max_lag_ms": MS}
         (optional: the avatar may also come as ?name= in the URL; must precede the first audio)
  binary audio: 16 kHz mono signed 16-bit little-endian PCM, at least 20 ms (320 samples) per message
  text   {"type": "end"}    the utterance is over: its last frames are made (the audio after it is
                            padded with silence to a whole frame, so the next utterance starts on a
                            frame boundary)
Server → client
  text   {"type": "ready", ...}  avatar, fps, sample_rate, asr, lookahead_frames, min_delay_ms, width, height
  binary frame: FRAME_HEADER then a JPEG image (see `pack_frame`)
  text   {"type": "end", "frames": N}  every speech frame of the utterance has been sent
  text   {"type": "error", "message": TEXT}

Speech frame k shows the audio starting at the stream's sample k·640 (its timestamp is k·40 ms on the
clock of the audio the client sent), whatever the wall clock does, so audio and video cannot drift.
Idle frames (the resting avatar, sent at 25 fps while no audio is waiting) carry index -1.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"STFR"
# magic, kind (0 idle, 1 speech), flags (reserved), reserved u16, seq u32, index i32, source frame u32,
# timestamp in microseconds of the client's audio clock i64 (-1 for idle frames)
FRAME_HEADER = struct.Struct("<4sBBHIiIq")
KIND_IDLE = 0
KIND_SPEECH = 1
MIN_CHUNK_SAMPLES = 320  # 20 ms at 16 kHz
MAX_CHUNK_SAMPLES = 16000 * 10  # one message holds at most 10 s


@dataclass(frozen=True)
class FrameMessage:
    """A decoded binary frame message."""

    kind: int
    seq: int
    index: int
    source: int
    timestamp_us: int
    jpeg: bytes


def frame_timestamp_us(index: int, fps: int = 25) -> int:
    """Microseconds on the client's audio clock at which speech frame `index` starts."""
    return index * 1_000_000 // fps


def pack_frame(kind: int, seq: int, index: int, source: int, jpeg: bytes, fps: int = 25) -> bytes:
    """One binary frame message: the 28-byte header, then the JPEG bytes."""
    ts = frame_timestamp_us(index, fps) if kind == KIND_SPEECH else -1
    return FRAME_HEADER.pack(MAGIC, kind, 0, 0, seq, index, source, ts) + jpeg


def unpack_frame(data: bytes) -> FrameMessage:
    """Decode a binary frame message (for Python clients and the tests)."""
    if len(data) < FRAME_HEADER.size:
        raise ValueError(f"frame message of {len(data)} bytes is shorter than its header")
    magic, kind, _f, _r, seq, index, source, ts = FRAME_HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"not a frame message (magic {magic!r})")
    return FrameMessage(kind, seq, index, source, ts, bytes(data[FRAME_HEADER.size:]))


def check_audio_chunk(data: bytes) -> int:
    """Samples in a binary audio message; ValueError with the reason when it is not valid PCM."""
    if len(data) % 2:
        raise ValueError(f"audio message of {len(data)} bytes is not whole 16-bit samples")
    n = len(data) // 2
    if n < MIN_CHUNK_SAMPLES:
        raise ValueError(f"audio message of {n} samples is shorter than 20 ms ({MIN_CHUNK_SAMPLES} samples)")
    if n > MAX_CHUNK_SAMPLES:
        raise ValueError(f"audio message of {n} samples is longer than 10 s")
    return n
