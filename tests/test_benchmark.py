"""The speed benchmark (benchmarks/speed.py) at its small size on the CPU: every stage runs and reports numbers."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from conftest import MODELS, REPO, SPEECH_WAV, VIDEOS


def _main(argv: list[str]) -> int:
    """benchmarks.speed.main with one torch thread (restored after): the stages' speed is not under test."""
    import torch

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from benchmarks.speed import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("bench")
    out = work / "speed.json"
    rc = _main(["--size", "small", "--device", "cpu", "--video", str(VIDEOS / "clip5.mp4"), "--audio", str(SPEECH_WAV),
                "--models_dir", str(MODELS), "--landmarker", "dlib", "--asr", "mel", "--workdir", str(work / "w"),
                "--profile", "5", "--json", str(out), "--no_progress", "--quiet"])
    assert rc == 0
    return work, json.loads(out.read_text())


def test_small_benchmark_reports_every_stage(small_run: tuple[Path, dict]) -> None:
    from benchmarks.speed import DEFAULT_STAGES, PRIMARY

    work, report = small_run
    assert report["machine"]["device"] == "cpu"
    assert report["person"]["frames"] == 50  # clip5 cut to its first 2 s at 25 fps
    assert set(report["stages"]) == set(DEFAULT_STAGES)
    for stage, rec in report["stages"].items():
        assert rec["status"] == "ok", (stage, rec.get("reason"))
        key, _unit = PRIMARY[stage]
        assert rec["results"], stage
        for variant, metrics in rec["results"].items():
            value = metrics[key]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (stage, variant, value)

    unet = report["stages"]["unet"]["results"]
    assert set(unet) == {"plain", "fast"}
    assert unet["plain"]["batch"] == 2 and unet["fast"]["batch"] == 4
    assert unet["fast"]["channels_last"] and unet["fast"]["cache_on_device"]
    profile = unet["fast"]["profile"]  # --profile 5: the operators with the most time in a few fast steps
    assert len(profile) == 5 and all(0 < r["share"] <= 1 and r["ms"] > 0 for r in profile)
    assert any("conv" in r["op"] for r in profile) and "profile" not in unet["plain"]
    for v in unet.values():  # the same number of training samples, then the held-out L1
        assert v["quality_samples"] == 4
        assert 0 < v["val_l1"] < 1 and 0 < v["val_l1_init"] < 1
    assert set(report["stages"]["syncnet"]["results"]) == {"plain", "fast"}
    assert set(report["stages"]["forward"]["results"]) == {"plain b1", "plain b4", "render b1", "render b4"}
    assert set(report["stages"]["landmarks"]["results"]) == {"scrfd+pfld", "scrfd+pfld, detect every frame",
                                                              "scrfd+dlib"}
    assert report["stages"]["landmarks"]["results"]["scrfd+pfld"]["weights"] == "random"  # no PFLD checkpoint here
    render = report["stages"]["render"]["results"]["end_to_end"]
    assert render["frames"] == 25 and render["output_mib"] > 0
    assert (work / "w" / "render" / "render_1s.mp4").is_file()
    assert any("randomly initialised" in n for n in report["stages"]["unet"]["notes"])  # no VGG19 weights here


def test_gpus_stage_runs_two_gloo_processes_on_the_cpu(small_run: tuple[Path, dict], tmp_path: Path) -> None:
    work, report = small_run
    person = work / "w" / "dataset" / report["person"]["name"]
    out = tmp_path / "gpus.json"
    rc = _main(["--size", "small", "--device", "cpu", "--dataset", str(person), "--only", "gpus", "--gpus", "2",
                "--threads", "1", "--workdir", str(tmp_path / "w"), "--json", str(out), "--no_progress", "--quiet"])
    assert rc == 0
    rec = json.loads(out.read_text())["stages"]["gpus"]
    assert rec["status"] == "ok", rec.get("reason")
    one, two = rec["results"]["1 process"], rec["results"]["2 processes"]
    assert one["processes"] == 1 and two["processes"] == 2 and two["backend"] == "gloo"
    assert two["global_batch"] == 2 * one["global_batch"] == 2 * 4
    for r in (one, two):
        assert math.isfinite(r["samples_per_s"]) and r["samples_per_s"] > 0
    assert two["scaling"] == round(two["samples_per_s"] / one["samples_per_s"], 3)
    # one process asked for: skipped with the reason
    rc = _main(["--size", "small", "--device", "cpu", "--dataset", str(person), "--only", "gpus", "--gpus", "1",
                "--workdir", str(tmp_path / "w"), "--json", str(out), "--no_progress", "--quiet"])
    skipped = json.loads(out.read_text())["stages"]["gpus"]
    assert rc == 0 and skipped["status"] == "skipped" and "--gpus" in skipped["reason"]


def test_missing_pieces_are_skipped_with_a_reason(small_run: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    import benchmarks.common as common
    import synctalk.faces.landmarks as landmarks
    from synctalk.errors import SyncTalkError

    work, report = small_run
    real_create = landmarks.create_landmarker

    def no_dlib(kind: str, *a, **kw):
        if kind == "dlib":
            raise SyncTalkError("the dlib landmarker needs dlib: pip install dlib-bin face_recognition_models")
        return real_create(kind, *a, **kw)

    monkeypatch.setattr(common, "ffmpeg_path", lambda: None)  # a machine without ffmpeg
    monkeypatch.setattr(landmarks, "create_landmarker", no_dlib)  # … and without dlib
    dataset = work / "w" / "dataset" / report["person"]["name"]
    out = tmp_path / "skip.json"
    rc = _main(["--size", "small", "--device", "cpu", "--dataset", str(dataset), "--only", "render,landmarks",
                "--models_dir", str(MODELS), "--workdir", str(tmp_path / "w"), "--json", str(out), "--no_progress",
                "--quiet"])
    assert rc == 0
    stages = json.loads(out.read_text())["stages"]
    assert set(stages) == {"render", "landmarks"}
    assert stages["render"]["status"] == "skipped" and "ffmpeg" in stages["render"]["reason"]
    lm = stages["landmarks"]
    assert lm["status"] == "ok" and set(lm["results"]) == {"scrfd+pfld", "scrfd+pfld, detect every frame"}
    assert any("dlib skipped" in n for n in lm["notes"])
