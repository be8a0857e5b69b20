"""The dataset's .training_state.json: one writer, atomic updates, one section per pipeline step.

Sections: "preprocessing", "syncnet_training", "main_training". Each is a dict; a step is done
when its section has "completed": true. Every read checks the file against the shape below, so a
hand-edited or damaged file is one message saying what is wrong, never a crash further on. Paths
are stored absolute (they must not depend on the folder a command ran from); a relative path is
read relative to the dataset folder when it exists there, else as it was written.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from .errors import SyncTalkError, os_error_message
from .fileio import write_json_atomic

# the section names, one home: use these constants, not the strings
PREPROCESSING = "preprocessing"
SYNCNET = "syncnet_training"
MAIN = "main_training"
SECTIONS = (PREPROCESSING, SYNCNET, MAIN)
VERSION = 1

# the expected JSON types of known keys; unknown keys are allowed (newer versions add some)
_NUM = (int, float)
_STR_OR_NONE = (str, type(None))
TOP_KEYS: dict[str, tuple[type, ...]] = {
    "version": (int,), "fps": _NUM, "source_fps": _NUM + (type(None),), "source_variable_fps": (bool,),
    "duration": _NUM, "source_video": (str,), "landmarker": (str,), "asr_model": (str,),
}
SECTION_KEYS: dict[str, dict[str, tuple[type, ...]]] = {
    PREPROCESSING: {
        "completed": (bool,), "frames_done": (bool,), "frame_count": (int,), "audio_done": (bool,),
        "sample_rate": (int,), "landmarks_done": (bool,), "landmarker": (str,), "landmark_count": (int,),
        "no_face_frames": (int,), "landmark_points": (int,), "crop_boxes_done": (bool,), "topology": (str,),
        "frame_size": (list,), "crop_cache_done": (bool,), "crop_cache": (str,), "feature_files": (dict,),
        "asr_models": (list,), "lip_activity": (dict,), "updated_at": (str,),
    },
    SYNCNET: {
        "completed": (bool,), "checkpoint": (str,), "latest": (str,), "reused_from": _STR_OR_NONE,
        "asr": (str,), "width": (str,), "epochs": (int,), "target_epochs": (int,), "checkpoints": (list,),
        "metrics": (dict,), "best_metrics": (dict,), "updated_at": (str,),
    },
    MAIN: {
        "completed": (bool,), "latest": (str,), "best": (str,), "run_dir": (str,),
        "syncnet_checkpoint": _STR_OR_NONE, "asr": (str,), "width": (str,), "epochs": (int,),
        "target_epochs": (int,), "checkpoints": (list,), "metrics": (dict,), "best_metrics": (dict,),
        "updated_at": (str,),
    },
}
# lip_activity (synctalk.lipcheck), read by status and the trainers
LIP_KEYS: dict[str, tuple[type, ...]] = {
    "aperture_cv": _NUM, "audio_corr": _NUM + (type(None),), "audio_lag_frames": (int, type(None)),
    "ok": (bool, type(None)), "problems": (list,),
}
# keys that hold file paths (a list of them for "checkpoints")
PATH_KEYS = frozenset({"source_video", "checkpoint", "latest", "best", "reused_from", "run_dir",
                       "syncnet_checkpoint", "checkpoints"})

_TYPE_NAMES = {bool: "true/false", int: "a whole number", float: "a number", str: "a string", list: "a list",
               dict: "an object", type(None): "null"}


def _json_type(value: Any) -> str:
    """How a JSON value reads in a message: 'true', 'null', 'a string ("yes")', 'a list'."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    kind = {int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__)
    return f"{kind} ({json.dumps(value)[:40]})" if isinstance(value, (str, int, float)) else kind


