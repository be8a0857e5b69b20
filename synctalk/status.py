"""`synctalk status NAME`: the dataset's state as a table — what is done, counts, what is next."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import SyncTalkError
from .layout import checkpoint_layout, dataset_layout
from .state import TrainingState


def _lip_mark(check: dict | None) -> str:
    if not check:
        return "[dim]–[/]"
    if check.get("ok") is None:
        return "[dim]too short to judge[/]"
    return "[green]ok[/]" if check["ok"] else "[red]no sync to learn[/]"


def _lip_detail(check: dict | None) -> str:
    if not check:
        return ""
    corr = check.get("audio_corr")
    return f"lip opening varies {check.get('aperture_cv', 0):.0%}, follows the audio r={corr if corr is None else round(corr, 2)}"


def _av_offset_mark(pre: dict) -> tuple[str, str]:
    """(state, detail) of the video's own A/V offset (+N: the lips move N frames after the sound)."""
    from .lipcheck import offset_spread, per_frame_offsets

    if "av_offset" not in pre:
        return "[dim]–[/]", ""
    off = pre.get("av_offset")
    if not isinstance(off, dict) or "frames" not in off:
        return "[dim]–[/]", "not measured (too little speech)"
    n = int(off["frames"])
    when = ("in sync" if n == 0 else f"lips {n} frames after the sound" if n > 0
            else f"lips {-n} frames before the sound")
    # read from the segments when stored, so a dataset measured before a change of rule shows today's
    spread = offset_spread(off["segments"]) if off.get("segments") else off.get("spread")
    drift = f"; drifts by {spread:.1f} frames along the video" if spread is not None and spread >= 2 else ""
    if off.get("drift_per_minute") is not None and pre.get("frame_count"):
        per = per_frame_offsets(off, int(pre["frame_count"]))
        drift = (f"; drifts {off['drift_per_minute']:+.2f} frames a minute, {int(per[0]):+d} at the start and "
                 f"{int(per[-1]):+d} at the end (training follows it)")
    return ("[green]0[/]" if n == 0 else f"[yellow]{n:+d}[/]"), (
        f"{n:+d} frames ({when}), from the {off.get('source', '?')}, r={off.get('corr')}{drift}")


def status_rows(dataset_dir: Path, checkpoint_dir: Path, name: str) -> tuple[list[tuple[str, str, str]], str]:
    """(step, state, detail) rows and the next command to run."""
    layout = dataset_layout(dataset_dir, name)
    if not layout.root.is_dir():
        raise SyncTalkError(f"no dataset for {name!r} in {dataset_dir} (run `synctalk preprocess --name {name} ...`)")
    state = TrainingState(layout.state_file)
    data = state.load()  # checked against the state file's shape: a damaged file is one message, not a crash
    pre = data.get("preprocessing") or {}
    syn = data.get("syncnet_training") or {}
    main = data.get("main_training") or {}

    def mark(ok: bool) -> str:
        return "[green]done[/]" if ok else "[yellow]todo[/]"

    rows = [
        ("frames", mark(bool(pre.get("frames_done"))), f"{pre.get('frame_count', 0)} frames at {data.get('fps', '?')} fps"),
        ("audio", mark(bool(pre.get("audio_done"))), str(layout.audio_wav.name) if layout.audio_wav.exists() else ""),
        ("landmarks", mark(bool(pre.get("landmarks_done"))),
         f"{pre.get('landmark_count', 0)} files, {pre.get('landmarker', '?')}, {pre.get('no_face_frames', 0)} without a face"),
        ("crop boxes", mark(bool(pre.get("crop_boxes_done"))), pre.get("topology", "")),
        ("features", mark(bool(pre.get("feature_files"))), ", ".join(sorted(pre.get("feature_files") or {}))),
        ("crop cache", mark(bool(pre.get("crop_cache_done"))), pre.get("crop_cache", "")),
        ("lip activity", _lip_mark(pre.get("lip_activity")), _lip_detail(pre.get("lip_activity"))),
        ("A/V offset", *_av_offset_mark(pre)),
        ("syncnet", mark(bool(syn.get("completed"))),
         f"{syn.get('epochs', 0)} epochs, asr {syn.get('asr', '?')}" + _critic_detail(syn) + _resume_detail(syn)
         + (f", from {syn['reused_from']}" if syn.get("reused_from") else "")),
        ("unet", mark(bool(main.get("completed"))), f"{main.get('epochs', 0)} epochs, {len(main.get('checkpoints') or [])} checkpoints"
         + _resume_detail(main)),
    ]
    ckpt = checkpoint_layout(checkpoint_dir, name)
    if not pre.get("completed"):
        nxt = f"synctalk preprocess --video_path {layout.video} --name {name}"
    elif not syn.get("completed"):
        nxt = f"synctalk train-syncnet --name {name}"
    elif not main.get("completed"):
        nxt = f"synctalk train-unet --name {name}" + (" --continue_training" if ckpt.latest(ckpt.unet_dir).exists() else "")
    else:
        nxt = f"synctalk infer --name {name} --audio_path speech.wav"
    return rows, nxt


def _resume_detail(sec: dict) -> str:
    """Where --continue_training picks up, when the resume point is older than the last finished epoch
    (checkpoint_latest.pth is written about once a minute; training.loop.RESUME_EVERY_S)."""
    at = sec.get("latest_epoch")
    if sec.get("completed") or not isinstance(at, int) or at >= int(sec.get("epochs", 0)):
        return ""
    return f", resumes from epoch {at}"


def _critic_detail(syn: dict) -> str:
    """How well the SyncNet finds the offset (its best held-out epoch), when it was measured."""
    best = syn.get("best_metrics") or {}
    if isinstance(best.get("offset_acc_1_speech"), (int, float)):
        run = best.get("offset_acc_1_speech_run5")
        over_runs = f" ({run:.0%} over runs of 5 frames)" if isinstance(run, (int, float)) else ""
        return (f", finds the offset within ±1 frame at speech {best['offset_acc_1_speech']:.0%} of the time"
                + over_runs)
    if isinstance(best.get("offset_acc"), (int, float)):
        return f", offset accuracy {best['offset_acc']:.0%}"
    return ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `synctalk status`."""
    p.add_argument("name")
    p.add_argument("--dataset_dir", type=Path, default=Path("dataset"))
    p.add_argument("--checkpoint_dir", type=Path, default=Path("checkpoint"))


def run(args: argparse.Namespace) -> int:
    """Entry point of `synctalk status`."""
    from rich.console import Console
    from rich.table import Table

    rows, nxt = status_rows(args.dataset_dir, args.checkpoint_dir, args.name)
    table = Table(title=f"{args.name}")
    for col in ("step", "state", "detail"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    console = Console()
    console.print(table)
    console.print(f"next: [bold]{nxt}[/]")
    return 0
