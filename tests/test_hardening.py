"""Hardening: no code from a weights file, one writer per person, no leftovers, bad input as messages.

Every bad-input case asserts the message (naming the file and the problem), the exit code and that no
traceback was printed; the concurrency and kill cases run real `synctalk` processes on a 2.2 s clip.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MODELS, REPO, VIDEOS
from synctalk import media
from synctalk.cli import main
from synctalk.errors import SyncTalkError
from synctalk.fileio import is_temp_name, remove_stale_temps, write_json_atomic
from synctalk.layout import dataset_layout
from synctalk.locking import hold_lock, read_lock
from synctalk.state import TrainingState

ENV = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synctalk.cli", *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def _pre_args(video: Path, name: str, dataset: Path, *extra: str) -> list[str]:
    return ["preprocess", "--video_path", str(video), "--name", name, "--dataset_dir", str(dataset),
            "--asr_model", "mel", "--landmarker", "dlib", "--models_dir", str(MODELS), "--device", "cpu",
            "--detect_workers", "1", *extra]


def _clip(path: Path, seconds: float) -> Path:
    subprocess.run([media.ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(VIDEOS / "clip5.mp4"), "-t", str(seconds),
                    "-c:v", "libx264", "-c:a", "aac", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    """A 2.2 s talking clip: long enough to be accepted, short enough to preprocess in seconds."""
    return _clip(tmp_path_factory.mktemp("clip") / "short.mp4", 2.2)


def _run_main(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    return code, text


def _no_temps(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if is_temp_name(p.name)]


# ---------------------------------------------------------------- code execution from a weights file


class _Payload:
    """Pickles as a call that would create a marker file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_malicious_pfld_checkpoint_is_refused_and_never_runs(tmp_path, short_clip):
    import pickle

    import torch

    from synctalk.faces.landmarks import load_pfld_state_dict
    from synctalk.weights import MANIFEST

    marker = tmp_path / "MARKER"
    models = tmp_path / "models"
    models.mkdir()
    for f in ("scrfd_2.5g_kps.onnx", "pfld_mean_face.txt"):
        (models / f).symlink_to(MODELS / f)
    ckpt = models / MANIFEST["pfld"].filename
    torch.save({"pfld_backbone": _Payload(marker), "epoch": 335}, ckpt)
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps({"pfld_backbone": _Payload(marker)}))

    for path in (ckpt, raw):  # torch's zip format and a bare pickle
        with pytest.raises(SyncTalkError) as err:
            load_pfld_state_dict(path)
        assert f"refused to load PFLD checkpoint {path}" in str(err.value) and "could run code" in str(err.value)
        assert not marker.exists()

    # the real command: the preprocessing that reads the models folder refuses the file
    proc = _cli("preprocess", "--video_path", str(short_clip), "--name", "evil", "--dataset_dir",
                str(tmp_path / "dataset"), "--asr_model", "mel", "--landmarker", "pfld", "--models_dir", str(models),
                "--device", "cpu")
    assert proc.returncode == 1, proc.stderr
    assert "refused to load PFLD checkpoint" in proc.stderr and "builtins.exec" in proc.stderr
    assert str(ckpt) in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_pfld_checkpoint_with_training_extras_still_loads(tmp_path):
    """Namespaces and numpy scalars beside the weights (what PFLD training scripts save) are allowed."""
    import argparse

    import numpy as np
    import torch
    from pfld.model import build_pfld

    from synctalk.faces.landmarks import load_pfld_state_dict

    sd = build_pfld().state_dict()
    path = tmp_path / "checkpoint_epoch_335.pth.tar"
    torch.save({"pfld_backbone": sd, "epoch": np.int64(335), "loss": np.float32(0.1),
                "args": argparse.Namespace(lr=1e-4), "nme": np.zeros(3)}, path)
    assert set(load_pfld_state_dict(path)) == set(sd)


# ---------------------------------------------------------------- locks


def test_two_concurrent_preprocess_runs_of_one_name(tmp_path, short_clip):
    ds = tmp_path / "dataset"
    cmd = [sys.executable, "-m", "synctalk.cli", *_pre_args(short_clip, "twin", ds, "--no_crop_cache")]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 1], results
    _, _out, err = next(r for r in results if r[0] == 1)
    assert "preprocessing of 'twin' is already running" in err and "held by pid" in err
    assert socket.gethostname() in err and "since" in err and "Traceback" not in err
    layout = dataset_layout(ds, "twin")
    sec = TrainingState(layout.state_file).section("preprocessing")
    assert sec["completed"]
    n = len(list(layout.frames_dir.glob("[0-9]*.jpg")))
    assert n == sec["frame_count"] == len(list(layout.landmarks_dir.glob("[0-9]*.lms")))
    assert not _no_temps(layout.root) and not layout.preprocess_lock.exists()


