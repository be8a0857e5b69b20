"""Where every model file comes from: a models folder, a download with checks, or a clear error.

Search order for a file: the explicit `models_dir`, then `$SYNCTALK_MODELS`, then the per-user cache
(`$XDG_CACHE_HOME/synctalk/models`, default `~/.cache/synctalk/models`). Downloads go to the first
of those. Hugging Face models (HuBERT) live in transformers' own cache or in `<models_dir>/hubert/`
and have no manifest entry here.

Also the `synctalk models list|download` command (`add_arguments` / `run`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import SyncTalkError

ENV_VAR = "SYNCTALK_MODELS"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelFile:
    """One downloadable model file and what to use instead when it cannot be had."""

    name: str
    filename: str
    url: str
    size: int | None  # bytes; None where no trusted copy was measured
    sha256: str | None  # None where no trusted copy was measured: the download says it cannot verify
    description: str
    offline_alternative: str
    aliases: tuple[str, ...] = ()  # other file names accepted in a models folder (the upstream names)
    sha256_prefix: str | None = None  # a published prefix (torchvision puts one in its file names)
    torch_hub: bool = False  # also look in torch.hub's checkpoint folder (torchvision's own downloads)


_SYNCTALK_2D = "https://github.com/ZiqiaoPeng/SyncTalk_2D/raw/main"

MANIFEST: dict[str, ModelFile] = {
    m.name: m
    for m in (
        ModelFile(
            name="scrfd",
            filename="scrfd_2.5g_kps.onnx",
            url=f"{_SYNCTALK_2D}/data_utils/scrfd_2.5g_kps.onnx",
            size=3291017,
            sha256="32d20c77b9e2dc1d07e94c2ab9d25bdd5cd05eddbe0b46e7b38e7a1eca22e99a",
            description="SCRFD-2.5g-kps face detector (ONNX)",
            offline_alternative="none: the face detector is required (copy the file into a models folder)",
        ),
        ModelFile(
            name="pfld",
            filename="checkpoint_epoch_335.pth.tar",
            url=f"{_SYNCTALK_2D}/data_utils/checkpoint_epoch_335.pth.tar",
            size=None,
            sha256=None,
            description="PFLD_GhostOne 110-point landmark network (SyncTalk_2D checkpoint)",
            offline_alternative="--landmarker dlib",
        ),
        ModelFile(
            name="pfld_mean_face",
            filename="pfld_mean_face.txt",
            url=f"{_SYNCTALK_2D}/data_utils/mean_face.txt",
            size=2394,
            sha256="40bed2653ae861e9a24b4766c3d085986b7c1245a27373913a9a5b1a6ce069ef",
            description="mean face the PFLD network's outputs are offsets from",
            offline_alternative="--landmarker dlib",
            aliases=("mean_face.txt",),
        ),
        ModelFile(
            name="ave",
            filename="audio_visual_encoder.pth",
            url="https://raw.githubusercontent.com/ZiqiaoPeng/SyncTalk/main/nerf_triplane/checkpoints/audio_visual_encoder.pth",
            size=None,
            sha256=None,
            description="Wav2Lip-style audio encoder (SyncTalk audio_visual_encoder.pth or a Wav2Lip SyncNet checkpoint)",
            offline_alternative="--asr_model mel",
            aliases=("lipsync_expert.pth",),
        ),
        ModelFile(
            name="wenet",
            filename="wenet_encoder.onnx",
            url="https://drive.google.com/uc?export=download&id=1e4Z9zS053JEWl6Mj3W9Lbc9GDtzHIg6b",
            size=None,
            sha256=None,
            description="WeNet conformer encoder (ONNX, Ultralight-Digital-Human encoder.onnx)",
            offline_alternative="--asr_model mel",
            aliases=("encoder.onnx",),
        ),
        ModelFile(
            name="vgg19",
            filename="vgg19-dcbb9e9d.pth",
            url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            size=None,
            sha256=None,
            description="torchvision VGG19 ImageNet weights (perceptual loss)",
            offline_alternative="--perceptual none",
            sha256_prefix="dcbb9e9d",
            torch_hub=True,
        ),
    )
}

# Hugging Face models: fetched through transformers, listed and downloaded by name here too
HF_MODELS = {"hubert": "facebook/hubert-large-ls960-ft"}


def user_cache_dir() -> Path:
    """The per-user models folder ($XDG_CACHE_HOME/synctalk/models, default ~/.cache/synctalk/models)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "synctalk" / "models"


