"""benchmarks/opening_from_audio.py: a mouth that the audio drives is predicted from it, one that it does not drive is not."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from helpers_training import write_dataset

N_FRAMES = 125  # all of clip2


def _write_mouths(root: Path, name: str, opening: np.ndarray) -> None:
    """68-point landmark files of a still face whose inner lips stand `opening` × face width apart."""
    from synctalk.faces.lms import write_landmarks
    from synctalk.layout import dataset_layout

    layout = dataset_layout(root, name)
    layout.landmarks_dir.mkdir(parents=True, exist_ok=True)
    base = np.stack([np.linspace(100, 300, 68), np.full(68, 150.0)], axis=1).astype(np.float32)
    base[0, 0], base[16, 0] = 100.0, 300.0  # the face-width points: 200 px apart
    for i, a in enumerate(opening):
        pts = base.copy()
        pts[[61, 62, 63], 1] = 200.0 - 100.0 * a
        pts[[67, 66, 65], 1] = 200.0 + 100.0 * a
        write_landmarks(layout.landmark_path(i), pts)


def _run(root: Path, name: str, capsys: pytest.CaptureFixture) -> list[float]:
    """The tail correlations the script prints (ridge, then the perceptron)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from benchmarks.opening_from_audio import main

    capsys.readouterr()
    assert main(["--name", name, "--dataset_dir", str(root), "--val_fraction", "0.3", "--seeds", "1"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if "held-out tail" in x]
    assert len(lines) == 2, lines
    return [float(x.split(": r ")[1].split()[0]) for x in lines]


def test_a_mouth_driven_by_the_audio_is_predicted_and_a_random_one_is_not(tmp_path: Path, capsys) -> None:
    from synctalk.layout import dataset_layout

    root = tmp_path / "dataset"
    write_dataset(root, "loud", n_frames=N_FRAMES)
    write_dataset(root, "noise", n_frames=N_FRAMES)
    mel = np.load(dataset_layout(root, "loud").features("mel"))  # (N, 4, 80): the frame's own mel steps
    loudness = mel.reshape(len(mel), -1).mean(axis=1)
    driven = 0.02 + 0.1 * (loudness - loudness.min()) / (np.ptp(loudness) + 1e-9)
    _write_mouths(root, "loud", driven)
    rng = np.random.default_rng(0)
    _write_mouths(root, "noise", rng.uniform(0.02, 0.12, N_FRAMES))

    ridge, mlp = _run(root, "loud", capsys)
    # ridge finds the linear rule nearly exactly; the perceptron, on 78 fitting frames of 5,120 values,
    # less well but clearly (0.44 here)
    assert ridge > 0.9 and mlp > 0.3
    ridge_noise, mlp_noise = _run(root, "noise", capsys)
    assert abs(ridge_noise) < 0.3 and abs(mlp_noise) < 0.3
