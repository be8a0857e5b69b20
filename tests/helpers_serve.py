"""A tiny servable avatar for the server tests: clip5 preprocessed for real (mel, dlib) and a randomly
initialised tiny UNet saved in the training checkpoint format."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from conftest import MODELS, SPEECH_WAV, VIDEOS
from helpers_render import save_random_unet

NAME = "clip5"
SR = 16000
_CACHE: dict[str, SimpleNamespace] = {}


def served_person(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """dataset/ and checkpoint/ with one ready avatar (made once per test session)."""
    if "person" in _CACHE:
        return _CACHE["person"]
    from synctalk.layout import checkpoint_layout, dataset_layout
    from synctalk.preprocess import PreprocessOptions, preprocess_video

    root = tmp_path_factory.mktemp("serve")
    dataset_dir, checkpoint_dir = root / "dataset", root / "checkpoint"
    preprocess_video(PreprocessOptions(video_path=VIDEOS / f"{NAME}.mp4", name=NAME, dataset_dir=dataset_dir,
                                       asr_model="mel", landmarker="dlib", models_dir=MODELS, device="cpu",
                                       progress=False))
    ck = checkpoint_layout(checkpoint_dir, NAME)
    save_random_unet(ck.best(ck.unet_dir), asr="mel", width="tiny")
    _CACHE["person"] = SimpleNamespace(root=root, dataset_dir=dataset_dir, checkpoint_dir=checkpoint_dir,
                                       layout=dataset_layout(dataset_dir, NAME))
    return _CACHE["person"]


def speech(seconds: float, offset: float = 1.0):
    """`seconds` of the fixture speech (16 kHz float32) from `offset` on."""
    from synctalk import media

    audio = media.load_audio(SPEECH_WAV)
    a = int(offset * SR)
    return audio[a:a + int(round(seconds * SR))]
