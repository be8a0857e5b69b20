"""Where every model file comes from: a models folder, a download with checks, or a clear error.

Search order for a file: the explicit `models_dir`, then `$SYNCTALK_MODELS`, then the per-user cache
(`$XDG_CACHE_HOME/synctalk/models`, default `~/.cache/synctalk/models`). Downloads go to the first
of those. Hugging Face models (HuBERT) live in transformers' own cache or in `<models_dir>/hubert/`
and have no manifest entry here. The `synctalk models` command is in synctalk.models_command.
"""

from __future__ import annotations

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
    """One downloadable model file, where to get it, how to check it, and what to use instead."""

    name: str
    filename: str
    urls: tuple[str, ...]  # mirrors, tried in order
    size: int | None  # bytes; None where no trusted copy was measured
    sha256: str | None  # None where no trusted copy was measured
    description: str
    offline_alternative: str
    aliases: tuple[str, ...] = ()  # other file names accepted in a models folder (the upstream names)
    sha256_prefix: str | None = None  # a published prefix (torchvision puts one in its file names)
    torch_hub: bool = False  # also look in torch.hub's checkpoint folder (torchvision's own downloads)
    git_blob: str | None = None  # git's object id of the file where a public tree lists it

    @property
    def url(self) -> str:
        """The first address (the one named in messages)."""
        return self.urls[0]

    @property
    def verifiable(self) -> bool:
        """Whether a download of this file can be checked against a recorded digest."""
        return bool(self.sha256 or self.git_blob or self.sha256_prefix)


def _github_raw(path: str, repos: tuple[str, ...]) -> tuple[str, ...]:
    # `raw/HEAD/...` follows each repository's default branch, whatever it is called
    return tuple(f"https://github.com/{repo}/raw/HEAD/{path}" for repo in repos)


# The SyncTalk_2D tree and its public forks carry the same files (same git blob ids).
_SYNCTALK_2D = ("ZiqiaoPeng/SyncTalk_2D", "Dk0071942/SyncTalk_2D", "lqql8790229/SyncTalk_2D", "ILG2021/SyncTalk_2D")

MANIFEST: dict[str, ModelFile] = {
    m.name: m
    for m in (
        ModelFile(
            name="scrfd",
            filename="scrfd_2.5g_kps.onnx",
            urls=_github_raw("data_utils/scrfd_2.5g_kps.onnx", _SYNCTALK_2D),
            size=3291017,
            sha256="32d20c77b9e2dc1d07e94c2ab9d25bdd5cd05eddbe0b46e7b38e7a1eca22e99a",
            description="SCRFD-2.5g-kps face detector (ONNX)",
            offline_alternative="--detector dlib (dlib's HOG face detector, installed with the package)",
        ),
        ModelFile(
            name="pfld",
            filename="checkpoint_epoch_335.pth.tar",
            urls=_github_raw("data_utils/checkpoint_epoch_335.pth.tar", _SYNCTALK_2D),
            size=None,
            sha256=None,
            git_blob="a1652fd38853cf58cd3ceac717bb5deb34f679d7",
            description="PFLD_GhostOne 110-point landmark network (SyncTalk_2D checkpoint)",
            offline_alternative="--landmarker dlib",
        ),
        ModelFile(
            name="pfld_mean_face",
            filename="pfld_mean_face.txt",
            urls=_github_raw("data_utils/mean_face.txt", _SYNCTALK_2D),
            size=2394,
            sha256="40bed2653ae861e9a24b4766c3d085986b7c1245a27373913a9a5b1a6ce069ef",
            description="mean face the PFLD network's outputs are offsets from",
            offline_alternative="--landmarker dlib",
            aliases=("mean_face.txt",),
        ),
        ModelFile(
            name="ave",
            filename="audio_visual_encoder.pth",
            # the same file sits at two paths of the tree
            urls=(_github_raw("model/checkpoints/audio_visual_encoder.pth", _SYNCTALK_2D)
                  + _github_raw("data_utils/ave/checkpoints/audio_encoder.pth", _SYNCTALK_2D)),
            size=None,
            sha256=None,
            git_blob="9fe9b655c3f952f26f0353a468ab33ff78c0bdf3",
            description="Wav2Lip-style audio encoder (SyncTalk audio_visual_encoder.pth or a Wav2Lip SyncNet checkpoint)",
            offline_alternative="--asr_model mel",
            aliases=("audio_encoder.pth", "lipsync_expert.pth"),
        ),
        ModelFile(
            name="wenet",
            filename="wenet_encoder.onnx",
            urls=("https://drive.google.com/uc?export=download&id=1e4Z9zS053JEWl6Mj3W9Lbc9GDtzHIg6b",),
            size=None,
            sha256=None,
            description="WeNet conformer encoder (ONNX, Ultralight-Digital-Human encoder.onnx)",
            offline_alternative="--asr_model mel",
            aliases=("encoder.onnx",),
        ),
        ModelFile(
            name="vgg19",
            filename="vgg19-dcbb9e9d.pth",
            urls=("https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",),
            size=None,
            sha256=None,
            description="torchvision VGG19 ImageNet weights (perceptual loss)",
            offline_alternative="--perceptual none",
            sha256_prefix="dcbb9e9d",
            torch_hub=True,
        ),
    )
}

def hub_offline() -> bool:
    """Whether the Hugging Face hub is set offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE): a model not
    in the cache is then missing, not something to fetch."""
    return os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "ON") or os.environ.get("TRANSFORMERS_OFFLINE") == "1"


