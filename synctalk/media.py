"""Media through ffmpeg (the binary imageio-ffmpeg ships): probe, fps conversion, frames, audio, writing.

Every call passes an argument list to subprocess (no shell strings), and every output file is
written to a temporary name and renamed into place, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import SyncTalkError
from .fileio import atomic_path


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: $IMAGEIO_FFMPEG_EXE, else imageio-ffmpeg's, else one on PATH."""
    env = os.environ.get("IMAGEIO_FFMPEG_EXE")
    if env:
        return env
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        found = shutil.which("ffmpeg")
        if found:
            return found
    raise SyncTalkError("no ffmpeg found: `pip install imageio-ffmpeg` (or set IMAGEIO_FFMPEG_EXE)")


@dataclass(frozen=True)
class MediaInfo:
    """What ffmpeg says about a media file."""

    path: Path
    duration: float
    has_video: bool
    has_audio: bool
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    variable_fps: bool = False
    audio_sample_rate: int | None = None

    def frame_count_at(self, fps: float) -> int:
        """Frames a constant-rate conversion of this file to `fps` produces (ceil of duration × fps)."""
        return max(1, math.ceil(round(self.duration * fps, 6)))


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\S+.*?: Video: (?P<rest>.*)")
_AUDIO = re.compile(r"Stream #\S+.*?: Audio: (?P<rest>.*)")


def probe(path: str | Path) -> MediaInfo:
    """Read duration, streams, fps and size; raise SyncTalkError for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise SyncTalkError(f"file not found: {path}")
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True,
                          errors="replace")
    text = proc.stderr
    if "Invalid data found" in text or ("Stream #" not in text):
        raise SyncTalkError(f"{path} is not a media file ffmpeg can read")
    duration = 0.0
    m = _DURATION.search(text)
    if m:
        h, mi, s = m.groups()
        duration = int(h) * 3600 + int(mi) * 60 + float(s)
    fps = width = height = None
    variable = False
    vm = _VIDEO.search(text)
    # cover art / attached pictures are not a video track
    if vm and "attached pic" in vm.group(0):
        vm = None
    if vm:
        rest = vm.group("rest")
        sm = re.search(r"(\d{2,5})x(\d{2,5})", rest)
        if sm:
            width, height = int(sm.group(1)), int(sm.group(2))
        fm = re.search(r"([\d.]+)\s*fps", rest)
        tm = re.search(r"([\d.]+k?)\s*tbr", rest)
        if fm:
            fps = float(fm.group(1))
        if tm and fps is not None and not tm.group(1).endswith("k"):
            variable = abs(float(tm.group(1)) - fps) > 0.01
    am = _AUDIO.search(text)
    sr = None
    if am:
        rm = re.search(r"(\d+) Hz", am.group("rest"))
        sr = int(rm.group(1)) if rm else None
    return MediaInfo(path=path, duration=duration, has_video=vm is not None, has_audio=am is not None, fps=fps,
                     width=width, height=height, variable_fps=variable, audio_sample_rate=sr)


def _run(args: list[str], what: str) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise SyncTalkError(f"ffmpeg failed while {what}:\n{tail}")


def convert_to_fps(src: str | Path, dst: str | Path, fps: int = 25) -> None:
    """Re-encode `src` at a constant `fps` (H.264 + AAC) into `dst`, atomically."""
    with atomic_path(dst, suffix=".mp4") as tmp:
        _run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src), "-vf", f"fps={fps}", "-fps_mode", "cfr",
              "-c:v", "libx264", "-preset", "veryfast", "-crf", "15", "-pix_fmt", "yuv420p",
              "-c:a", "aac", "-b:a", "192k", "-movflags", "+faststart", str(tmp)],
             f"converting {src} to {fps} fps")


def iter_frames(path: str | Path, fps: float | None = None) -> Iterator[np.ndarray]:
    """Decode a video into BGR uint8 frames through a pipe (optionally resampled to `fps`)."""
    info = probe(path)
    if not info.has_video or not info.width:
        raise SyncTalkError(f"{path} has no video track")
    # the decoder applies rotation metadata; read the real output size from the first frame's bytes
    args = [ffmpeg_exe(), "-loglevel", "error", "-i", str(path)]
    if fps:
        args += ["-vf", f"fps={fps}"]
    args += ["-f", "rawvideo", "-pix_fmt", "bgr24", "-"]
    w, h = _display_size(path, info)
    frame_bytes = w * h * 3
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        while True:
            buf = proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            yield np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)
    finally:
        proc.stdout.close()  # type: ignore[union-attr]
        proc.kill()
        proc.wait()


def _display_size(path: str | Path, info: MediaInfo) -> tuple[int, int]:
    """Width and height of decoded frames (rotation applied), from one decoded frame."""
    proc = subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-frames:v", "1",
                           "-f", "image2pipe", "-vcodec", "png", "-"], capture_output=True)
    if proc.returncode == 0 and proc.stdout:
        import cv2

        img = cv2.imdecode(np.frombuffer(proc.stdout, np.uint8), cv2.IMREAD_COLOR)
        if img is not None:
            return img.shape[1], img.shape[0]
    assert info.width and info.height
    return info.width, info.height


# Decoded audio is laid on its timestamps: a gap between packets becomes silence, and a track that
# starts after 0 is padded from 0, so sample k is at k / rate on the video's clock. Decoders otherwise
# butt the samples together: grid_s1_5min.mp4 (100 sentences joined) has a 2 ms gap at each of its 99
# joins, and its audio came out 0.2 s short, sliding off the frames by about a frame a minute.
ON_TIMESTAMPS = "aresample=async=1:min_hard_comp=0.001:first_pts=0"


def _mono_audio_args(sample_rate: int) -> list[str]:
    """The ffmpeg output options of every audio decode here: no video, mono, on its timestamps, resampled."""
    return ["-vn", "-ac", "1", "-af", ON_TIMESTAMPS, "-ar", str(sample_rate)]


def extract_audio_wav(src: str | Path, dst: str | Path, sample_rate: int = 16000) -> None:
    """Write the audio track of `src` as 16-bit PCM mono WAV at `sample_rate`, atomically."""
    info = probe(src)
    if not info.has_audio:
        raise SyncTalkError(f"{src} has no audio track")
    with atomic_path(dst, suffix=".wav") as tmp:
        _run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src), *_mono_audio_args(sample_rate),
              "-c:a", "pcm_s16le", "-f", "wav", str(tmp)], f"extracting audio from {src}")


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Decode any audio ffmpeg reads (wav, mp3, m4a, a video's track) to mono float32 at `sample_rate`."""
    info = probe(path)
    if not info.has_audio:
        raise SyncTalkError(f"{path} has no audio track")
    proc = subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(path), *_mono_audio_args(sample_rate),
                           "-f", "f32le", "-"], capture_output=True)
    if proc.returncode != 0:
        raise SyncTalkError(f"could not decode audio of {path}: {proc.stderr.decode(errors='replace')[-300:]}")
    audio = np.frombuffer(proc.stdout, dtype=np.float32).copy()
    if audio.size == 0:
        raise SyncTalkError(f"{path} holds no audio samples")
    return audio


