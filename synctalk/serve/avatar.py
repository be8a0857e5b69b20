"""A person loaded for serving: frames, crops and boxes of its dataset, and its generator on the device."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..constants import CROP_SIZE
from ..errors import SyncTalkError
from ..layout import dataset_layout, validate_name

FRAME_CACHE = 96  # decoded frames kept per avatar (the walk is sequential, so this is plenty)


class Avatar:
    """One person's dataset and UNet, ready to draw frames: `crops(src)`, `frame(src)`, `jpeg(src)`."""

    def __init__(self, name: str, dataset_dir: Path, checkpoint_dir: Path, device: Any, *,
                 checkpoint: Path | None = None, bf16: bool = False) -> None:
        from ..render import Generator, load_boxes, load_generator, resolve_checkpoint

        self.name = validate_name(name)
        self.layout = dataset_layout(dataset_dir, name)
        self.boxes = load_boxes(self.layout)
        self.num_frames = len(self.boxes)
        if not self.layout.frame_path(self.num_frames - 1).exists():
            raise SyncTalkError(f"{self.layout.frames_dir}: frame {self.num_frames - 1} is missing; "
                                f"rerun preprocessing of {name}")
        self.checkpoint = resolve_checkpoint(checkpoint_dir, name, checkpoint)
        model, ckpt = load_generator(self.checkpoint, device, layout=self.layout)
        # the worker pads batches to a few sizes itself (worker.batch_bucket)
        self.generator = Generator(model, ckpt, device, bf16=bf16, pad_to=0)
        self.asr = self.generator.asr
        self.width_name = (ckpt.get("config") or {}).get("width", "full")
        self.device = device
        self._crop_cache = None
        if self.layout.crop_cache.exists():
            cache = np.load(self.layout.crop_cache, mmap_mode="r")
            if cache.shape == (self.num_frames, CROP_SIZE, CROP_SIZE, 3):
                self._crop_cache = cache
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        first = self.frame(0)
        self.height, self.width = first.shape[:2]

    def frame(self, src: int) -> np.ndarray:
        """The dataset's frame `src` (BGR uint8; a shared array: copy before drawing into it)."""
        import cv2

        with self._lock:
            img = self._frames.get(src)
            if img is not None:
                self._frames.move_to_end(src)
                return img
        path = self.layout.frame_path(src)
        img = cv2.imread(str(path))
        if img is None:
            raise SyncTalkError(f"frame {path} is missing or unreadable; rerun preprocessing of {self.name}")
        with self._lock:
            self._frames[src] = img
            while len(self._frames) > FRAME_CACHE:
                self._frames.popitem(last=False)
        return img

    def crop(self, src: int) -> np.ndarray:
        """The 328 crop of frame `src` (from the crop cache when preprocessing built one)."""
        if self._crop_cache is not None:
            return np.asarray(self._crop_cache[src])
        from ..faces.crop import crop_frame

        return crop_frame(self.frame(src), self.boxes[src], CROP_SIZE)

    def real_jpeg(self, src: int) -> bytes:
        """The resting avatar: frame `src` as stored by preprocessing (already a JPEG, sent as is)."""
        return self.layout.frame_path(src).read_bytes()

    def describe(self) -> dict:
        """What a client needs to know about the avatar."""
        return {"name": self.name, "asr": self.asr, "width": self.width, "height": self.height,
                "frames": self.num_frames, "checkpoint": str(self.checkpoint), "model_width": self.width_name}


class AvatarPool:
    """Avatars loaded on first use and kept on the device until the server stops."""

    def __init__(self, dataset_dir: Path, checkpoint_dir: Path, device: Any, *, bf16: bool = False,
                 models_dir: Path | None = None,
                 warm: "Callable[[Avatar], None] | None" = None) -> None:
        """`warm(avatar)` readies a newly loaded avatar on the threads that will draw it (BatchWorker.warm)."""
        self.models_dir = models_dir
        self.dataset_dir = Path(dataset_dir)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.device = device
        self.bf16 = bf16
        self.warm = warm
        self._avatars: dict[str, Avatar] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Avatar:
        """The loaded avatar `name` (loading it now if needed; SyncTalkError when it cannot be)."""
        validate_name(name)
        with self._lock:
            if name not in self._avatars:
                avatar = Avatar(name, self.dataset_dir, self.checkpoint_dir, self.device, bf16=self.bf16)
                if self.warm is not None:
                    self.warm(avatar)
                if avatar.asr != "mel":  # its audio encoder too, before a stream needs it
                    from .features import loaded_encoder

                    loaded_encoder(avatar.asr, self.models_dir, self.device)
                self._avatars[name] = avatar
            return self._avatars[name]

    def loaded(self) -> list[str]:
        """Names of the avatars on the device."""
        with self._lock:
            return sorted(self._avatars)

    def drop(self, name: str) -> None:
        """Forget a loaded avatar (after it was retrained, the next use loads the new checkpoint)."""
        with self._lock:
            self._avatars.pop(name, None)