def test_batch_row_fails_cleanly_while_the_name_is_locked(tmp_path, short_clip):
    from synctalk.batch import BatchItem, run_batch
    from synctalk.preprocess import PreprocessOptions

    base = PreprocessOptions(video_path=Path("."), name="_", dataset_dir=tmp_path / "dataset", asr_model="mel",
                             landmarker="dlib", models_dir=MODELS, device="cpu", progress=False)
    layout = dataset_layout(tmp_path / "dataset", "busy")
    with hold_lock(layout.preprocess_lock, "preprocessing of 'busy'"):
        [row] = run_batch([BatchItem(short_clip, "busy")], base, workers=1)
    assert row.status == "failed" and "already running" in row.detail and f"pid {os.getpid()}" in row.detail
    assert "Traceback" not in row.detail
    assert not list(layout.root.glob("*.jpg")) and not layout.frames_dir.exists()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("flock", [True, False])
def test_lock_names_holder_and_stale_lock_is_taken_over(tmp_path, monkeypatch, capsys, flock):
    import synctalk.locking as locking

    monkeypatch.setattr(locking, "_HAVE_FLOCK", flock and locking._HAVE_FLOCK)
    lock = tmp_path / "run" / ".lock"
    with hold_lock(lock, "training") as me:
        assert read_lock(lock)["pid"] == os.getpid() == me["pid"]
        with pytest.raises(SyncTalkError) as err:
            with hold_lock(lock, "training"):
                pass
        assert f"training is already running: {lock} is held by pid {os.getpid()} on {socket.gethostname()}" \
            in str(err.value)
    assert not lock.exists()  # a holder that finishes leaves nothing behind
    write_json_atomic(lock, {"pid": _dead_pid(), "host": socket.gethostname(), "since": "2026-01-01T00:00:00",
                             "command": "synctalk train"})
    with hold_lock(lock, "training"):
        assert read_lock(lock)["pid"] == os.getpid()
    assert "taking over the lock" in capsys.readouterr().err and not lock.exists()


