"""Atomic writes: a kill at any moment leaves the old file or the new one, never half of one.

A temporary file is named `.<target>.st<pid>-<random>.tmp<ext>` beside its target: the pid says
which process writes it, so `remove_stale_temps` can tell a killed writer's leftover from a file
that a live process is still writing, and the fixed shape matches nothing the user put there.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

# `.<target>.st<pid>-<8 mkstemp characters>.tmp[.ext]`; the older `.<target>.<8 chars>.tmp[.ext]`
# (no pid) is matched too, so leftovers of earlier versions are swept as well
_TEMP_RE = re.compile(r"^\.(?P<target>.+?)\.(?:st(?P<pid>\d+)-)?[a-z0-9_]{8}\.tmp(?:\.[A-Za-z0-9]{1,10})?$")


@functools.lru_cache(maxsize=1)
def _file_mode() -> int:
    """0o666 less the process umask: the mode a plain open() would have given the file."""
    try:  # Linux reports the umask without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def temp_name(target: str | os.PathLike) -> tuple[str, str]:
    """(prefix, suffix) of the temporary files of `target` for mkstemp (this process's pid inside)."""
    name = Path(target).name
    return f".{name}.st{os.getpid()}-", ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, tmp_suffix = temp_name(path)
    tmp_path: Path | None = None
    try:
        # the temporary name ends in the real suffix so tools that pick a format by extension still work
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=tmp_suffix + (suffix or path.suffix), dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes the file 0600; the finished file gets the mode the user's umask asks for
        os.chmod(tmp_path, _file_mode())
        os.replace(tmp_path, path)
    except OSError as exc:
        # a failed write() (disk full) names no file, a failed temp file names a name the user never
        # chose: either way the message should name the file being written
        if exc.filename is None or is_temp_name(Path(exc.filename).name):
            exc.filename, exc.filename2 = str(path), None
        raise
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON (indented, sorted keys) atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """np.save atomically (the temporary name keeps the .npy suffix so numpy does not add one)."""
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save atomically; a write that fails (a full disk) is an OSError naming `path`."""
    import errno
    import shutil

    import torch

    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:
            # torch's zip writer reports a failed write as a RuntimeError, without errno or file name
            if "writ" not in str(exc).lower():
                raise
            full = shutil.disk_usage(tmp.parent).free < 64 * 2**20
            code = errno.ENOSPC if full else errno.EIO
            raise OSError(code, os.strerror(code), str(path)) from None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a pid we may not signal still runs)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        ctypes.windll.kernel32.CloseHandle(handle)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of atomic_path's temporary names."""
    return _TEMP_RE.match(name) is not None


def remove_stale_temps(directory: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """Remove the temporary files killed writers left in `directory`; return the removed paths.

    Only atomic_path's own names are touched; a temporary file whose writer (the pid in its name)
    still runs on this machine is kept. Run it under the folder's lock (synctalk.locking), so no
    writer on another machine can be mid-write.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    candidates = directory.rglob(".*.tmp*") if recursive else directory.glob(".*.tmp*")
    for p in candidates:
        m = _TEMP_RE.match(p.name)
        if m is None or not p.is_file():
            continue
        pid = m.group("pid")
        if pid is not None and pid_alive(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def cleanup_temporaries(directory: str | os.PathLike) -> int:
    """Remove leftover temporary files of a killed writer; return how many (see remove_stale_temps)."""
    return len(remove_stale_temps(directory))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