def _type_ok(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # JSON true is not a number here
        return bool in allowed
    if isinstance(value, int) and float in allowed:
        return True
    return isinstance(value, allowed)


def _expected(allowed: tuple[type, ...]) -> str:
    names = []
    for t in allowed:
        name = _TYPE_NAMES[t]
        if name not in names and not (t is int and float in allowed):
            names.append(name)
    return " or ".join(names)


def shape_problems(data: Any) -> list[str]:
    """What is wrong with the shape of a parsed state file ([] when nothing)."""
    if not isinstance(data, dict):
        return [f"the file must hold a JSON object, found {_json_type(data)}"]
    problems = []

    def check(where: str, obj: dict, keys: dict[str, tuple[type, ...]]) -> None:
        for key, allowed in keys.items():
            if key in obj and not _type_ok(obj[key], allowed):
                problems.append(f"{where}{key!r} must be {_expected(allowed)}, found {_json_type(obj[key])}")

    check("", data, TOP_KEYS)
    for name, keys in SECTION_KEYS.items():
        if name not in data or data[name] is None:
            continue
        sec = data[name]
        if not isinstance(sec, dict):
            problems.append(f"section {name!r} must be an object, found {_json_type(sec)}")
            continue
        check(f"{name}.", sec, keys)
        for key in ("checkpoints", "asr_models"):
            if isinstance(sec.get(key), list) and not all(isinstance(v, str) for v in sec[key]):
                problems.append(f"{name}.{key!r} must be a list of strings")
        if name == PREPROCESSING:
            files = sec.get("feature_files")
            if isinstance(files, dict) and not all(isinstance(v, str) for v in files.values()):
                problems.append(f"{name}.'feature_files' must map audio model names to file names")
            if isinstance(sec.get("lip_activity"), dict):
                check(f"{name}.lip_activity.", sec["lip_activity"], LIP_KEYS)
    return problems


def store_path(value: str | os.PathLike) -> str:
    """A path as the state file stores it: absolute, so it means the same from any working folder."""
    return os.path.abspath(os.fspath(value))


class TrainingState:
    """Read-modify-write access to one dataset's state file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _fail(self, problems: list[str]) -> SyncTalkError:
        listed = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        return SyncTalkError(
            f"state file {self.path} is damaged: {listed}. Fix it by hand, or delete the file (or only the broken "
            f"section) and rerun the step; the files already made are checked and reused where they can be"
        )

    def load(self) -> dict[str, Any]:
        """The whole state (an empty skeleton when there is no file yet), checked against its shape."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"version": VERSION}
        except IsADirectoryError:
            raise SyncTalkError(f"state file {self.path} is a folder; remove it") from None
        except UnicodeDecodeError:
            raise self._fail(["it is not UTF-8 text"]) from None
        except OSError as exc:
            raise SyncTalkError(f"cannot read the state file: {os_error_message(exc)}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SyncTalkError(f"state file {self.path} is not valid JSON ({exc}); delete it to start over") from None
        problems = shape_problems(data)
        if problems:
            raise self._fail(problems)
        return data

    def _read_path(self, value: Any) -> Any:
        """A stored path as this process should open it (see the module docstring)."""
        if not isinstance(value, str) or not value or os.path.isabs(value):
            return value
        beside = self.path.parent / value
        return str(beside) if beside.exists() else value

    def section(self, name: str) -> dict[str, Any]:
        """One step's record ({} when absent), its paths readable from this working folder."""
        sec = dict(self.load().get(name) or {})
        for key in PATH_KEYS & sec.keys():
            sec[key] = [self._read_path(v) for v in sec[key]] if isinstance(sec[key], list) else self._read_path(sec[key])
        return sec

    def is_complete(self, name: str) -> bool:
        """Whether a step is recorded as finished."""
        return bool(self.section(name).get("completed"))

    @staticmethod
    def _store(fields: dict[str, Any]) -> dict[str, Any]:
        out = dict(fields)
        for key in PATH_KEYS & out.keys():
            v = out[key]
            if isinstance(v, (list, tuple)):
                out[key] = [store_path(p) if p else p for p in v]
            elif isinstance(v, (str, os.PathLike)) and os.fspath(v):
                out[key] = store_path(v)
        return out

    def update(self, name: str, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into a section and write the file atomically; return the new section."""
        data = self.load()
        sec = dict(data.get(name) or {})
        sec.update(self._store(fields))
        sec["updated_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        data[name] = sec
        data["version"] = VERSION
        write_json_atomic(self.path, data)
        return sec

    def set_top(self, **fields: Any) -> None:
        """Set top-level keys (fps, landmarker, ...)."""
        data = self.load()
        data.update(self._store(fields))
        write_json_atomic(self.path, data)

    def reset(self, name: str) -> None:
        """Forget a step (its files are left alone)."""
        data = self.load()
        data.pop(name, None)
        write_json_atomic(self.path, data)