def search_dirs(models_dir: "str | os.PathLike | None" = None) -> list[Path]:
    """Folders a model file is looked for in, first to last (the first is where downloads go)."""
    dirs: list[Path] = []
    if models_dir:
        dirs.append(Path(models_dir).expanduser())
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(user_cache_dir())
    seen: set[str] = set()
    out = []
    for d in dirs:
        key = os.path.abspath(d)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _torch_hub_checkpoints() -> Path:
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"), "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def get_entry(name: str) -> ModelFile:
    """The manifest entry of `name`, or an error listing the known names."""
    try:
        return MANIFEST[name]
    except KeyError:
        known = ", ".join([*MANIFEST, *HF_MODELS])
        raise SyncTalkError(f"unknown model {name!r}: known models are {known}") from None


def candidate_paths(name: str, models_dir: "str | os.PathLike | None" = None) -> list[Path]:
    """Every path `resolve_model_file` tries for `name`, in order."""
    entry = get_entry(name)
    names = (entry.filename, *entry.aliases)
    paths = [d / n for d in search_dirs(models_dir) for n in names]
    if entry.torch_hub:
        paths.append(_torch_hub_checkpoints() / entry.filename)
    return paths


def resolve_model_file(name: str, models_dir: "str | os.PathLike | None" = None) -> Path:
    """Path of model file `name`; a SyncTalkError naming every place tried, the download command and
    the offline alternative when it is nowhere."""
    entry = get_entry(name)
    tried = candidate_paths(name, models_dir)
    for path in tried:
        if path.is_file():
            if path.name == entry.filename and entry.size is not None and path.stat().st_size != entry.size:
                raise SyncTalkError(
                    f"{path} is {path.stat().st_size} bytes, but {name} ({entry.filename}) is {entry.size} bytes: "
                    f"an incomplete copy? Delete it and run `synctalk models download {name}`"
                )
            return path
    where = "\n".join(f"  {p}" for p in tried)
    dir_flag = f" --models_dir {models_dir}" if models_dir else ""
    raise SyncTalkError(
        f"model {name!r} ({entry.description}) not found. Looked for:\n{where}\n"
        f"Download it with: synctalk models download {name}{dir_flag}\n"
        f"  (or put {entry.filename} from {entry.url} into one of those folders by hand)\n"
        f"Offline alternative: {entry.offline_alternative}"
    )


def find_model_file(name: str, models_dir: "str | os.PathLike | None" = None) -> Path | None:
    """Like resolve_model_file, but None when the file is nowhere."""
    for path in candidate_paths(name, models_dir):
        if path.is_file():
            return path
    return None