def test_kill_during_crop_cache_leaves_a_temp_the_next_run_removes(tmp_path, short_clip):
    """kill -9 while the crop cache is written (slowed down so the kill lands inside it) leaves the
    cache's temporary file and a dead holder's lock; the next run removes both and finishes."""
    ds = tmp_path / "dataset"
    first = _cli(*_pre_args(short_clip, "k", ds, "--no_crop_cache"))
    assert first.returncode == 0, first.stderr
    layout = dataset_layout(ds, "k")
    slow = ("import sys, time\n"
            "import synctalk.faces.crop as crop\n"
            "real = crop.crop_frame\n"
            "crop.crop_frame = lambda *a, **k: (time.sleep(0.2), real(*a, **k))[1]\n"
            "from synctalk.cli import main\n"
            f"sys.exit(main({_pre_args(short_clip, 'k', ds)!r}))\n")
    proc = subprocess.Popen([sys.executable, "-c", slow], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    temps: list[Path] = []
    while time.time() < deadline and not temps and proc.poll() is None:
        temps = list(layout.root.glob(".crops_328.npy.*.tmp.npy"))
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert temps and all(t.exists() for t in temps), "the crop cache build was not caught"
    assert not layout.crop_cache.exists() and layout.preprocess_lock.exists()
    assert not TrainingState(layout.state_file).section("preprocessing").get("crop_cache_done")

    done = _cli(*_pre_args(short_clip, "k", ds))
    assert done.returncode == 0, done.stderr
    assert "taking over the lock" in done.stderr and "removed 1 temporary file" in done.stdout
    assert not any(t.exists() for t in temps) and not _no_temps(layout.root)
    import numpy as np

    cache = np.load(layout.crop_cache, mmap_mode="r")
    assert cache.shape[0] == TrainingState(layout.state_file).section("preprocessing")["frame_count"]
    assert TrainingState(layout.state_file).section("preprocessing")["crop_cache_done"]
    assert not layout.preprocess_lock.exists()


# ---------------------------------------------------------------- temporary files


def test_stale_temp_sweep_matches_only_its_own_names(tmp_path):
    dead, live = _dead_pid(), os.getpid()
    own = [f".crops_328.npy.st{dead}-ab_cd123.tmp.npy", f".000001.jpg.st{dead}-x1y2z3w4.tmp.jpg",
           ".000074.jpg.jgsqwwz5.tmp"]  # the last: a leftover of the earlier naming (no pid)
    keep = [f".result.mp4.st{live}-abcdefgh.tmp.mp4",  # a live writer's file
            ".notes.tmp", "backup.tmp", ".config.tmp.json", "my.tmp.npy", ".x.abc.tmp"]
    for n in own + keep:
        (tmp_path / n).write_text("x")
    removed = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted(own)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_files_are_written_with_the_umask(tmp_path):
    import synctalk.fileio as fileio

    old = os.umask(0o027)
    fileio._file_mode.cache_clear()
    try:
        write_json_atomic(tmp_path / "a.json", {"a": 1})
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
        fileio._file_mode.cache_clear()
    write_json_atomic(tmp_path / "b.json", {"b": 1})
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o666 & ~old


# ---------------------------------------------------------------- bad input: messages, exit 1, no traceback


def test_too_short_video_is_refused_with_its_length(tmp_path, capsys):
    clip = _clip(tmp_path / "blink.mp4", 0.3)
    code, text = _run_main(capsys, *_pre_args(clip, "blink", tmp_path / "dataset"))
    assert code == 1 and "blink.mp4 is 0.32 s long (8 frames at 25 fps): too short" in text
    assert not (tmp_path / "dataset" / "blink").exists()


@pytest.mark.parametrize("case", ["long_name", "long_folder", "dataset_dir_file", "under_a_file", "person_dir_file",
                                  "unwritable"])
def test_file_system_problems_are_messages(tmp_path, capsys, short_clip, case):
    name, ds = "p", tmp_path / "dataset"
    undo = None
    if case == "long_name":
        name, expect = "a" * 300, "300 characters"
    elif case == "long_folder":  # a folder name the file system cannot hold
        ds = tmp_path / ("d" * 300)
        expect = f"file name too long: {ds}"
    elif case == "dataset_dir_file":
        ds.write_text("x")
        expect = f"--dataset_dir {ds} is a file, not a folder"
    elif case == "under_a_file":
        (tmp_path / "afile").write_text("x")
        ds = tmp_path / "afile" / "dataset"
        expect = f"--dataset_dir {ds}: {tmp_path / 'afile'} is a file, not a folder"
    elif case == "person_dir_file":
        ds.mkdir()
        (ds / "p").write_text("x")
        expect = f"{ds / 'p'} is a file, not a folder"
    else:
        ds.mkdir()
        undo = _make_unwritable(ds)
        expect = f"permission denied for {ds / 'p'}"
    try:
        code, text = _run_main(capsys, *_pre_args(short_clip, name, ds))
    finally:
        if undo:
            undo()
    assert code == 1 and expect in text, text
    if case == "unwritable":
        assert not list(ds.iterdir())


def _make_unwritable(folder: Path):
    """Make `folder` unwritable (chmod, or chattr +i for root); skip when neither works."""
    if os.geteuid() == 0:
        if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
            return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)
        pytest.skip("running as root without chattr: no folder is unwritable")
    folder.chmod(0o555)
    return lambda: folder.chmod(0o755)


def test_disk_full_is_a_message_naming_the_file(tmp_path, capsys, monkeypatch, short_clip):
    import synctalk.fileio as fileio

    real = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)
    try:
        code, text = _run_main(capsys, *_pre_args(short_clip, "full", tmp_path / "dataset"))
    finally:
        monkeypatch.setattr(fileio.os, "fsync", real)
    root = tmp_path / "dataset" / "full"
    assert code == 1 and f"no space left on the device while writing {root / 'full.mp4'}" in text, text
    assert not _no_temps(tmp_path)


BAD_STATES = {
    "section_string": ({"preprocessing": "yes"}, "section 'preprocessing' must be an object, found a string"),
    "wrong_types": ({"preprocessing": {"frames_done": "yes", "frame_count": "ten", "completed": True}},
                    "preprocessing.'frames_done' must be true/false"),
    "not_object": ([1, 2], "the file must hold a JSON object, found a list"),
    "lip_types": ({"preprocessing": {"lip_activity": {"aperture_cv": "big", "ok": True}}},
                  "preprocessing.lip_activity.'aperture_cv' must be a number"),
    "syncnet_types": ({"syncnet_training": {"epochs": "3", "completed": True}},
                      "syncnet_training.'epochs' must be a whole number"),
}


