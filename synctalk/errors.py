"""The one exception type the command line turns into a clean message and a non-zero exit."""

from __future__ import annotations

import errno


class SyncTalkError(Exception):
    """A user-facing error: bad input, missing weights, a mismatched checkpoint."""


def os_error_message(exc: OSError) -> str:
    """A file-system error in words: which file, what went wrong, what to do (no traceback needed)."""
    path = exc.filename if exc.filename is not None else "a file"
    if exc.filename2 is not None:
        path = f"{exc.filename} → {exc.filename2}"
    code = exc.errno
    if code == errno.ENOSPC or code == getattr(errno, "EDQUOT", -1):
        return (f"no space left on the device while writing {path}: free some space (or point --dataset_dir / "
                f"--checkpoint_dir elsewhere) and rerun; finished steps are kept")
    if isinstance(exc, PermissionError) or code in (errno.EACCES, errno.EPERM):
        return f"permission denied for {path}: the folder or file is not writable (or readable) by you"
    if code == errno.EROFS:
        return f"{path} is on a read-only file system"
    if isinstance(exc, NotADirectoryError) or code == errno.ENOTDIR:
        return f"{path}: a part of this path is a file, not a folder"
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a folder where a file was expected"
    if code == errno.ENAMETOOLONG:
        return f"file name too long: {path} (use a shorter --name or a shorter folder path)"
    if isinstance(exc, FileExistsError):
        import os

        if exc.filename is not None and os.path.isfile(exc.filename):
            return f"{path} is a file, not a folder"
        return f"{path} already exists and is in the way"
    if isinstance(exc, FileNotFoundError):
        return f"{path} not found"
    return f"{exc.strerror or exc}: {path}"
