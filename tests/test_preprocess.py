"""Preprocessing on real fixture clips: frames, landmarks, crop boxes, audio, state, resume, batch, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import MODELS, REPO, VIDEOS
from synctalk import media
from synctalk.batch import items_from_json, items_from_list, run_batch
from synctalk.errors import SyncTalkError
from synctalk.preprocess import PreprocessOptions, load_all_landmarks, preprocess_video
from synctalk.state import TrainingState


def _opts(tmp: Path, video: Path, name: str, **kw) -> PreprocessOptions:
    base = dict(video_path=video, name=name, dataset_dir=tmp / "dataset", asr_model="mel", landmarker="dlib",
                models_dir=MODELS, device="cpu", progress=False)
    base.update(kw)
    return PreprocessOptions(**base)


@pytest.fixture(scope="module")
def clip2(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pre")
    result = preprocess_video(_opts(tmp, VIDEOS / "clip2.mp4", "clip2"))
    return tmp, result


def test_frames_landmarks_audio_and_state(clip2):
    tmp, result = clip2
    layout = result.layout
    info = media.probe(VIDEOS / "clip2.mp4")
    frames = sorted(layout.frames_dir.glob("*.jpg"))
    assert abs(len(frames) - info.duration * 25) <= 1
    assert frames[0].name == "000000.jpg"
    lms_files = sorted(layout.landmarks_dir.glob("*.lms"))
    assert len(lms_files) == len(frames)
    lms = load_all_landmarks(layout, len(frames))
    assert lms.shape == (len(frames), 68, 2)

    # landmarks lie on the face: the mouth sits in the crop box, in its lower part
    boxes = np.load(layout.crop_boxes)
    assert boxes.shape == (len(frames), 4)
    mouth = lms[:, 48:68]
    for b, m in zip(boxes, mouth):
        x1, y1, x2, y2 = b
        assert (m[:, 0] > x1).all() and (m[:, 0] < x2).all()
        assert (m[:, 1] > y1).all() and (m[:, 1] < y2).all()
    # boxes are stable between frames (a talking head barely moves in 40 ms)
    size = boxes[:, 2] - boxes[:, 0]
    assert np.abs(np.diff(boxes, axis=0)).max() < 0.1 * size.mean()

    data, sr = sf.read(layout.audio_wav, dtype="int16")
    assert sr == 16000 and data.ndim == 1
    assert abs(len(data) / sr - info.duration) < 0.1
    assert sf.info(layout.audio_wav).subtype == "PCM_16"

    feats = np.load(layout.features("mel"))
    assert feats.shape[0] == len(frames) and feats.dtype == np.float32
    cache = np.load(layout.crop_cache, mmap_mode="r")
    assert cache.shape == (len(frames), 328, 328, 3) and cache.dtype == np.uint8

    state = TrainingState(layout.state_file).load()
    pre = state["preprocessing"]
    assert pre["completed"] is True
    assert pre["frame_count"] == len(frames) == pre["landmark_count"]
    assert state["fps"] == 25 and state["landmarker"] == "dlib"
    assert pre["feature_files"] == {"mel": "aud_mel.npy"}
    assert not list(layout.root.rglob("*.tmp*"))


def test_rerun_skips_finished_parts(clip2):
    tmp, first = clip2
    before = TrainingState(first.layout.state_file).section("preprocessing")
    again = preprocess_video(_opts(tmp, VIDEOS / "clip2.mp4", "clip2"))
    assert again.done_now == []
    assert {"frames", "audio", "landmarks", "crop boxes", "features (mel)", "crop cache"} <= set(again.skipped)
    after = TrainingState(first.layout.state_file).section("preprocessing")
    assert after["frame_count"] == before["frame_count"]


def test_audio_made_again_makes_its_features_and_lip_check_again(clip2):
    """A deleted aud.wav is extracted again; the features and the A/V offset made from the old one
    are made again with it, not kept."""
    tmp, first = clip2
    layout = first.layout
    layout.audio_wav.unlink()
    again = preprocess_video(_opts(tmp, VIDEOS / "clip2.mp4", "clip2"))
    assert {"audio", "features (mel)"} <= set(again.done_now)
    sec = TrainingState(layout.state_file).section("preprocessing")
    assert sec["feature_files"] == {"mel": layout.features("mel").name} and "av_offset" in sec
    assert np.load(layout.features("mel")).shape[0] == sec["frame_count"]


def test_a_new_audio_track_checks_the_weights_of_its_features_before_writing_it(clip2):
    """With aud.wav gone, features of a model whose weights are missing are made again, so the
    missing-weights error comes before aud.wav is written, as on a first run."""
    tmp, first = clip2
    layout = first.layout
    state = TrainingState(layout.state_file)
    kept = dict(state.section("preprocessing")["feature_files"])
    state.update("preprocessing", feature_files={**kept, "ave": "aud_ave.npy"})
    layout.audio_wav.unlink()
    with pytest.raises(SyncTalkError, match="not found"):
        preprocess_video(_opts(tmp, VIDEOS / "clip2.mp4", "clip2", asr_model="ave", models_dir=tmp / "no_models"))
    assert not layout.audio_wav.exists()
    state.update("preprocessing", feature_files=kept)
    preprocess_video(_opts(tmp, VIDEOS / "clip2.mp4", "clip2"))
    assert layout.audio_wav.exists()


def test_status_table(clip2, capsys):
    from synctalk.cli import main

    tmp, _ = clip2
    assert main(["status", "clip2", "--dataset_dir", str(tmp / "dataset"), "--checkpoint_dir", str(tmp / "ck")]) == 0
    out = capsys.readouterr().out
    assert "landmarks" in out and "synctalk train-syncnet --name clip2" in out


def test_variable_fps_clip_is_converted(tmp_path):
    result = preprocess_video(_opts(tmp_path, VIDEOS / "clip1.mp4", "clip1", crop_cache=False))
    info = media.probe(VIDEOS / "clip1.mp4")
    assert info.variable_fps or abs(info.fps - 25) > 1
    assert result.layout.fps_converted_video.exists()
    converted = media.probe(result.layout.fps_converted_video)
    assert converted.fps == 25 and not converted.variable_fps
    n = len(list(result.layout.frames_dir.glob("*.jpg")))
    assert abs(n - info.duration * 25) <= 1
    state = TrainingState(result.layout.state_file).load()
    assert state["source_variable_fps"] or state["source_fps"] != 25


def test_kill_during_landmarks_then_rerun_finishes(tmp_path):
    ds = tmp_path / "dataset"
    cmd = [sys.executable, str(REPO / "scripts" / "preprocess_data.py"), "--video_path", str(VIDEOS / "clip3.mp4"),
           "--name", "k", "--dataset_dir", str(ds), "--asr_model", "mel", "--landmarker", "dlib",
           "--models_dir", str(MODELS), "--device", "cpu", "--batch_size", "4", "--no_crop_cache"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lms_dir = ds / "k" / "landmarks"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(lms_dir.glob("[0-9]*.lms"))) < 12:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # "[0-9]*": pathlib's "*" matches dot files too, such as the killed writer's temporary file
    partial = {p.name: p.stat().st_mtime_ns for p in lms_dir.glob("[0-9]*.lms")}
    assert partial, "landmarks never started"
    state = json.loads((ds / "k" / ".training_state.json").read_text())
    assert not state["preprocessing"].get("landmarks_done")
    # every file that exists is whole: each .lms has 68 lines of two numbers
    for p in lms_dir.glob("[0-9]*.lms"):
        assert np.loadtxt(p).shape == (68, 2)

    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    n = len(list((ds / "k" / "full_body_img").glob("*.jpg")))
    assert len(list(lms_dir.glob("*.lms"))) == n
    for name, mtime in partial.items():  # finished frames were not redone
        assert (lms_dir / name).stat().st_mtime_ns == mtime
    assert json.loads((ds / "k" / ".training_state.json").read_text())["preprocessing"]["completed"]
    assert not list((ds / "k").rglob("*.tmp*"))


def test_batch_from_folder_list_and_json(tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    os.symlink(VIDEOS / "clip5.mp4", vids / "five.mp4")
    (vids / "broken.mp4").write_text("not a video")
    base = _opts(tmp_path, Path("."), "_", crop_cache=False)

    from synctalk.batch import items_from_dir

    outcomes = run_batch(items_from_dir(vids), base, workers=1)
    by_name = {o.name: o for o in outcomes}
    assert by_name["five"].status == "done" and by_name["broken"].status == "failed"
    assert by_name["five"].lips == "ok" and by_name["broken"].lips == ""  # clip5's lips move with its speech
    assert "not a media file" in by_name["broken"].detail

    lst = tmp_path / "list.txt"
    lst.write_text(f"# persons\n{vids / 'five.mp4'} fiveagain\nvideos/five.mp4\n")
    items = items_from_list(lst)
    assert [i.name for i in items] == ["fiveagain", "five"]
    outcomes = run_batch(items, base, workers=1)
    assert [o.status for o in outcomes] == ["done", "skipped"]
    assert [o.lips for o in outcomes] == ["ok", "ok"]  # read back from the state of the skipped one

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"videos": [{"path": "videos/five.mp4", "name": "five"},
                                          {"path": "videos/missing.mp4", "name": "ghost", "asr_model": "mel"}]}))
    outcomes = run_batch(items_from_json(cfg), base, workers=1)
    assert [o.status for o in outcomes] == ["skipped", "failed"]
    assert "not found" in outcomes[1].detail

    # the command exits non-zero when one video failed
    from synctalk.cli import main

    code = main(["batch-preprocess", "--json_config", str(cfg), "--dataset_dir", str(tmp_path / "dataset"),
                 "--asr_model", "mel", "--landmarker", "dlib", "--models_dir", str(MODELS), "--device", "cpu"])
    assert code == 1


def _no_audio_video(tmp: Path) -> Path:
    out = tmp / "silent.mp4"
    subprocess.run([media.ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(VIDEOS / "clip5.mp4"), "-t", "1",
                    "-an", "-c:v", "libx264", str(out)], check=True)
    return out


@pytest.mark.parametrize("case", ["missing", "not_video", "no_audio", "bad_name", "dotdot", "backslash",
                                  "asr", "landmarker", "pfld_weights"])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, case):
    video = VIDEOS / "clip5.mp4"
    kw: dict = {}
    name = "p"
    expect = ""
    if case == "missing":
        video, expect = tmp_path / "nope.mp4", "not found"
    elif case == "not_video":
        video = tmp_path / "notes.mp4"
        video.write_text("hello")
        expect = "not a media file"
    elif case == "no_audio":
        video, expect = _no_audio_video(tmp_path), "no audio track"
    elif case == "bad_name":
        name, expect = "a/b", "invalid name"
    elif case == "dotdot":
        name, expect = "..", "invalid name"
    elif case == "backslash":
        name, expect = "a\\b", "invalid name"
    elif case == "asr":
        kw, expect = {"asr_model": "no-such-model"}, "unknown audio model"
    elif case == "landmarker":
        kw, expect = {"landmarker": "mediapipe"}, "unknown landmarker"
    elif case == "pfld_weights":
        empty = tmp_path / "empty_models"
        empty.mkdir()
        (empty / "scrfd_2.5g_kps.onnx").symlink_to(MODELS / "scrfd_2.5g_kps.onnx")
        kw, expect = {"landmarker": "pfld", "models_dir": empty}, "pfld"
    with pytest.raises(SyncTalkError) as err:
        preprocess_video(_opts(tmp_path, video, name, **kw))
    assert expect in str(err.value)
    if case == "pfld_weights":
        assert "--landmarker dlib" in str(err.value) and "synctalk models download" in str(err.value)
    ds = tmp_path / "dataset"
    leftovers = [p for p in ds.rglob("*") if p.is_file()] if ds.exists() else []
    assert not [p for p in leftovers if p.suffix in (".jpg", ".lms", ".npy", ".wav")]


def test_cli_rejects_unknown_choice_with_usage(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "preprocess_data.py"), "--video_path",
                           str(VIDEOS / "clip5.mp4"), "--name", "x", "--asr_model", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "invalid choice" in proc.stderr


def test_landmark_count_is_reported_when_faces_are_missing(tmp_path):
    """A clip whose second half is black: frames without a face reuse landmarks and are counted;
    a clip that is mostly without a face is an error naming the file and the count."""
    half = tmp_path / "half.mp4"
    subprocess.run([media.ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(VIDEOS / "clip5.mp4"), "-t", "2",
                    "-vf", "drawbox=enable='gte(t,1.4)':x=0:y=0:w=iw:h=ih:color=black:t=fill",
                    "-c:v", "libx264", "-c:a", "aac", str(half)], check=True)
    res = preprocess_video(_opts(tmp_path, half, "half", crop_cache=False))
    assert 0 < res.no_face_frames < res.frame_count / 2
    lms = load_all_landmarks(res.layout, res.frame_count)
    assert np.allclose(lms[-1], lms[-2])

    mostly = tmp_path / "mostly.mp4"
    subprocess.run([media.ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(VIDEOS / "clip5.mp4"), "-t", "2",
                    "-vf", "drawbox=enable='gte(t,0.5)':x=0:y=0:w=iw:h=ih:color=black:t=fill",
                    "-c:v", "libx264", "-c:a", "aac", str(mostly)], check=True)
    with pytest.raises(SyncTalkError) as err:
        preprocess_video(_opts(tmp_path, mostly, "mostly", crop_cache=False))
    assert "mostly.mp4" in str(err.value) and "no face" in str(err.value)
