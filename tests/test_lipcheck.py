"""Whether a person's video holds lip sync to learn: lip opening against the loudness of the speech."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from conftest import MODELS, VIDEOS
from synctalk import lipcheck, media
from synctalk.preprocess import PreprocessOptions, preprocess_video
from synctalk.state import TrainingState


def test_lip_activity_numbers_on_made_up_signals() -> None:
    t = np.arange(200, dtype=np.float64)
    loud = np.sin(t / 3.0)
    talking = 0.10 + 0.05 * np.sin((t - 2) / 3.0)  # follows the sound two frames late
    r = lipcheck.lip_activity(talking, loud)
    assert r["ok"] and r["problems"] == []
    assert r["audio_corr"] > 0.95 and r["audio_lag_frames"] == 2 and 0.3 < r["aperture_cv"] < 0.4
    still = 0.10 + 0.002 * np.sin((t - 2) / 3.0)  # follows it, but barely moves
    r = lipcheck.lip_activity(still, loud)
    assert not r["ok"] and len(r["problems"]) == 1 and "hardly move" in r["problems"][0]
    t = np.arange(2000, dtype=np.float64)  # long enough that chance correlations stay near 0
    unrelated = 0.10 + 0.05 * np.random.default_rng(0).standard_normal(2000)
    r = lipcheck.lip_activity(unrelated, np.sin(t / 3.0))
    assert not r["ok"] and "does not follow" in r["problems"][-1]
    assert lipcheck.warning_text("p", {"ok": True}) == ""
    assert "SyncNet" in lipcheck.warning_text("p", r)
    short = lipcheck.lip_activity(still[:50], loud[:50])  # 2 s: numbers, no verdict, no warning
    assert short["ok"] is None and short["problems"] == [] and "too few" in short["note"]
    assert short["aperture_cv"] < 0.2 and lipcheck.warning_text("p", short) == ""


def test_frame_loudness_follows_a_tone_burst() -> None:
    sr, fps = 16000, 25
    audio = np.zeros(sr * 2, np.float32)
    audio[sr // 2:sr] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(sr // 2) / sr)  # 0.5-1.0 s
    loud = lipcheck.frame_loudness(audio, 50, fps, sr)
    assert loud.shape == (50,)
    assert (loud[13:25] > np.log(0.3)).all() and np.allclose(loud[:12], np.log(1e-4)) and np.allclose(loud[26:], np.log(1e-4))


def test_preprocessing_flags_a_video_whose_lips_do_not_follow_its_speech(tmp_path, capsys) -> None:
    """sun.mp4 speaks for 22 s with a smile that hardly changes: its lips do not follow the audio.
    clip3's lips do. The check runs at the end of preprocessing and lands in the state file."""
    results = {}
    for name in ("sun", "clip3"):
        src = tmp_path / f"{name}.mp4"
        subprocess.run([media.ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(VIDEOS / f"{name}.mp4"), "-t", "4",
                        "-c:v", "libx264", "-c:a", "aac", str(src)], check=True)
        opts = PreprocessOptions(video_path=src, name=name, dataset_dir=tmp_path / "dataset", asr_model="mel",
                                 landmarker="dlib", models_dir=MODELS, device="cpu", progress=False, crop_cache=False)
        res = preprocess_video(opts)
        results[name] = (res, capsys.readouterr().out)
    sun, sun_out = results["sun"]
    clip, clip_out = results["clip3"]
    assert not sun.lip_activity["ok"] and sun.lip_activity["aperture_cv"] < 0.15
    assert "warning" in sun_out and "sun.mp4" in sun_out and "hardly move" in sun_out
    assert clip.lip_activity["ok"] and clip.lip_activity["aperture_cv"] > 0.4 and clip.lip_activity["audio_corr"] > 0.2
    assert "warning" not in clip_out
    saved = TrainingState(sun.layout.state_file).section("preprocessing")["lip_activity"]
    assert saved == sun.lip_activity
    # the clip's own A/V offset, beside it (None where it cannot be measured)
    offset = TrainingState(clip.layout.state_file).section("preprocessing")["av_offset"]
    assert offset is None or (offset["source"] == "lips" and abs(offset["frames"]) <= lipcheck.MAX_OFFSET)
    assert "av_offset" in TrainingState(sun.layout.state_file).section("preprocessing")
    # a rerun reads it back instead of measuring again, and says nothing new
    again = preprocess_video(PreprocessOptions(video_path=tmp_path / "sun.mp4", name="sun",
                                               dataset_dir=tmp_path / "dataset", asr_model="mel", landmarker="dlib",
                                               models_dir=MODELS, device="cpu", progress=False, crop_cache=False))
    assert again.lip_activity == sun.lip_activity and "warning" not in capsys.readouterr().out
    # and `synctalk status` shows it
    from synctalk.status import status_rows

    rows, _ = status_rows(tmp_path / "dataset", tmp_path / "checkpoint", "sun")
    lip = [r for r in rows if r[0] == "lip activity"][0]
    assert "no sync to learn" in lip[1]
    rows, _ = status_rows(tmp_path / "dataset", tmp_path / "checkpoint", "clip3")
    av = [r for r in rows if r[0] == "A/V offset"][0]
    assert ("frames" in av[2] and "lips" in av[2]) if offset else "not measured" in av[2]


