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
    assert sorted(int(k) for k in data["lag_profile"]) == list(range(-5, 6))
    assert m["lag_peak"] is None or -5 <= m["lag_peak"] <= 5
    assert "lag profile" in printed


def test_eval_without_a_model_is_a_clear_error(person, capsys):
    from synctalk.cli import main

    rc = main(["eval", "--name", NAME, "--dataset_dir", str(person.dataset_dir), "--checkpoint_dir",
               str(person.root / "nowhere"), "--device", "cpu", "--no_progress"])
    assert rc == 1
    assert "no trained model" in capsys.readouterr().err
    rc = main(["eval", "--name", NAME, "--dataset_dir", str(person.dataset_dir), "--checkpoint_dir",
               str(person.checkpoint_dir), "--device", "cpu", "--reference_video", str(person.root / "none.mp4"),
               "--no_progress"])
    assert rc == 1
    assert "reference video not found" in capsys.readouterr().err


# ---------------------------------------------------------------- lag profile, silence, cross-sentence


def test_lag_profile_sign_peak_and_subframe():
    from synctalk.evaluate import lag_profile, peak_lag

    rng = np.random.default_rng(1)
    real = np.convolve(rng.standard_normal(400), np.ones(3) / 3, mode="same")
    late = np.roll(real, 2)  # generated[t] = real[t - 2]: two frames late
    prof = lag_profile(late, real)
    assert sorted(prof) == list(range(-5, 6))
    peak = peak_lag(prof)
    assert peak["lag"] == 2 and peak["corr"] > 0.95 and abs(peak["subframe"] - 2) < 0.2
    assert peak_lag(lag_profile(np.roll(real, -3), real))["lag"] == -3
    # half a frame late (linear interpolation): the parabola puts the peak between 0 and 1
    half = 0.5 * (real + np.roll(real, 1))
    assert 0.2 < peak_lag(lag_profile(half, real))["subframe"] < 0.8
    assert peak_lag(lag_profile(np.ones(50), real[:50])) is None


def test_score_series_silence_figures():
    from synctalk.evaluate import score_series

    rng = np.random.default_rng(2)
    n = 200
    speech = np.ones(n, bool)
    speech[50:100] = False
    real = np.where(speech, 0.2 + 0.1 * np.sin(np.arange(n) / 2.0), 0.02).astype(np.float32)
    real_pts = np.zeros((n, 2, 2), np.float32)
    real_pts[:, 0, 1] = real * 100
    gen = real.copy()
    gen[50:100] = 0.06 + 0.03 * rng.standard_normal(50)  # a restless, half-open mouth in the pause
    gen_pts = np.zeros_like(real_pts)
    gen_pts[:, 0, 1] = gen * 100
    m, prof = score_series(real, gen, np.roll(real, 25), real_pts, gen_pts, speech)
    assert m["silence_frames"] == 50
    assert m["silence_opening_real"] == pytest.approx(0.02)
    assert m["silence_opening_generated"] == pytest.approx(0.06, abs=0.01)
    assert m["silence_opening_gap"] > 0.1  # 0.04 off, the real speaking range is about 0.2
    assert m["silence_jitter_ratio"] is None  # the real mouth is perfectly still: no ratio to 0
    m2, _ = score_series(real, real, None, real_pts, real_pts, speech)
    assert m2["silence_opening_gap"] == 0 and m2["lag_peak"] == 0 and m2["sync_corr"] == pytest.approx(1)
    assert m2["sync_corr_shifted"] is None and m2["mean_opening_ratio"] == pytest.approx(1)
    assert m2["peak_opening_ratio"] == pytest.approx(1) and m2["closure_ratio"] == pytest.approx(1)


def test_articulation_figures_read_the_open_and_the_closed_ends_of_speech_apart():
    """A mouth that neither opens wide nor shuts (the L1 generator's habit): below 1 at the wide end,
    above 1 at the closed end; silence does not enter, nor does how well the frames line up."""
    from synctalk.evaluate import score_series

    n = 400
    speech = np.ones(n, bool)
    speech[:100] = False
    real = np.where(speech, 0.05 + 0.04 * np.sin(np.arange(n) / 3.0), 0.0)
    muted = 0.05 + 0.5 * (real - 0.05)  # half the swing about the middle
    muted[:100] = 0.3  # whatever the pause holds
    pts = np.zeros((n, 2, 2))
    m, _ = score_series(real, np.roll(muted, 7), None, pts, pts, speech)
    assert m["peak_opening_ratio"] == pytest.approx(0.07 / 0.09, abs=0.03)
    assert m["closure_ratio"] == pytest.approx(0.03 / 0.01, rel=0.15)


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> SimpleNamespace:
    from helpers_render import synthetic_person

    return synthetic_person(tmp_path_factory)


