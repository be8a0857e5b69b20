"""A small preprocessed person with a UNet checkpoint, shared by the render and evaluation tests."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import MODELS, VIDEOS

NAME = "clip2"
_CACHE: dict[str, SimpleNamespace] = {}


def save_random_unet(path: Path, asr: str = "mel", width: str = "tiny", seed: int = 0) -> Path:
    """A randomly initialised UNet checkpoint in the training module's file format."""
    import torch

    from synctalk.data import DEFAULT_MASK
    from synctalk.training.checkpoint import save_checkpoint
    from unet_328 import build_unet

    torch.manual_seed(seed)
    model = build_unet(asr, width)
    config = {"asr": asr, "width": width, "mask": list(DEFAULT_MASK), "val_fraction": 0.1}
    return save_checkpoint(path, {"kind": "unet", "model": model.state_dict(), "config": config, "asr": asr,
                                  "epoch": 0, "metrics": {}})


def trained_person(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """clip2 preprocessed for real (mel features, dlib landmarks) and a tiny UNet trained on it for one
    epoch through `synctalk train`, so the checkpoint is exactly what training writes."""
    if "person" in _CACHE:  # made once per test session, whichever module asks first
        return _CACHE["person"]
    from synctalk.cli import main
    from synctalk.layout import checkpoint_layout, dataset_layout
    from synctalk.preprocess import PreprocessOptions, preprocess_video

    root = tmp_path_factory.mktemp("render")
    dataset_dir, checkpoint_dir = root / "dataset", root / "checkpoint"
    preprocess_video(PreprocessOptions(video_path=VIDEOS / "clip2.mp4", name=NAME, dataset_dir=dataset_dir,
                                       asr_model="mel", landmarker="dlib", models_dir=MODELS, device="cpu",
                                       progress=False))
    rc = main(["train", "--name", NAME, "--dataset_dir", str(dataset_dir), "--checkpoint_dir", str(checkpoint_dir),
               "--width", "tiny", "--perceptual", "none", "--no_syncnet", "--epochs", "1", "--device", "cpu",
               "--no_progress"])
    assert rc == 0
    ck = checkpoint_layout(checkpoint_dir, NAME)
    assert ck.best(ck.unet_dir).is_file()
    _CACHE["person"] = SimpleNamespace(root=root, dataset_dir=dataset_dir, checkpoint_dir=checkpoint_dir,
                                       layout=dataset_layout(dataset_dir, NAME))
    return _CACHE["person"]