@pytest.mark.parametrize("command", ["status", "preprocess", "train"])
@pytest.mark.parametrize("case", sorted(BAD_STATES))
def test_state_file_of_the_wrong_shape(tmp_path, capsys, short_clip, command, case):
    data, expect = BAD_STATES[case]
    root = tmp_path / "dataset" / "p"
    root.mkdir(parents=True)
    state = root / ".training_state.json"
    state.write_text(json.dumps(data))
    if command == "status":
        argv = ["status", "p", "--dataset_dir", str(tmp_path / "dataset"), "--checkpoint_dir", str(tmp_path / "ck")]
    elif command == "preprocess":
        argv = _pre_args(short_clip, "p", tmp_path / "dataset")
    else:
        argv = ["train", "--name", "p", "--dataset_dir", str(tmp_path / "dataset"), "--checkpoint_dir",
                str(tmp_path / "ck"), "--train_syncnet", "--width", "tiny", "--epochs", "1", "--device", "cpu",
                "--no_progress"]
    code, text = _run_main(capsys, *argv)
    assert code == 1 and f"state file {state} is damaged" in text and expect in text, text
    assert "delete the file" in text  # how to fix it
    assert json.loads(state.read_text()) == data  # left as it was
    assert sorted(p.name for p in root.iterdir()) == [".training_state.json"]


