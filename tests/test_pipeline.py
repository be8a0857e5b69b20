"""training_328.sh end to end on a 2-second fixture clip with offline choices; a rerun trains nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODELS, REPO, VIDEOS

SCRIPT = REPO / "training_328.sh"
needs_preprocess = pytest.mark.skipif(not (REPO / "scripts" / "preprocess_data.py").exists(),
                                      reason="scripts/preprocess_data.py is not there yet")
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")


def run_script(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    # one thread: the tiny CPU runs gain little from a second one and lose much when cores are shared
    full = dict(os.environ, PYTHON=sys.executable, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **env)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=600)


def pipeline_env(work: Path) -> dict[str, str]:
    return {
        "SYNCTALK_ASR": "mel", "SYNCTALK_LANDMARKER": "dlib", "SYNCTALK_PERCEPTUAL": "none",
        "SYNCTALK_WIDTH": "tiny", "SYNCTALK_EPOCHS": "1", "SYNCTALK_SYNCNET_EPOCHS": "1",
        "SYNCTALK_BATCHSIZE": "4", "SYNCTALK_MODELS_DIR": str(MODELS),
        "SYNCTALK_DATASET_DIR": str(work / "dataset"), "SYNCTALK_CHECKPOINT_DIR": str(work / "checkpoint"),
        "SYNCTALK_EXTRA_TRAIN_ARGS": "--no_progress --syncnet_pairs_per_epoch 0",
    }


@needs_bash
def test_usage_errors(tmp_path: Path) -> None:
    r = run_script(tmp_path)
    assert r.returncode != 0 and "usage" in r.stderr
    r = run_script(tmp_path, "nobody")
    assert r.returncode != 0 and "usage" in r.stderr
    r = run_script(tmp_path, "nobody", "0")
    assert r.returncode != 0 and "video not found" in r.stderr
    r = run_script(tmp_path, "../evil", "0")
    assert r.returncode != 0 and "invalid name" in r.stderr
    r = run_script(tmp_path, "someone", "gpu0")
    assert r.returncode != 0 and "GPU_ID" in r.stderr


@needs_bash
@needs_preprocess
def test_training_328_end_to_end_then_rerun_does_nothing(tmp_path: Path) -> None:
    from synctalk import media

    name = "zed"
    video = tmp_path / "dataset" / name / f"{name}.mp4"
    video.parent.mkdir(parents=True)
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", "-i", str(VIDEOS / "clip2.mp4"), "-t", "2",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(video)], check=True)
    env = pipeline_env(tmp_path)
    r = run_script(tmp_path, name, "cpu", **env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    state_file = tmp_path / "dataset" / name / ".training_state.json"
    state = json.loads(state_file.read_text())
    assert state["preprocessing"]["completed"] is True
    assert state["syncnet_training"]["completed"] is True and state["syncnet_training"]["epochs"] == 1
    assert state["main_training"]["completed"] is True and state["main_training"]["epochs"] == 1
    # the UNet step uses the person's SyncNet only when its held-out offset accuracy clears the bar
    # (tests/test_training.py pins both cases); either way the run says which it did
    out = r.stdout + r.stderr
    from synctalk.training.unet import MIN_SYNCNET_OFFSET_ACC

    if state["syncnet_training"]["best_metrics"]["offset_acc"] >= MIN_SYNCNET_OFFSET_ACC:
        assert state["main_training"]["syncnet_checkpoint"] and "L1 + sync" in out
    else:
        assert state["main_training"]["syncnet_checkpoint"] is None and "without the sync loss" in out
    ckpt_dir = tmp_path / "checkpoint"
    for p in (ckpt_dir / f"syncnet_{name}" / "checkpoint_best.pth", ckpt_dir / name / "checkpoint_latest.pth",
              ckpt_dir / name / "1.pth"):
        assert p.is_file(), p

    mtimes = {p: p.stat().st_mtime_ns for p in ckpt_dir.rglob("*.pth")}
    stamps = {k: state[k]["updated_at"] for k in ("syncnet_training", "main_training")}
    r = run_script(tmp_path, name, "cpu", **env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in ckpt_dir.rglob("*.pth")} == mtimes
    state2 = json.loads(state_file.read_text())
    assert {k: state2[k]["updated_at"] for k in ("syncnet_training", "main_training")} == stamps
    assert state2["main_training"]["epochs"] == 1 and state2["syncnet_training"]["epochs"] == 1
