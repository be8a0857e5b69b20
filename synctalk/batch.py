"""Batch preprocessing: many videos from a folder, a list file or a JSON config.

One failing video does not stop the rest; a table at the end gives each video's result and the
exit code is non-zero when any failed. With several visible GPUs, videos are spread over them
(one worker process per GPU).
"""

from __future__ import annotations

import argparse
import json
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from .audio.registry import ASR_MODELS
from .errors import SyncTalkError, os_error_message
from .layout import dataset_layout
from .preprocess import LANDMARKERS, PreprocessOptions, preprocess_video
from .state import TrainingState

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


@dataclass
class BatchItem:
    """One video to preprocess."""

    path: Path
    name: str
    asr_model: str | None = None


@dataclass
class BatchOutcome:
    """The result row of one video."""

    name: str
    path: str
    status: str  # "done", "skipped", "failed"
    detail: str
    frames: int = 0
    seconds: float = 0.0
    lips: str = ""  # "ok", or "no sync" when the lips do not move with the speech (synctalk.lipcheck)


def _lips(check: dict | None) -> str:
    if not check or check.get("ok") is None:  # none, or a clip too short to judge
        return ""
    return "ok" if check["ok"] else "no sync"


def items_from_dir(directory: Path) -> list[BatchItem]:
    """Every video file directly in a folder, named by its stem."""
    if not directory.is_dir():
        raise SyncTalkError(f"video folder not found: {directory}")
    return [BatchItem(p, p.stem) for p in sorted(directory.iterdir()) if p.suffix.lower() in VIDEO_EXTS]


def items_from_list(list_file: Path) -> list[BatchItem]:
    """A list file: `path [name]` per line, '#' comments; relative paths are relative to the file."""
    if not list_file.is_file():
        raise SyncTalkError(f"list file not found: {list_file}")
    try:
        text = list_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SyncTalkError(f"{list_file} is not a text file: expected one 'path [name]' line per video") from None
    items = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        path = Path(parts[0])
        if not path.is_absolute():
            path = list_file.parent / path
        items.append(BatchItem(path, parts[1] if len(parts) > 1 else path.stem))
    return items


_JSON_SHAPE = '{"videos": [{"path": "video.mp4", "name": "person", "asr_model": "ave"}, ...]}'