BAD_BATCH = {
    "no_path": ({"videos": [{"name": "a"}]}, "videos[0] has no \"path\""),
    "string_entry": ({"videos": ["a.mp4"]}, "videos[0] must be an object with a \"path\", found \"a.mp4\""),
    "videos_object": ({"videos": {"path": "a.mp4"}}, "\"videos\" must be a list of entries, found an object"),
    "top_list": ([{"path": "a.mp4"}], "expected an object with a \"videos\" list"),
    "name_number": ({"videos": [{"path": "a.mp4", "name": 3}]}, "videos[0].name must be a string"),
    "bad_asr": ({"videos": [{"path": "a.mp4", "asr_model": "wav2vec"}]}, "videos[0].asr_model 'wav2vec' is not one of"),
    "not_json": ("{videos: [", "is not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_BATCH))
def test_batch_json_of_the_wrong_shape(tmp_path, capsys, case):
    data, expect = BAD_BATCH[case]
    cfg = tmp_path / "cfg.json"
    cfg.write_text(data if isinstance(data, str) else json.dumps(data))
    code, text = _run_main(capsys, "batch-preprocess", "--json_config", str(cfg), "--dataset_dir",
                           str(tmp_path / "dataset"), "--asr_model", "mel", "--landmarker", "dlib")
    assert code == 1 and str(cfg) in text and expect in text, text
    assert not (tmp_path / "dataset").exists()


def test_state_paths_do_not_depend_on_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dataset" / "p").mkdir(parents=True)
    state = TrainingState(Path("dataset") / "p" / ".training_state.json")
    state.update("syncnet_training", checkpoint="checkpoint/syncnet_p/checkpoint_best.pth",
                 checkpoints=["checkpoint/syncnet_p/1.pth"], reused_from=None)
    state.set_top(source_video="videos/p.mp4")
    raw = json.loads((tmp_path / "dataset" / "p" / ".training_state.json").read_text())
    assert raw["syncnet_training"]["checkpoint"] == str(tmp_path / "checkpoint/syncnet_p/checkpoint_best.pth")
    assert raw["syncnet_training"]["checkpoints"] == [str(tmp_path / "checkpoint/syncnet_p/1.pth")]
    assert raw["source_video"] == str(tmp_path / "videos/p.mp4") and raw["syncnet_training"]["reused_from"] is None
    # a path written relative to the dataset folder is read from there, wherever the command runs
    raw["syncnet_training"]["checkpoint"] = "best.pth"
    (tmp_path / "dataset" / "p" / "best.pth").write_text("x")
    (tmp_path / "dataset" / "p" / ".training_state.json").write_text(json.dumps(raw))
    monkeypatch.chdir("/")
    sec = TrainingState(tmp_path / "dataset" / "p" / ".training_state.json").section("syncnet_training")
    assert sec["checkpoint"] == str(tmp_path / "dataset" / "p" / "best.pth")


# ---------------------------------------------------------------- damaged dataset files on a rerun


@pytest.fixture(scope="module")
def done_dataset(tmp_path_factory, short_clip) -> Path:
    """dataset/ holding one finished person "p" (the short clip), copied by each test."""
    from synctalk.preprocess import PreprocessOptions, preprocess_video

    ds = tmp_path_factory.mktemp("done") / "dataset"
    preprocess_video(PreprocessOptions(video_path=short_clip, name="p", dataset_dir=ds, asr_model="mel",
                                       landmarker="dlib", models_dir=MODELS, device="cpu", progress=False))
    return ds


def _set_state(root: Path, **fields) -> None:
    path = root / ".training_state.json"
    data = json.loads(path.read_text())
    data["preprocessing"].update(fields)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("case", ["garbage_lms", "garbage_no_face", "garbage_boxes", "empty_frame", "no_count"])
def test_damaged_dataset_files_are_remade_or_named(tmp_path, capsys, short_clip, done_dataset, case):
    ds = tmp_path / "dataset"
    shutil.copytree(done_dataset, ds)
    root = ds / "p"
    expect, fixed_by_rerun = "", False
    if case == "garbage_lms":
        (root / "landmarks" / "000003.lms").write_text("nan x\n")
        (root / "crop_boxes.npy").unlink()
        _set_state(root, crop_boxes_done=False)
        expect = f"landmark file {root / 'landmarks' / '000003.lms'} is damaged"
    elif case == "garbage_no_face":
        (root / "landmarks" / "no_face_frames.json").write_text("{")
        (root / "landmarks" / "000005.lms").unlink()
        _set_state(root, landmarks_done=False)
        expect = f"{root / 'landmarks' / 'no_face_frames.json'} is damaged"
    elif case == "garbage_boxes":  # remade at once
        (root / "crop_boxes.npy").write_text("x")
        _set_state(root, crop_cache_done=False)
    elif case == "empty_frame":  # removed, and the rerun extracts it again
        (root / "full_body_img" / "000003.jpg").write_bytes(b"")
        shutil.rmtree(root / "landmarks")
        _set_state(root, landmarks_done=False)
        expect, fixed_by_rerun = f"frame {root / 'full_body_img' / '000003.jpg'} was unreadable and is removed", True
    else:
        data = json.loads((root / ".training_state.json").read_text())
        del data["preprocessing"]["frame_count"]
        (root / ".training_state.json").write_text(json.dumps(data))
    argv = _pre_args(short_clip, "p", ds)
    code, text = _run_main(capsys, *argv)
    if expect:
        assert code == 1 and expect in text, text
    if not expect or fixed_by_rerun:
        if fixed_by_rerun:
            code, text = _run_main(capsys, *argv)
        assert code == 0, text
        assert TrainingState(root / ".training_state.json").section("preprocessing")["completed"]
    assert not _no_temps(root)


def test_a_second_training_run_of_one_folder_is_refused_naming_the_first(tmp_path) -> None:
    """The training lock: held by the run, refused to a second one, and not left behind."""
    from synctalk.errors import SyncTalkError
    from synctalk.layout import CheckpointLayout
    from synctalk.locking import hold_lock
    from synctalk.training.commands import start_run
    from synctalk.training.config import SyncNetConfig

    run_dir = tmp_path / "checkpoint" / "syncnet_ann"
    seen = {}

    def train(cfg, dist):  # stands in for the loop: a second run of the same folder meanwhile
        seen["dir"] = Path(cfg.run_dir())
        with pytest.raises(SyncTalkError, match=r"training.*pid"):
            with hold_lock(CheckpointLayout.lock(Path(cfg.run_dir())), "training"):
                pass
        return 0

    explicit = {"name": "ann", "dataset_dir": str(tmp_path / "dataset"), "checkpoint_dir": str(tmp_path / "checkpoint"),
                "device": "cpu"}
    assert start_run("train-syncnet", SyncNetConfig, explicit, train) == 0
    assert seen["dir"] == run_dir
    with hold_lock(CheckpointLayout.lock(run_dir), "training"):  # released after the run
        pass


def test_a_checkpoint_write_on_a_full_disk_is_a_message_naming_the_file(tmp_path, monkeypatch) -> None:
    import errno
    import shutil as _shutil

    import torch

    from synctalk.errors import os_error_message
    from synctalk.fileio import torch_save_atomic

    def failing_save(obj, f):  # what torch's zip writer raises when write() fails
        Path(f).write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(_shutil, "disk_usage", lambda p: _shutil._ntuple_diskusage(10**9, 10**9 - 10, 10))
    target = tmp_path / "run" / "checkpoint_latest.pth"
    with pytest.raises(OSError) as info:
        torch_save_atomic({"x": 1}, target)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert "checkpoint_latest.pth" in os_error_message(info.value)
    assert not target.exists() and list(target.parent.iterdir()) == []  # nothing half-written left