def test_av_offset_sign_range_and_subframe_on_made_up_signals() -> None:
    """+N = the lips move N frames after the sound; found up to ±8 frames, to a fraction of a frame,
    on the speech only (a long silence with a still mouth does not pull it)."""
    rng = np.random.default_rng(0)
    n = 1500
    loud = np.convolve(rng.standard_normal(n + 20), np.ones(4) / 4, mode="same")
    speech = np.ones(n, bool)
    speech[600:900] = False
    loud[600:900] = -3.0
    for lag in (6, -5, 3, 0):
        lips = np.roll(loud, lag)[:n] + 0.1 * rng.standard_normal(n)  # opening[t] = loudness[t - lag]
        off = lipcheck.estimate_av_offset(lips, loud[:n], speech)
        assert off["frames"] == lag and abs(off["subframe"] - lag) < 0.3 and off["corr"] > 0.8
    # a lag between frames: the opening follows the loudness 2.5 frames late
    half = 0.5 * (np.roll(loud, 2) + np.roll(loud, 3))[:n]
    off = lipcheck.estimate_av_offset(half, loud[:n], speech)
    assert off["frames"] in (2, 3) and 2.2 < off["subframe"] < 2.8
    assert lipcheck.estimate_av_offset(loud[:40], loud[:40]) is None  # too few frames to say


def test_a_drifting_offset_shows_in_the_segments() -> None:
    """Lips that slide from 1 to 5 frames behind the sound over 100 s: one offset cannot say it, the 30 s
    segments do, and status says the video drifts."""
    from synctalk.status import _av_offset_mark

    rng = np.random.default_rng(3)
    n = 2500
    loud = np.convolve(rng.standard_normal(n + 20), np.ones(4) / 4, mode="same")[:n]
    lag = np.linspace(1, 5, n)
    t = np.arange(n)
    lips = np.interp(t - lag, t, loud) + 0.1 * rng.standard_normal(n)
    segs = lipcheck.offset_segments(lips, loud)
    assert len(segs) == 3 and segs[0]["start"] == 0 and segs[-1]["end"] == n
    assert segs[0]["subframe"] < 2.5 and segs[-1]["subframe"] > 3.5
    assert lipcheck.offset_spread(segs) >= 2
    # one stretch misread far from both neighbours is no drift (grid_s1_5min's first 30 s: +6.8)
    misread = [{"subframe": x, "corr": 0.2} for x in (6.8, 0.08, -0.0, -0.43, -0.52, -0.27, 0.4, 0.28, -0.27, 0.41)]
    assert lipcheck.offset_spread(misread) == pytest.approx(0.93)
    assert lipcheck.offset_spread([{"subframe": x, "corr": 0.2} for x in (0.0, 3.0)]) == 3.0  # two: no neighbours to judge by
    assert lipcheck.offset_segments(lips[:1000], loud[:1000]) == []  # under a minute: one number only
    mark, detail = _av_offset_mark({"av_offset": {"frames": 3, "source": "lips", "corr": 0.5, "spread": 2.6}})
    assert "+3" in mark and "drifts by 2.6 frames" in detail


def test_check_signals_reports_the_offset_of_a_clip_whose_mouth_is_known(tmp_path_factory) -> None:
    """The synthetic clip (mouth brightness = loudness at each frame's instant), through the real
    frame/audio extraction: its A/V offset is 0, from the stored landmarks and aud.wav."""
    from helpers_render import synthetic_person

    syn = synthetic_person(tmp_path_factory)
    r = lipcheck.check_dataset(syn.layout, syn.frames, 25)
    assert r["av_offset"]["frames"] == 0 and r["av_offset"]["source"] == "lips" and r["av_offset"]["corr"] > 0.8
    assert abs(r["av_offset"]["subframe"]) < 0.3 and r["audio_lag_frames"] == 0


def test_a_drifting_av_offset_is_measured_as_a_line_through_windows() -> None:
    """Lips that follow a loudness envelope 1 frame late at the start and 4 frames late after three minutes."""
    from synctalk.lipcheck import estimate_av_drift, per_frame_offsets

    rng = np.random.default_rng(3)
    n = 4500
    loud = np.convolve(rng.standard_normal(n + 40), np.ones(5) / 5, mode="same")[20:20 + n]
    lag = 1.0 + 3.0 * np.arange(n) / n  # frames, growing with time
    t = np.arange(n) - lag
    apert = np.interp(t, np.arange(n), loud) + 0.05 * rng.standard_normal(n)
    drift = estimate_av_drift(apert, loud, None, fps=25)
    assert drift is not None
    assert abs(drift["start_frames"] - 1.0) < 0.5 and abs(drift["drift_per_minute"] - 1.0) < 0.25
    per = per_frame_offsets({"frames": 2, **drift}, n)
    assert per[0] == 1 and per[-1] == 4
    assert (per_frame_offsets({"frames": 2}, 5) == 2).all() and (per_frame_offsets(None, 3) == 0).all()
    # a steady offset is no drift
    steady = np.interp(np.arange(n) - 2.0, np.arange(n), loud) + 0.05 * rng.standard_normal(n)
    assert estimate_av_drift(steady, loud, None, fps=25) is None
