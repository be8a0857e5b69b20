"""`synctalk models list` and `synctalk models download NAME`: what the models folder holds, and fetching.

Kept apart from synctalk.weights so that the audio models (HuBERT) can use weights' search folders
while this command lists and downloads them too, with no import cycle.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .audio.hubert import download_hubert, hubert_location
from .weights import ENV_VAR, HF_MODELS, MANIFEST, download, find_model_file, search_dirs, user_cache_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`synctalk models list` and `synctalk models download NAME`."""
    sub = parser.add_subparsers(dest="models_action", metavar="ACTION")
    p_list = sub.add_parser("list", help="show every model, whether it is present and where")
    p_list.add_argument("--models_dir", type=Path, default=None, help="models folder searched first")
    p_dl = sub.add_parser("download", help="download a model into the models folder")
    p_dl.add_argument("name", choices=[*MANIFEST, *HF_MODELS, "all"], help="model to download")
    p_dl.add_argument("--models_dir", type=Path, default=None,
                      help=f"download into this folder (default ${ENV_VAR}, else {user_cache_dir()})")
    p_dl.add_argument("--no_progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run `synctalk models ...`."""
    action = getattr(args, "models_action", None) or "list"
    models_dir = getattr(args, "models_dir", None)
    if action == "list":
        _print_table(models_dir)
        return 0
    names = [*MANIFEST, *HF_MODELS] if args.name == "all" else [args.name]
    for name in names:
        if name == "whisper":
            from .audio.whisper import download_whisper

            where = download_whisper(models_dir, progress=not args.no_progress)
        elif name in HF_MODELS:
            where = download_hubert(models_dir, progress=not args.no_progress)
        else:
            where = download(name, models_dir, progress=not args.no_progress)
        print(f"{name}: {where}")
    return 0


def _human(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def model_rows(models_dir: "str | os.PathLike | None" = None) -> list[tuple[str, bool, str, str]]:
    """(model, present, where, size) for every model the program can use."""
    rows = []
    for name, entry in MANIFEST.items():
        path = find_model_file(name, models_dir)
        if path is not None:
            rows.append((name, True, str(path), _human(path.stat().st_size)))
        else:
            rows.append((name, False, f"{search_dirs(models_dir)[0] / entry.filename} (download goes here)",
                         _human(entry.size)))
    from .audio.whisper import whisper_location

    for name in HF_MODELS:
        where, present = whisper_location(models_dir=models_dir) if name == "whisper" else hubert_location(models_dir)
        rows.append((name, present, where, _human(_dir_size(Path(where))) if present else "?"))
    return rows


def _dir_size(path: Path) -> int | None:
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return None
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _print_table(models_dir: "str | os.PathLike | None") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="models", show_lines=False)
    for col in ("model", "present", "where", "size", "without it"):
        table.add_column(col)
    alternatives = {n: e.offline_alternative for n, e in MANIFEST.items()}
    alternatives.update({n: "--asr_model mel" for n in HF_MODELS})
    for name, present, where, size in model_rows(models_dir):
        table.add_row(name, "[green]yes[/]" if present else "[red]no[/]", where, size, alternatives[name])
    console = Console()
    console.print(table)
    console.print(f"searched: {', '.join(str(d) for d in search_dirs(models_dir))}")
