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
    full = {**os.environ, "PYTHON": sys.executable, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=600)


def pipeline_env(work: Path) -> dict[str, str]:
    return {
        "SYNCTALK_ASR": "mel", "SYNCTALK_LANDMARKER": "dlib", "SYNCTALK_PERCEPTUAL": "none",
        "SYNCTALK_WIDTH": "tiny", "SYNCTALK_EPOCHS": "1", "SYNCTALK_SYNCNET_EPOCHS": "1",
        "SYNCTALK_BATCHSIZE": "4", "SYNCTALK_MODELS": str(MODELS),
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


def _recorded_calls(tmp_path: Path, gpu: str, **env: str) -> list[list[str]]:
    """Run the script with PYTHON pointing at a stub that records its arguments; one list per call."""
    (tmp_path / "dataset" / "rec").mkdir(parents=True, exist_ok=True)
    (tmp_path / "dataset" / "rec" / "rec.mp4").write_bytes(b"")
    log = tmp_path / "calls.txt"
    log.unlink(missing_ok=True)
    stub = tmp_path / "python_stub.sh"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" "--END--" >> "{log}"\n')
    stub.chmod(0o755)
    r = run_script(tmp_path, "rec", gpu, **{"PYTHON": str(stub), **env})
    assert r.returncode == 0, r.stderr
    calls, cur = [], []
    for line in log.read_text().splitlines():
        if line == "--END--":
            calls.append(cur)
            cur = []
        else:
            cur.append(line)
    return calls


@needs_bash
def test_script_defaults_need_no_download_and_leave_sizes_to_the_training_commands(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    for var in [k for k in os.environ if k.startswith("SYNCTALK_")]:
        monkeypatch.delenv(var)
    pre, syncnet, unet = _recorded_calls(tmp_path, "0")
    assert pre[pre.index("--asr_model") + 1] == "mel" and pre[pre.index("--landmarker") + 1] == "dlib"
    assert pre[pre.index("--detector") + 1] == "auto" and "--models_dir" not in pre
    assert "--train_syncnet" in syncnet and "--train_syncnet" not in unet
    for call in (syncnet, unet):
        # unset: the Python defaults (chosen for the device) apply, and `--perceptual auto` there
        assert not {"--epochs", "--batchsize", "--perceptual", "--quick", "--models_dir"} & set(call)
        assert call[call.index("--device") + 1] == "cuda"
    # set: passed through; SYNCTALK_QUICK=1 asks both training steps for their quick preset
    pre, syncnet, unet = _recorded_calls(tmp_path, "cpu", SYNCTALK_QUICK="1", SYNCTALK_EPOCHS="3",
                                         SYNCTALK_SYNCNET_EPOCHS="2", SYNCTALK_BATCHSIZE="4",
                                         SYNCTALK_SYNCNET_BATCHSIZE="6", SYNCTALK_PERCEPTUAL="none",
                                         SYNCTALK_ASR="ave", SYNCTALK_DETECTOR="scrfd")
    assert pre[pre.index("--asr_model") + 1] == "ave" and pre[pre.index("--detector") + 1] == "scrfd"
    assert "--quick" in syncnet and "--quick" in unet
    assert syncnet[syncnet.index("--epochs") + 1] == "2" and syncnet[syncnet.index("--batchsize") + 1] == "6"
    assert unet[unet.index("--epochs") + 1] == "3" and unet[unet.index("--batchsize") + 1] == "4"
    assert unet[unet.index("--perceptual") + 1] == "none" and "--perceptual" not in syncnet
    assert unet[unet.index("--device") + 1] == "cpu"
    _pre, syncnet, unet = _recorded_calls(tmp_path, "0,1")
    assert syncnet[syncnet.index("--gpus") + 1] == "2" and unet[unet.index("--gpus") + 1] == "2"


@needs_bash
def test_old_models_variable_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "dataset" / "x").mkdir(parents=True)
    (tmp_path / "dataset" / "x" / "x.mp4").write_bytes(b"")
    r = run_script(tmp_path, "x", "cpu", SYNCTALK_MODELS_DIR="/somewhere")
    assert r.returncode == 2 and "SYNCTALK_MODELS=/somewhere" in r.stderr


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
    from synctalk.training.unet import syncnet_gate

    if syncnet_gate(state["syncnet_training"]["best_metrics"])[0]:
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
