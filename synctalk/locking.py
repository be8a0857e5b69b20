"""One writer per folder: a lock file that a second run meets with a message naming the holder.

    with hold_lock(layout.root / ".preprocess.lock", f"preprocessing of {name!r}"):
        ...
    with hold_lock(run_dir / ".lock", "training"):
        ...

The lock is an advisory kernel lock (flock) on the file, so a holder killed with -9 releases it the
moment it dies; the file's text (pid, host, command, start time) is only there to name the holder.
A file left by a dead holder is taken over with a notice. Where flock does not exist (Windows) the
file is created with O_CREAT|O_EXCL and a file whose pid no longer runs on this host is stale.
Readers (status, infer of a finished model) never take a lock.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from .errors import SyncTalkError
from .fileio import pid_alive

try:
    import fcntl

    _HAVE_FLOCK = True
except ImportError:  # Windows
    _HAVE_FLOCK = False

_TRIES = 5  # a lock file replaced between open and lock is retried this many times


def _holder_info() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv))[:500],
        "since": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def read_lock(path: Path) -> dict[str, Any] | None:
    """The holder recorded in a lock file (None when absent, empty or unreadable)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return None
    return info if isinstance(info, dict) else None


def _holder_of(path: Path, wait_s: float = 1.0) -> dict[str, Any] | None:
    """The holder of a lock found held; a holder that has just locked it writes its name a moment
    later, so an empty file is read again for up to `wait_s` before it is reported as just starting."""
    deadline = time.monotonic() + wait_s
    while True:
        info = read_lock(path)
        if info or time.monotonic() >= deadline:
            return info
        time.sleep(0.02)


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process (it is just starting)"
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('since', '?')}"
            f" ({info.get('command') or 'unknown command'})")


def _busy(path: Path, what: str, info: dict[str, Any] | None, hint: str = "") -> SyncTalkError:
    return SyncTalkError(f"{what} is already running: {path} is held by {_describe(info)}; wait for it to finish "
                         f"or stop it{hint}")


def _stale_notice(path: Path, what: str, info: dict[str, Any]) -> None:
    print(f"note: taking over the lock {path} of {what}: its holder, {_describe(info)}, no longer runs",
          file=sys.stderr, flush=True)


def _write_info(fd: int, path: Path, info: dict[str, Any]) -> None:
    # no fsync: the kernel lock is what counts, the text only names the holder
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))
    except OSError as exc:
        exc.filename = str(path)
        raise


@contextlib.contextmanager
def _flock(path: Path, what: str) -> Iterator[dict[str, Any]]:
    for _ in range(_TRIES):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy(path, what, _holder_of(path)) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder before us removed the file after we opened it: lock the new one
            os.close(fd)
            continue
        break
    else:
        raise SyncTalkError(f"could not take the lock {path} of {what}: it keeps being replaced")
    try:
        left = read_lock(path)
        if left:  # a holder that finishes removes the file: this one was killed
            _stale_notice(path, what, left)
        info = _holder_info()
        _write_info(fd, path, info)
        yield info
    finally:
        # remove the file while still holding the lock, so no one locks a file about to vanish
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                os.unlink(path)
        os.close(fd)


@contextlib.contextmanager
def _exclusive_create(path: Path, what: str) -> Iterator[dict[str, Any]]:
    host = socket.gethostname()
    for _ in range(_TRIES):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            info = _holder_of(path)
            pid = info.get("pid") if info else None
            if info is None or info.get("host") != host or not isinstance(pid, int) or pid_alive(pid):
                hint = f"; if that process is gone, delete {path}" if info and info.get("host") != host else ""
                raise _busy(path, what, info, hint) from None
            # stale: move it aside first, so of two takers only one removes it
            aside = path.with_name(f"{path.name}.stale.{os.getpid()}")
            try:
                os.replace(path, aside)
            except FileNotFoundError:
                continue
            _stale_notice(path, what, info)
            with contextlib.suppress(OSError):
                os.unlink(aside)
            continue
        break
    else:
        raise SyncTalkError(f"could not take the lock {path} of {what}: it keeps being replaced")
    info = _holder_info()
    try:
        _write_info(fd, path, info)
        yield info
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            if (read_lock(path) or {}).get("pid") == info["pid"]:
                os.unlink(path)


@contextlib.contextmanager
def hold_lock(path: str | os.PathLike, what: str) -> Iterator[dict[str, Any]]:
    """Hold the lock file `path` for the block (`what` names the work in messages); yield the holder info.

    A second holder gets a SyncTalkError naming the first (pid, host, since when, command); a lock
    left by a dead holder is taken over with a notice on stderr.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SyncTalkError(f"{path.parent} is a file, not a folder") from None
    with (_flock if _HAVE_FLOCK else _exclusive_create)(path, what) as info:
        yield info