def sha256_of(path: "str | os.PathLike") -> str:
    """Hex sha256 of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


def download(name: str, models_dir: "str | os.PathLike | None" = None, progress: bool = True,
             *, timeout: float = 60.0) -> Path:
    """Download model file `name` into the first search folder and return its path.

    A partial `<file>.part` from an interrupted run is resumed with an HTTP Range request. The size
    and sha256 are checked where the manifest knows them (a mismatch removes the file and raises);
    the finished file is renamed into place, so a kill never leaves a half file under the real name.
    """
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    entry = get_entry(name)
    dest_dir = search_dirs(models_dir)[0]
    dest = dest_dir / entry.filename
    if dest.is_file() and _verify(entry, dest, remove_on_failure=False, quiet=True):
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    part = dest_dir / (entry.filename + ".part")
    have = part.stat().st_size if part.is_file() else 0

    headers = {"User-Agent": "synctalk"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(entry.url, headers=headers)
    try:
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            # the server has nothing past what we hold: the part file is already whole
            resp = None
        else:
            raise SyncTalkError(f"downloading {name} from {entry.url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SyncTalkError(
            f"could not reach {entry.url} to download {name}: {reason}\n"
            f"Copy {entry.filename} into {dest_dir} by hand, or use the offline alternative: "
            f"{entry.offline_alternative}"
        ) from None

    if resp is not None:
        with resp:
            status = getattr(resp, "status", 200)
            if have and status != 206:
                have = 0  # the server ignored the range: start over
            ctype = resp.headers.get("Content-Type", "")
            if ctype.startswith("text/html") and not entry.filename.endswith((".html", ".txt")):
                raise SyncTalkError(
                    f"{entry.url} answered with a web page, not {entry.filename} (a sign-in or confirmation "
                    f"page?). Download it in a browser and put it into {dest_dir}"
                )
            length = resp.headers.get("Content-Length")
            expected = have + int(length) if length is not None else entry.size
            got = have
            with open(part, "ab" if have else "wb") as fh, tqdm(
                total=expected, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"{name}", disable=not progress,
            ) as bar:
                try:
                    while True:
                        block = resp.read(_CHUNK)
                        if not block:
                            break
                        fh.write(block)
                        got += len(block)
                        bar.update(len(block))
                except Exception as exc:  # noqa: BLE001 - socket errors and http.client's IncompleteRead share no base
                    raise SyncTalkError(_interrupted(name, got, expected, part, exc)) from None
            if expected is not None and got < expected:
                raise SyncTalkError(_interrupted(name, got, expected, part, None))

    _verify(entry, part, remove_on_failure=True, quiet=False)  # raises (and removes the file) on a mismatch
    os.replace(part, dest)
    return dest


def _interrupted(name: str, got: int, expected: int | None, part: Path, exc: Exception | None) -> str:
    total = f" of {expected}" if expected is not None else ""
    why = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return (f"download of {name} stopped after {got}{total} bytes{why}; the partial file {part} is kept: "
            f"run `synctalk models download {name}` again to resume")


def _verify(entry: ModelFile, path: Path, *, remove_on_failure: bool, quiet: bool) -> bool:
    """Check size and checksum; on failure return False (quiet) or remove the file and raise."""
    size = path.stat().st_size
    problem = None
    if entry.size is not None and size != entry.size:
        problem = f"is {size} bytes, expected {entry.size}"
    digest = None
    if problem is None and (entry.sha256 or entry.sha256_prefix or not quiet):
        digest = sha256_of(path)
        if entry.sha256 and digest != entry.sha256:
            problem = f"has sha256 {digest}, expected {entry.sha256}"
        elif entry.sha256_prefix and not digest.startswith(entry.sha256_prefix):
            problem = f"has sha256 {digest}, expected one starting with {entry.sha256_prefix}"
    if problem is None:
        if not quiet:
            if entry.sha256:
                _say(f"{entry.name}: sha256 verified")
            elif entry.sha256_prefix:
                _say(f"{entry.name}: sha256 prefix {entry.sha256_prefix} verified (no full checksum recorded)")
            else:
                _say(f"{entry.name}: cannot verify a checksum (none recorded for {entry.filename}); "
                     f"its sha256 is {digest}")
        return True
    if quiet:
        return False
    if remove_on_failure:
        path.unlink(missing_ok=True)
    raise SyncTalkError(f"downloaded {entry.filename} {problem}; the file was removed. "
                        f"Run `synctalk models download {entry.name}` again, or fetch {entry.url} by hand")


# ----------------------------------------------------------------------------------------------
# synctalk models list | download NAME


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
        if name in HF_MODELS:
            from .audio.hubert import download_hubert

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
    from .audio.hubert import hubert_location

    for name, repo_id in HF_MODELS.items():
        where, present = hubert_location(models_dir)
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
