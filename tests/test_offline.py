"""The whole job on a fresh machine with no network and no model file placed by hand.

`bash training_328.sh NAME cpu`, then `synctalk infer` and `synctalk eval`, on 1.2 seconds of a real
clip, with HOME an empty folder, no SYNCTALK_MODELS and every proxy pointing at a closed port (a
download attempt fails at once instead of reaching the network).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHARED, SPEECH_WAV

SCRIPT = REPO / "training_328.sh"
CLIP = SHARED / "fixtures" / "real" / "hdtf_aoc_8s.mp4"

# The preset a new user is told to try first: a tiny SyncNet and a tiny UNet, L1 only.
SMALLEST_SETTINGS = {"SYNCTALK_QUICK": "1", "SYNCTALK_EXTRA_TRAIN_ARGS": "--no_progress"}
_CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens


def fresh_machine_env(home: Path) -> dict[str, str]:
    """os.environ as on a fresh machine: an empty HOME, no models folder, no cache, no network."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SYNCTALK_", "XDG_", "HF_", "TORCH_", "TRANSFORMERS_"))
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update(HOME=str(home), PYTHON=sys.executable, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2",
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
               HF_HUB_OFFLINE="1", http_proxy=_CLOSED, https_proxy=_CLOSED, HTTP_PROXY=_CLOSED,
               HTTPS_PROXY=_CLOSED)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{cmd[:4]} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_whole_job_offline_with_nothing_but_the_install(tmp_path: Path) -> None:
    from synctalk import media

    home = tmp_path / "home"
    home.mkdir()
    name = "aoc"
    video = tmp_path / "dataset" / name / f"{name}.mp4"
    video.parent.mkdir(parents=True)
    # 2.4 s = 60 frames (videos under 2 s are refused): on a CPU the UNet's time grows with the frame count
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", "-i", str(CLIP), "-t", "2.4", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", str(video)], check=True)
    speech = tmp_path / "speech.wav"
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", "-i", str(SPEECH_WAV), "-t", "1", str(speech)],
                   check=True)
    env = fresh_machine_env(home)

    r = _run(["bash", str(SCRIPT), name, "cpu"], tmp_path, {**env, **SMALLEST_SETTINGS})
    out = r.stdout + r.stderr
    # the run says once, at its start, which models it uses and why
    assert out.count("face detector: dlib HOG (scrfd_2.5g_kps.onnx not found in") == 1
    assert "synctalk models download scrfd" in out and "landmarks: dlib 68 points" in out
    assert "audio features: mel" in out
    state = json.loads((tmp_path / "dataset" / name / ".training_state.json").read_text())
    assert state["preprocessing"]["completed"] and state["preprocessing"]["landmarker"] == "dlib"
    assert state["preprocessing"]["detector"] == "dlib"
    assert state["syncnet_training"]["completed"] and state["main_training"]["completed"]
    # the quick preset's tiny networks (no width the script types over them)
    assert state["syncnet_training"]["width"] == "tiny" and state["main_training"]["width"] == "tiny"

    cli = [sys.executable, "-m", "synctalk.cli"]
    _run([*cli, "infer", "--name", name, "--audio_path", str(speech), "--output", "out.mp4"], tmp_path, env)
    info = media.probe(tmp_path / "out.mp4")
    assert info.has_video and info.has_audio and abs(info.duration - 1.0) < 0.2

    r = _run([*cli, "eval", "--name", name, "--json", "eval.json", "--no_progress"], tmp_path, env)
    assert "face detector: dlib HOG" in r.stdout
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert len(scores["frames"]) >= 5 and scores["metrics"]["psnr_mouth"] > 0

    # nothing was fetched or cached on the way
    assert not (home / ".cache" / "synctalk").exists()