def test_eval_peaks_at_lag_0_on_the_tail_and_on_another_recording(syn):
    """The clip whose mouth is known, scored by `evaluate` with an oracle UNet: lag 0 on its held-out
    tail and on a second recording (the infer path), -1 for an oracle one frame late; the resting
    mouth in pauses is as closed and as still as the real one."""
    from helpers_render import BrightnessMeter, oracle_generator

    from synctalk.evaluate import evaluate

    meter = BrightnessMeter()
    for ref in (None, syn.reference):
        res = evaluate(syn.name, dataset_dir=syn.dataset_dir, generator=oracle_generator(syn.layout), meter=meter,
                       val_fraction=0.5, reference_video=ref, progress=False)
        m = res.metrics
        assert m["lag_peak"] == 0 and abs(m["lag_peak_subframe"]) < 0.25, res.lag_profile
        assert m["sync_corr"] > 0.9 and m["sync_corr_shifted"] < 0.3
        assert res.lag_profile[0] > res.lag_profile[1] and res.lag_profile[0] > res.lag_profile[-1]
        assert m["silence_frames"] > 20 and m["silence_opening_gap"] < 0.1 and m["silence_jitter_ratio"] <= 1
        if ref is None:
            assert res.info["mode"] == "held_out" and m["psnr_mouth"] > 20
            assert res.frames[0] == syn.frames // 2
        else:
            assert res.info["mode"] == "reference" and m["psnr_mouth"] is None and m["ssim_mouth"] is None
            assert len(res.frames) == 100 and res.info["reference_av_offset"]["frames"] == 0
    late = evaluate(syn.name, dataset_dir=syn.dataset_dir, generator=oracle_generator(syn.layout, 36), meter=meter,
                    val_fraction=0.5, progress=False)
    assert late.metrics["lag_peak"] == -1


def test_held_out_references_from_the_training_part_hide_the_mouth_being_scored(syn):
    """A UNet that only copies its reference image: with each frame's own crop as reference (a render of
    the person's own video) it scores perfectly; with training frames as references it cannot."""
    import torch

    from helpers_render import BrightnessMeter

    from synctalk.data import DEFAULT_MASK
    from synctalk.errors import SyncTalkError
    from synctalk.evaluate import evaluate
    from synctalk.evaluate.scoring import training_references
    from synctalk.render import Generator

    class CopyReference(torch.nn.Module):
        def forward(self, img6: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
            return img6[:, :3].clone()

    ckpt = {"asr": "mel", "config": {"asr": "mel", "mask": list(DEFAULT_MASK)}}
    copy = Generator(CopyReference(), ckpt, torch.device("cpu"))
    kw = dict(dataset_dir=syn.dataset_dir, generator=copy, meter=BrightnessMeter(), val_fraction=0.5, progress=False,
              silence=False)
    own = evaluate(syn.name, held_out_reference="own", **kw)
    train = evaluate(syn.name, held_out_reference="train", **kw)
    assert own.metrics["sync_corr"] > 0.99 and own.metrics["psnr_mouth"] > 40
    assert train.info["held_out"]["reference"] == "train"
    assert train.metrics["sync_corr"] < 0.5 and train.metrics["psnr_mouth"] < own.metrics["psnr_mouth"] - 10
    assert training_references(np.arange(6, 10)).tolist() == [2, 3, 4, 5]  # the frames just before the tail
    assert training_references(np.arange(3, 10)).tolist() == [0, 1, 2, 0, 1, 2, 0]  # repeated when too few
    with pytest.raises(SyncTalkError, match="held_out_reference"):
        evaluate(syn.name, held_out_reference="other", **kw)


def test_eval_command_cross_sentence_on_a_real_recording(person, tmp_path, capsys):
    """--reference_video: the speech of a (here: 2 s of the person's own) recording rendered as infer
    renders it and scored against its real mouth with real landmarks."""
    import subprocess

    from synctalk import media
    from synctalk.cli import main

    from conftest import MODELS, VIDEOS

    ref = tmp_path / "ref.mp4"
    subprocess.run([media.ffmpeg_exe(), "-loglevel", "error", "-y", "-ss", "1", "-i", str(VIDEOS / "clip2.mp4"),
                    "-t", "2", "-c:v", "libx264", "-c:a", "aac", str(ref)], check=True)
    out = tmp_path / "cross.json"
    rc = main(["eval", "--name", NAME, "--dataset_dir", str(person.dataset_dir), "--checkpoint_dir",
               str(person.checkpoint_dir), "--device", "cpu", "--models_dir", str(MODELS), "--json", str(out),
               "--reference_video", str(ref), "--no_progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "speech of" in printed and "lag profile" in printed
    data = json.loads(out.read_text())
    assert data["mode"] == "reference" and data["reference"]["frames"] == 50
    assert data["metrics"]["psnr_mouth"] is None and data["landmarker"] == "dlib"
    assert len(data["series"]["aperture_generated"]) == 50


def test_mouth_strip_puts_real_over_generated_mouths(tmp_path) -> None:
    """The README's picture: one tile per frame, the reference's mouth on top of the rendered one."""
    import cv2

    from synctalk.evaluate.figure import TILE, mouth_strip

    from conftest import VIDEOS

    clip = VIDEOS / "clip3.mp4"
    out = mouth_strip(clip, clip, [0, 20, 40], tmp_path / "mouths.png")
    img = cv2.imread(str(out))
    assert img.shape == (24 + 2 * TILE[1], 3 * TILE[0], 3)
    # the same video twice: the two rows agree (the same mouth found the same way)
    top, bottom = img[24:24 + TILE[1]].astype(int), img[24 + TILE[1]:].astype(int)
    assert np.abs(top - bottom).mean() < 6.0  # two tracks of one video: within a pixel or two of each other
    # two renders (two checkpoints): a row each under the real one
    assert cv2.imread(str(mouth_strip([clip, clip], clip, [0, 20], tmp_path / "m3.png"))).shape == \
        (24 + 3 * TILE[1], 2 * TILE[0], 3)