def hf_cached(model_id: str) -> Path | None:
    """The folder of `model_id` in the Hugging Face cache when its config.json is there, else None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(model_id, "config.json")
    except Exception:  # noqa: BLE001 - no huggingface_hub, or an odd cache layout: "not found"
        return None
    return Path(hit).parent if isinstance(hit, str) else None


# Hugging Face models: fetched through transformers, listed and downloaded by name here too
HF_MODELS = {"hubert": "facebook/hubert-large-ls960-ft", "whisper": "openai/whisper-tiny"}


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
    return _digests(Path(path), want_blob=False)[0]


def git_blob_id_of(path: "str | os.PathLike") -> str:
    """Git's object id of a file: sha1 of b"blob <size>\\0" followed by its bytes."""
    return _digests(Path(path), want_blob=True)[1]


def _digests(path: Path, want_blob: bool) -> tuple[str, str | None]:
    """(sha256, git blob id or None) of a file in one read."""
    sha = hashlib.sha256()
    blob = hashlib.sha1(b"blob %d\0" % path.stat().st_size) if want_blob else None
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            sha.update(block)
            if blob is not None:
                blob.update(block)
    return sha.hexdigest(), (blob.hexdigest() if blob is not None else None)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


class _AddressFailed(Exception):
    """This address gave nothing usable; the next mirror is tried."""


def download(name: str, models_dir: "str | os.PathLike | None" = None, progress: bool = True,
             *, timeout: float = 60.0) -> Path:
    """Download model file `name` into the first search folder and return its path.

    The manifest's addresses are tried in order until one gives a file that passes the checks (size,
    then sha256 or git blob id where recorded); a file that fails them is removed before the next
    address is tried, and only a checked file is renamed into place, so a kill or a bad mirror never
    leaves a wrong file under the real name. A partial `<file>.part` from an interrupted transfer is
    kept and resumed with an HTTP Range request (from any mirror: the checks cover the whole file).
    """
    entry = get_entry(name)
    dest_dir = search_dirs(models_dir)[0]
    dest = dest_dir / entry.filename
    if dest.is_file() and _problem(entry, dest)[0] is None:
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    part = dest_dir / (entry.filename + ".part")
    failures: list[str] = []
    for url in entry.urls:
        try:
            _fetch(entry, url, part, progress, timeout)
        except _AddressFailed as exc:
            failures.append(f"  {url}: {exc}")
            continue
        problem, sha = _problem(entry, part)
        if problem is None:
            _say_verified(entry, sha)
            os.replace(part, dest)
            return dest
        part.unlink(missing_ok=True)  # a wrong file is never kept, not even to resume
        failures.append(f"  {url}: the file {problem}; it was removed")
    tried = "\n".join(failures)
    if part.is_file():
        raise SyncTalkError(
            f"download of {name} did not finish:\n{tried}\nThe partial file {part} is kept: "
            f"run `synctalk models download {name}` again to resume")
    raise SyncTalkError(
        f"could not download {name} ({entry.description}) from any of its addresses:\n{tried}\n"
        f"Copy {entry.filename} into {dest_dir} by hand, or use the offline alternative: "
        f"{entry.offline_alternative}")


def _fetch(entry: ModelFile, url: str, part: Path, progress: bool, timeout: float) -> None:
    """Append `url`'s bytes to `part` (resuming what it holds); _AddressFailed when it cannot."""
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "synctalk"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            return  # nothing past what we hold: the part file is already whole
        raise _AddressFailed(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _AddressFailed(f"unreachable ({getattr(exc, 'reason', exc)})") from None
    with resp:
        if have and getattr(resp, "status", 200) != 206:
            have = 0  # the server ignored the range: start over
        ctype = resp.headers.get("Content-Type", "")
        if ctype.startswith("text/html") and not entry.filename.endswith((".html", ".txt")):
            raise _AddressFailed(f"answered with a web page, not {entry.filename} (a sign-in or confirmation "
                                 f"page?); download it in a browser")
        length = resp.headers.get("Content-Length")
        expected = have + int(length) if length is not None else entry.size
        got = have
        with open(part, "ab" if have else "wb") as fh, tqdm(
            total=expected, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=entry.name, disable=not progress,
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
                raise _AddressFailed(_stopped(got, expected, exc)) from None
        if expected is not None and got < expected:
            raise _AddressFailed(_stopped(got, expected, None))


def _stopped(got: int, expected: int | None, exc: Exception | None) -> str:
    total = f" of {expected}" if expected is not None else ""
    why = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return f"stopped after {got}{total} bytes{why}"


def _problem(entry: ModelFile, path: Path) -> tuple[str | None, str | None]:
    """(what is wrong with the file or None, its sha256 where computed), checked against the manifest."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return f"is {size} bytes, expected {entry.size}", None
    sha, blob = _digests(path, want_blob=entry.git_blob is not None)
    if entry.sha256 and sha != entry.sha256:
        return f"has sha256 {sha}, expected {entry.sha256}", sha
    if entry.git_blob and blob != entry.git_blob:
        return f"has git blob id {blob}, expected {entry.git_blob}", sha
    if entry.sha256_prefix and not sha.startswith(entry.sha256_prefix):
        return f"has sha256 {sha}, expected one starting with {entry.sha256_prefix}", sha
    return None, sha


def _say_verified(entry: ModelFile, sha: str | None) -> None:
    if entry.sha256:
        _say(f"{entry.name}: sha256 verified")
    elif entry.git_blob:
        _say(f"{entry.name}: git blob id {entry.git_blob} verified (sha256 {sha})")
    elif entry.sha256_prefix:
        _say(f"{entry.name}: sha256 prefix {entry.sha256_prefix} verified (no full checksum recorded)")
    else:
        _say(f"{entry.name}: cannot verify a checksum (none recorded for {entry.filename}); its sha256 is {sha}")