class VideoWriter:
    """Stream BGR frames into ffmpeg (H.264 yuv420p, optional AAC audio); renamed into place on close.

    With `duration` (frames ÷ fps, known in advance) the audio is padded or cut to exactly that.

    Use as a context manager; an exception inside the block discards the partial file.
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: int = 25,
                 audio_path: str | Path | None = None, crf: int = 18, preset: str = "veryfast",
                 duration: float | None = None):
        self.path = Path(path)
        self.width, self.height, self.fps = width, height, fps
        self.audio_path = audio_path
        self.duration = duration  # seconds of video that will be written, when known in advance
        self.crf, self.preset = crf, preset
        self.frames = 0
        self._ctx = None
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "VideoWriter":
        self._ctx = atomic_path(self.path, suffix=".mp4")
        tmp = self._ctx.__enter__()
        args = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
                "-s", f"{self.width}x{self.height}", "-r", str(self.fps), "-i", "-"]
        if self.audio_path is not None:
            args += ["-i", str(self.audio_path)]
        args += ["-map", "0:v:0"]
        if self.audio_path is not None:
            args += ["-map", "1:a:0", "-c:a", "aac", "-b:a", "160k"]
            if self.duration is not None:
                # audio a little shorter than the frames must not drop the last frame: pad it with
                # silence to the video's length and cut both there
                args += ["-af", f"apad=whole_dur={self.duration:.6f}", "-t", f"{self.duration:.6f}"]
            else:
                args += ["-shortest"]
        # even dimensions are required by yuv420p
        args += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset", self.preset,
                 "-crf", str(self.crf), "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4", str(tmp)]
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one BGR uint8 frame of the writer's size."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame of shape {frame.shape}/{frame.dtype}, expected {(self.height, self.width, 3)} uint8")
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            raise SyncTalkError(f"ffmpeg stopped while writing {self.path}: {err[-400:]}") from None
        self.frames += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._proc is not None and self._ctx is not None
        if self._proc.stdin:
            self._proc.stdin.close()
        if exc_type is not None:
            self._proc.kill()
            self._proc.wait()
            self._ctx.__exit__(exc_type, exc, tb)
            return
        err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
        code = self._proc.wait()
        if code != 0:
            failure = SyncTalkError(f"ffmpeg failed writing {self.path}: {err[-400:]}")
            self._ctx.__exit__(SyncTalkError, failure, None)
            raise failure
        self._ctx.__exit__(None, None, None)