def items_from_json(config: Path) -> list[BatchItem]:
    """A JSON config: {"videos": [{"path", "name", "asr_model"}]}; relative paths are relative to the file."""
    if not config.is_file():
        raise SyncTalkError(f"JSON config not found: {config}")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SyncTalkError(f"{config} is not valid JSON ({exc}); expected {_JSON_SHAPE}") from None
    if not isinstance(data, dict) or "videos" not in data:
        raise SyncTalkError(f"{config}: expected an object with a \"videos\" list: {_JSON_SHAPE}")
    videos = data["videos"]
    if not isinstance(videos, list):
        found = {dict: "an object", str: "a string", type(None): "null"}.get(type(videos), type(videos).__name__)
        raise SyncTalkError(f"{config}: \"videos\" must be a list of entries, found {found}: {_JSON_SHAPE}")
    problems = []
    items = []
    for k, v in enumerate(videos):
        where = f"videos[{k}]"
        if not isinstance(v, dict):
            problems.append(f"{where} must be an object with a \"path\", found {json.dumps(v)[:60]}")
            continue
        if not isinstance(v.get("path"), str) or not v["path"]:
            problems.append(f"{where} has no \"path\" (the video file)")
            continue
        for key in ("name", "asr_model"):
            if v.get(key) is not None and not isinstance(v[key], str):
                problems.append(f"{where}.{key} must be a string, found {json.dumps(v[key])[:40]}")
        if v.get("asr_model") is not None and v["asr_model"] not in ASR_MODELS:
            problems.append(f"{where}.asr_model {v['asr_model']!r} is not one of {', '.join(ASR_MODELS)}")
        path = Path(v["path"])
        if not path.is_absolute():
            path = config.parent / path
        items.append(BatchItem(path, v.get("name") or path.stem, v.get("asr_model")))
    if problems:
        # nothing is run when the config is wrong: a fixed config then runs every video once
        raise SyncTalkError(f"{config}: " + "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                                                        if len(problems) > 5 else ""))
    return items


def _already_done(opts: PreprocessOptions) -> bool:
    layout = dataset_layout(opts.dataset_dir, opts.name)
    sec = TrainingState(layout.state_file).section("preprocessing")
    return bool(sec.get("completed") and opts.asr_model in (sec.get("feature_files") or {})
                and sec.get("landmarker") == opts.landmarker)


def _run_one(opts: PreprocessOptions, gpu: str | None) -> BatchOutcome:
    """Preprocess one video; every failure becomes a row, never an exception."""
    if gpu is not None:
        opts = replace(opts, device=gpu)
    try:
        if _already_done(opts):
            sec = TrainingState(dataset_layout(opts.dataset_dir, opts.name).state_file).section("preprocessing")
            return BatchOutcome(opts.name, str(opts.video_path), "skipped", "already preprocessed",
                                lips=_lips(sec.get("lip_activity")))
        result = preprocess_video(opts)
        return BatchOutcome(opts.name, str(opts.video_path), "done", ", ".join(result.done_now) or "nothing to do",
                            result.frame_count, result.seconds, lips=_lips(result.lip_activity))
    except SyncTalkError as exc:
        return BatchOutcome(opts.name, str(opts.video_path), "failed", str(exc))
    except OSError as exc:  # not writable, disk full, name too long: words, not a traceback
        return BatchOutcome(opts.name, str(opts.video_path), "failed", os_error_message(exc))
    except Exception as exc:  # noqa: BLE001 - one bad video must not stop the batch
        return BatchOutcome(opts.name, str(opts.video_path), "failed",
                            f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")


def _visible_gpus() -> list[str]:
    try:
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        return []


def run_batch(items: list[BatchItem], base: PreprocessOptions, workers: int | None = None) -> list[BatchOutcome]:
    """Preprocess every item; with several GPUs, one worker process per GPU."""
    jobs = [replace(base, video_path=it.path, name=it.name, asr_model=it.asr_model or base.asr_model) for it in items]
    gpus = _visible_gpus() if base.device in ("auto", "cuda") else []
    n_workers = workers if workers is not None else max(1, len(gpus))
    if n_workers <= 1 or len(jobs) <= 1:
        return [_run_one(j, gpus[0] if gpus else None) for j in jobs]
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # CUDA does not survive fork
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
        futures = [pool.submit(_run_one, replace(j, progress=False), gpus[k % len(gpus)] if gpus else None)
                   for k, j in enumerate(jobs)]
        return [f.result() for f in futures]


def print_table(outcomes: list[BatchOutcome]) -> None:
    """The per-video results table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="batch preprocessing")
    for col in ("name", "video", "result", "frames", "seconds", "lips", "detail"):
        table.add_column(col)
    style = {"done": "green", "skipped": "cyan", "failed": "red"}
    for o in outcomes:
        lips = {"ok": "[green]ok[/]", "no sync": "[red]no sync[/]"}.get(o.lips, o.lips)
        table.add_row(o.name, o.path, f"[{style[o.status]}]{o.status}[/]", str(o.frames or ""),
                      f"{o.seconds:.1f}" if o.seconds else "", lips, o.detail.splitlines()[0] if o.detail else "")
    Console().print(table)
    unusable = [o.name for o in outcomes if o.lips == "no sync"]
    if unusable:
        Console().print(f"[red]no lip sync to learn[/] in {', '.join(unusable)}: their lips hardly move or do not "
                        f"follow the speech (see `synctalk status NAME`)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `synctalk batch-preprocess` / scripts/batch_preprocess.py."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video_dir", type=Path, help="preprocess every video in this folder (name = file stem)")
    src.add_argument("--video_list", type=Path, help="a file of 'path [name]' lines, '#' comments")
    src.add_argument("--json_config", type=Path, help='{"videos": [{"path", "name", "asr_model"}]}')
    # the single preprocessing defaults (they need no download)
    p.add_argument("--asr_model", "--asr", dest="asr_model", default=PreprocessOptions.asr_model, choices=ASR_MODELS)
    p.add_argument("--landmarker", default=PreprocessOptions.landmarker, choices=LANDMARKERS)
    p.add_argument("--dataset_dir", type=Path, default=Path("dataset"))
    p.add_argument("--models_dir", type=Path, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per visible GPU)")


def run(args: argparse.Namespace) -> int:
    """Entry point of `synctalk batch-preprocess`."""
    if args.video_dir:
        items = items_from_dir(args.video_dir)
    elif args.video_list:
        items = items_from_list(args.video_list)
    else:
        items = items_from_json(args.json_config)
    if not items:
        raise SyncTalkError("no videos to preprocess")
    base = PreprocessOptions(video_path=Path("."), name="_", dataset_dir=args.dataset_dir, asr_model=args.asr_model,
                             landmarker=args.landmarker, models_dir=args.models_dir, device=args.device)
    outcomes = run_batch(items, base, args.workers)
    print_table(outcomes)
    for o in outcomes:
        if o.status == "failed":
            print(f"{o.name}: {o.detail}")
    failed = sum(o.status == "failed" for o in outcomes)
    print(f"{len(outcomes) - failed} of {len(outcomes)} videos ok, {failed} failed")
    return 1 if failed else 0

