"""Background work of the server, one job at a time on its device: preprocessing and training as
subprocesses of `python -m synctalk.cli ...` (their logs kept), and file renders (upload → MP4).

Progress comes from where the commands already report it: the dataset's state file (what is done) and
the last progress line of the log (tqdm's percentage).
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import SyncTalkError
from ..layout import validate_name

# commands a job may run, and the folder flags each takes
SUBPROCESS_KINDS: dict[str, tuple[str, ...]] = {
    "preprocess": ("--dataset_dir",),
    "train": ("--dataset_dir", "--checkpoint_dir"),
    "train-syncnet": ("--dataset_dir", "--checkpoint_dir"),
    "train-unet": ("--dataset_dir", "--checkpoint_dir"),
    "eval": ("--dataset_dir", "--checkpoint_dir"),
}
KINDS = tuple(SUBPROCESS_KINDS) + ("render",)
MAX_ARGS = 64
_PERCENT = re.compile(r"(\d{1,3})%\|")
_SAFE_ARG = re.compile(r"^[\w.,:=+\-/ ]{1,300}$")


@dataclass
class Job:
    """One piece of background work and what is known about it."""

    id: int
    kind: str
    name: str
    args: list[str]
    log: Path
    status: str = "queued"  # queued, running, done, failed, cancelled
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    returncode: int | None = None
    error: str | None = None
    output: Path | None = None  # a render's MP4
    audio: Path | None = None  # a render's input
    after: Callable[["Job"], None] | None = None
    _proc: Any = None

    def public(self) -> dict:
        """The job as the API shows it."""
        return {"id": self.id, "kind": self.kind, "name": self.name, "args": self.args, "status": self.status,
                "created": self.created, "started": self.started, "finished": self.finished,
                "returncode": self.returncode, "error": self.error,
                "output": f"/api/jobs/{self.id}/output" if self.output and self.status == "done" else None}


def check_args(args: Any) -> list[str]:
    """Extra command-line arguments of a job: a list of plain strings (never a shell line)."""
    if args is None:
        return []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise SyncTalkError("job args must be a list of strings")
    if len(args) > MAX_ARGS:
        raise SyncTalkError(f"job has {len(args)} args, at most {MAX_ARGS} are allowed")
    for a in args:
        if not _SAFE_ARG.match(a):
            raise SyncTalkError(f"job argument {a!r} holds characters that are not allowed")
        if a.split("=")[0] in ("--dataset_dir", "--checkpoint_dir", "--name"):
            raise SyncTalkError(f"job argument {a!r} is set by the server")
    return list(args)


def log_progress(log: Path, lines: int = 12) -> tuple[float | None, list[str]]:
    """(last tqdm percentage, last lines) of a job log."""
    if not log.exists():
        return None, []
    with open(log, "rb") as fh:
        fh.seek(max(0, log.stat().st_size - 16384))
        text = fh.read().decode("utf-8", "replace")
    parts = [p.strip() for p in re.split(r"[\r\n]+", text) if p.strip()]
    pct = None
    for p in reversed(parts):
        m = _PERCENT.search(p)
        if m:
            pct = float(m.group(1))
            break
    # tqdm redraws one line many times: keep the last version of each bar
    tail: list[str] = []
    for p in parts:
        if tail and _PERCENT.search(p) and _PERCENT.search(tail[-1]) and p.split(":")[0] == tail[-1].split(":")[0]:
            tail[-1] = p
        else:
            tail.append(p)
    return pct, tail[-lines:]


class JobRunner:
    """A queue of jobs run one after another by one thread (one device, one job at a time)."""

    def __init__(self, jobs_dir: Path, dataset_dir: Path, checkpoint_dir: Path, device: str = "auto") -> None:
        self.jobs_dir = Path(jobs_dir)
        self.dataset_dir = Path(dataset_dir)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.device = device
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._queue: list[Job] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="synctalk-serve-jobs", daemon=True)
        self._thread.start()

    def submit(self, kind: str, name: str, args: Any = None, *, audio: Path | None = None,
               after: Callable[[Job], None] | None = None) -> Job:
        """Queue a job; SyncTalkError for an unknown kind, a bad name or bad arguments."""
        if kind not in KINDS:
            raise SyncTalkError(f"unknown job kind {kind!r}: choose one of {', '.join(KINDS)}")
        validate_name(name)
        args = check_args(args)
        with self._cond:
            jid = next(self._ids)
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
            job = Job(jid, kind, name, args, self.jobs_dir / f"job_{jid:05d}_{kind}_{name}.log", audio=audio,
                      after=after)
            self.jobs[jid] = job
            self._queue.append(job)
            self._cond.notify()
        return job

    def command(self, job: Job) -> list[str]:
        """The argv of a subprocess job."""
        argv = [sys.executable, "-m", "synctalk.cli", job.kind, "--name", job.name]
        for flag in SUBPROCESS_KINDS[job.kind]:
            argv += [flag, str(self.dataset_dir if flag == "--dataset_dir" else self.checkpoint_dir)]
        return argv + job.args

    def cancel(self, jid: int) -> Job:
        """Stop a queued or running job."""
        job = self.get(jid)
        with self._cond:
            if job.status == "queued":
                self._queue.remove(job)
                job.status, job.finished = "cancelled", time.time()
            elif job.status == "running" and job._proc is not None:
                job.status = "cancelled"
                job._proc.terminate()
        return job

    def get(self, jid: int) -> Job:
        """A job by id."""
        if jid not in self.jobs:
            raise SyncTalkError(f"no job {jid}")
        return self.jobs[jid]

    def progress(self, job: Job) -> dict:
        """The job, its log's last percentage and lines, and the person's state-file sections."""
        from ..layout import dataset_layout
        from ..state import TrainingState

        pct, tail = log_progress(job.log)
        state: dict = {}
        layout = dataset_layout(self.dataset_dir, job.name)
        if layout.state_file.exists():
            try:
                state = TrainingState(layout.state_file).load()
            except SyncTalkError as exc:
                state = {"error": str(exc)}
        return {**job.public(), "percent": 100.0 if job.status == "done" else pct, "log": tail, "state": state}

    def close(self) -> None:
        """Stop the runner (a running subprocess is terminated)."""
        with self._cond:
            self._stop = True
            for j in self.jobs.values():
                if j._proc is not None and j._proc.poll() is None:
                    j._proc.terminate()
            self._cond.notify()

    def wait(self, jid: int, timeout: float = 600.0) -> Job:
        """Block until a job has finished (for scripts and tests)."""
        end = time.monotonic() + timeout
        job = self.get(jid)
        while job.status in ("queued", "running") and time.monotonic() < end:
            time.sleep(0.1)
        return job

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job = self._queue.pop(0)
                job.status, job.started = "running", time.time()
            try:
                if job.kind == "render":
                    self._render(job)
                else:
                    self._subprocess(job)
            except SyncTalkError as exc:
                job.status, job.error = "failed", str(exc)
            except Exception as exc:  # reported in the job, the runner goes on with the next one
                job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
            job.finished = time.time()
            if job.after is not None and job.status == "done":
                try:
                    job.after(job)
                except Exception as exc:
                    job.error = f"after the job: {exc}"

    def _subprocess(self, job: Job) -> None:
        import synctalk

        env = dict(os.environ)
        root = str(Path(synctalk.__file__).resolve().parents[1])  # run this very code, not another install
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        argv = self.command(job)
        with open(job.log, "ab") as log:
            log.write(("$ " + " ".join(argv[1:]) + "\n").encode())
            log.flush()
            job._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL)
            rc = job._proc.wait()
        job.returncode = rc
        if job.status == "cancelled":
            return
        if rc == 0:
            job.status = "done"
        else:
            _pct, tail = log_progress(job.log, 3)
            job.status, job.error = "failed", f"exit code {rc}: " + " | ".join(tail)

    def _render(self, job: Job) -> None:
        from ..render import render

        out = self.jobs_dir / f"render_{job.id:05d}_{job.name}.mp4"
        with open(job.log, "a", encoding="utf-8") as log:
            log.write(f"render {job.name} {job.audio}\n")
        result = render(job.name, job.audio, out, dataset_dir=self.dataset_dir, checkpoint_dir=self.checkpoint_dir,
                        device=self.device, progress=False)
        with open(job.log, "a", encoding="utf-8") as log:
            log.write(f"wrote {result.frames} frames in {result.seconds:.1f} s ({result.fps:.1f} fps)\n")
        job.output = result.output
        job.status = "done"
