"""Every path under dataset/<name>/ and checkpoint/ comes from here, and nowhere else."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .constants import CROP_SIZE  # noqa: F401  (re-exported for the layout's users)
from .errors import SyncTalkError

FRAME_EXT = "jpg"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# file systems allow 255 bytes per name; <name>.mp4 and its temporary `.<name>.mp4.st<pid>-<8>.tmp.mp4`
# add about 40, so longer names would fail half-way through a run
MAX_NAME_LENGTH = 200


def validate_name(name: str) -> str:
    """Return `name` if it is a safe person name (no path separators, no '..'), else raise."""
    if not name or "/" in name or "\\" in name or ".." in name or not _NAME_RE.match(name):
        raise SyncTalkError(
            f"invalid name {name!r}: use letters, digits, '_', '-' or '.', with no '/', '\\' or '..'"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise SyncTalkError(f"invalid name {name[:40]!r}… ({len(name)} characters): use at most {MAX_NAME_LENGTH}")
    return name


@dataclass(frozen=True)
class DatasetLayout:
    """Paths of one person's dataset folder."""

    root: Path
    name: str

    @property
    def video(self) -> Path:
        return self.root / f"{self.name}.mp4"

    @property
    def frames_dir(self) -> Path:
        return self.root / "full_body_img"

    @property
    def landmarks_dir(self) -> Path:
        return self.root / "landmarks"

    @property
    def audio_wav(self) -> Path:
        return self.root / "aud.wav"

    @property
    def crop_boxes(self) -> Path:
        """(N, 4) int32 x1, y1, x2, y2 in full-frame pixels, smoothed over time."""
        return self.root / "crop_boxes.npy"

    @property
    def raw_crop_boxes(self) -> Path:
        """(N, 4) the unsmoothed boxes from the crop rule, kept for inspection."""
        return self.root / "crop_boxes_raw.npy"

    @property
    def crop_cache(self) -> Path:
        """(N, 328, 328, 3) uint8 BGR crops, memory-mappable."""
        return self.root / f"crops_{CROP_SIZE}.npy"

    @property
    def state_file(self) -> Path:
        return self.root / ".training_state.json"

    @property
    def preprocess_lock(self) -> Path:
        """Held (synctalk.locking) while a preprocessing run writes this folder."""
        return self.root / ".preprocess.lock"

    @property
    def fps_converted_video(self) -> Path:
        return self.root / ".source_25fps.mp4"

    def features(self, asr: str) -> Path:
        """The feature file of an audio model (name from the audio registry)."""
        from .audio.registry import get_spec

        return self.root / get_spec(asr).feature_file

    def frame_path(self, index: int) -> Path:
        return self.frames_dir / f"{index:06d}.{FRAME_EXT}"

    def landmark_path(self, index: int) -> Path:
        return self.landmarks_dir / f"{index:06d}.lms"


def dataset_layout(dataset_dir: str | Path, name: str) -> DatasetLayout:
    """The layout of dataset_dir/name, after checking the name."""
    return DatasetLayout(Path(dataset_dir) / validate_name(name), name)


@dataclass(frozen=True)
class CheckpointLayout:
    """Paths under checkpoint/: one folder for the person's SyncNet, one for the UNet."""

    root: Path
    name: str

    @property
    def syncnet_dir(self) -> Path:
        return self.root / f"syncnet_{self.name}"

    @property
    def unet_dir(self) -> Path:
        return self.root / self.name

    @staticmethod
    def latest(directory: Path) -> Path:
        return directory / "checkpoint_latest.pth"

    @staticmethod
    def best(directory: Path) -> Path:
        return directory / "checkpoint_best.pth"

    @staticmethod
    def lock(directory: Path) -> Path:
        """Held (synctalk.locking.hold_lock) while a training run writes `directory`."""
        return directory / ".lock"

    @staticmethod
    def epoch(directory: Path, epoch: int) -> Path:
        return directory / f"{epoch}.pth"


def checkpoint_layout(checkpoint_dir: str | Path, name: str) -> CheckpointLayout:
    """The checkpoint layout of one person."""
    return CheckpointLayout(Path(checkpoint_dir), validate_name(name))
