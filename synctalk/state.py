"""The dataset's .training_state.json: one writer, atomic updates, one section per pipeline step.

Sections: "preprocessing", "syncnet_training", "main_training". Each is a dict; a step is done
when its section has "completed": true.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from .errors import SyncTalkError
from .fileio import write_json_atomic

# the section names, one home: use these constants, not the strings
PREPROCESSING = "preprocessing"
SYNCNET = "syncnet_training"
MAIN = "main_training"
SECTIONS = (PREPROCESSING, SYNCNET, MAIN)
VERSION = 1


class TrainingState:
    """Read-modify-write access to one dataset's state file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict[str, Any]:
        """The whole state (an empty skeleton when there is no file yet)."""
        if not self.path.exists():
            return {"version": VERSION}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SyncTalkError(f"state file {self.path} is not valid JSON ({exc}); delete it to start over") from exc
        if not isinstance(data, dict):
            raise SyncTalkError(f"state file {self.path} does not hold a JSON object")
        return data

    def section(self, name: str) -> dict[str, Any]:
        """One step's record ({} when absent)."""
        return dict(self.load().get(name) or {})

    def is_complete(self, name: str) -> bool:
        """Whether a step is recorded as finished."""
        return bool(self.section(name).get("completed"))

    def update(self, name: str, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into a section and write the file atomically; return the new section."""
        data = self.load()
        sec = dict(data.get(name) or {})
        sec.update(fields)
        sec["updated_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        data[name] = sec
        data["version"] = VERSION
        write_json_atomic(self.path, data)
        return sec

    def set_top(self, **fields: Any) -> None:
        """Set top-level keys (fps, landmarker, ...)."""
        data = self.load()
        data.update(fields)
        write_json_atomic(self.path, data)

    def reset(self, name: str) -> None:
        """Forget a step (its files are left alone)."""
        data = self.load()
        data.pop(name, None)
        write_json_atomic(self.path, data)
