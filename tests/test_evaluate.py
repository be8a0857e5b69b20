"""Held-out evaluation: the metrics themselves, and `synctalk eval` end to end on a small person."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from helpers_render import NAME, trained_person


@pytest.fixture(scope="session")
def person(tmp_path_factory) -> SimpleNamespace:
    return trained_person(tmp_path_factory)


def _texture(seed: int = 0, shape: tuple[int, int, int] = (96, 128, 3)) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    return cv2.GaussianBlur(img, (5, 5), 1.0)


def test_ssim_and_psnr_behave():
    import cv2

    from synctalk.evaluate import psnr, ssim

    a = _texture()
    assert ssim(a, a) == pytest.approx(1.0)
    assert psnr(a, a) == math.inf
    rng = np.random.default_rng(1)
    noisy = np.clip(a + rng.normal(0, 10, a.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(a + rng.normal(0, 30, a.shape), 0, 255).astype(np.uint8)
    blurred = cv2.GaussianBlur(a, (9, 9), 3.0)
    assert 1 > ssim(a, noisy) > ssim(a, noisier) > 0
    assert ssim(a, blurred) < 0.9
    assert ssim(a, noisy) == pytest.approx(ssim(noisy, a))
    assert psnr(a, noisy) > psnr(a, noisier)
    # PSNR of a known error: every pixel off by 5 → 10·log10(255² / 25)
    shifted = (a.astype(int) + 5).clip(0, 255).astype(np.uint8)
    exact = a <= 250
    assert psnr(a[exact[..., 0] & exact[..., 1] & exact[..., 2]], shifted[exact[..., 0] & exact[..., 1] & exact[..., 2]]) \
        == pytest.approx(10 * math.log10(255 ** 2 / 25), rel=1e-6)
    # SSIM sees structure: a uniform brightness offset costs less than noise of the same MSE
    assert ssim(a, shifted) > ssim(a, noisy)


def test_pearson_jitter_and_sharpness():
    from synctalk.evaluate import jitter, laplacian_variance, pearson

    t = np.linspace(0, 6, 100)
    assert pearson(np.sin(t), 2 * np.sin(t) + 1) == pytest.approx(1.0)
    assert pearson(np.sin(t), -np.sin(t)) == pytest.approx(-1.0)
    assert pearson(np.ones(10), np.arange(10)) is None
    track = np.stack([np.stack([t, t ** 2], -1)] * 3, 1)  # (T, 3, 2): smooth motion
    shaky = track + np.random.default_rng(0).normal(0, 0.5, track.shape)
    assert jitter(shaky) > 5 * jitter(track)
    import cv2

    a = _texture()
    assert laplacian_variance(a) > laplacian_variance(cv2.GaussianBlur(a, (9, 9), 3.0))


def test_one_second_shift_decorrelates_real_mouth_openings(person):
    """The control's premise on real data: the person's mouth opening now vs one second later."""
    from synctalk.evaluate import SHIFT_FRAMES, pearson
    from synctalk.faces.topology import get_topology
    from synctalk.preprocess import load_all_landmarks

    n = len(np.load(person.layout.crop_boxes))
    ap = get_topology("dlib68").mouth_aperture(load_all_landmarks(person.layout, n))
    same = pearson(ap[SHIFT_FRAMES:], ap[SHIFT_FRAMES:])
    shifted = pearson(ap[SHIFT_FRAMES:], ap[:-SHIFT_FRAMES])
    assert same == pytest.approx(1.0)
    assert shifted is not None and shifted < 0.5


def test_eval_command_scores_the_held_out_tail_and_writes_json(person, tmp_path, capsys):
    from synctalk.cli import main
    from synctalk.data import split_indices
    from synctalk.evaluate import METRIC_KEYS

    from conftest import MODELS

    out = tmp_path / "scores.json"
    rc = main(["eval", "--name", NAME, "--dataset_dir", str(person.dataset_dir), "--checkpoint_dir",
               str(person.checkpoint_dir), "--device", "cpu", "--models_dir", str(MODELS), "--json", str(out),
               "--no_progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "sync_corr" in printed and "psnr_mouth" in printed
    data = json.loads(out.read_text())
    assert set(METRIC_KEYS) <= set(data["metrics"])
    n = len(np.load(person.layout.crop_boxes))
    _train, val = split_indices(n, 0.1)
    assert data["frames"] == val.tolist()  # the same tail training held out
    assert data["held_out"]["count"] == len(val) and data["asr"] == "mel"
    m = data["metrics"]
    assert 0 < m["psnr_mouth"] < 60 and -1 <= m["ssim_mouth"] <= 1
    for key in ("jitter_ratio", "sharpness_ratio", "opening_range_ratio"):
        assert m[key] is None or m[key] >= 0
    assert len(data["series"]["aperture_real"]) == len(val)


def test_eval_without_a_model_is_a_clear_error(person, capsys):
    from synctalk.cli import main

    rc = main(["eval", "--name", NAME, "--dataset_dir", str(person.dataset_dir), "--checkpoint_dir",
               str(person.root / "nowhere"), "--device", "cpu", "--no_progress"])
    assert rc == 1
    assert "no trained model" in capsys.readouterr().err
