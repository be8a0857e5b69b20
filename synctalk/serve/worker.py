"""The drawing threads of a device: every session's ready frames, batched across sessions.

Sessions `submit` frame jobs as soon as a frame's audio window is complete; a drawing thread takes the
oldest job's avatar and up to `max_batch` waiting jobs of that avatar (from any session), runs the UNet
once, pastes the mouths back and hands the frames to a small JPEG thread pool (cv2 releases the GIL),
which gives each frame back to its session through the job's callback. On a GPU two drawing threads
take turns, so one prepares its batch on the host (frames, crops, the paste-back's regions) while the
device runs the other's; a session puts its frames back in order whichever thread drew them.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class FrameJob:
    """One frame to draw: which avatar frame, which audio rows, how much of the mouth is generated."""

    avatar: Any
    index: int
    source: int
    weight: float  # 1: generated mouth, 0: the real frame, between: cross-fade
    rows: np.ndarray  # (window, *frame_shape) feature rows of the frame's audio window
    done: Callable[["FrameJob", bytes], None]
    failed: Callable[["FrameJob", BaseException], None]
    quality: int = 80
    owner: Any = None  # the session it belongs to (for the statistics)
    max_side: int = 0  # scale the sent frame down so its longer side is at most this (0: as is)
    max_lag: float = 0.0  # seconds: a frame taken later than this after t_ready shows the real mouth (0: off)
    t_ready: float = field(default_factory=time.perf_counter)  # when its audio window was complete
    t_taken: float = 0.0  # a drawing thread took it
    t_drawn: float = 0.0  # its batch was drawn (network + paste-back)
    t_encoded: float = 0.0  # its JPEG was made

    def stages_ms(self, t_sent: float) -> tuple[float, float, float, float]:
        """Where its latency went (ms): waiting for a drawing thread, drawing, JPEG, waiting to be sent."""
        return (1000.0 * (self.t_taken - self.t_ready), 1000.0 * (self.t_drawn - self.t_taken),
                1000.0 * (self.t_encoded - self.t_drawn), 1000.0 * (t_sent - self.t_encoded))


def batch_bucket(n: int, max_batch: int) -> int:
    """The network batch for n frames on a GPU: the next power of two (at most max_batch).

    Every new input shape costs kernel selection, so batches are padded to a few sizes; padding
    every batch to max_batch instead would spend most of the device on copies of one frame when
    the streams are few.
    """
    b = 1
    while b < n:
        b *= 2
    return max(n, min(b, max_batch))


def warm_up(avatar: Any, max_batch: int) -> None:
    """Draw once at every bucket size so no stream pays for kernel selection (GPU only).

    cuDNN's execution plans are cached per thread, so this must run on the thread that will draw
    (BatchWorker.warm runs it on each): warmed on another thread, the first batch of a new size on the
    drawing thread still spent seconds choosing kernels for every convolution.
    """
    import torch

    from ..render import paste_back_torch

    gen = avatar.generator
    if gen.device.type != "cuda":
        return
    spec = gen.spec
    b = 1
    while True:
        crops = np.repeat(avatar.crop(0)[None], b, axis=0)
        feats = torch.zeros((b * spec.window, *spec.frame_shape), device=gen.device)
        out = gen(crops, feats, [i * spec.window + spec.left for i in range(b)])
        if b == 1:
            paste_back_torch([avatar.frame(0).copy()], out, [avatar.boxes[0]], [1.0])
        if b >= max_batch:
            break
        b = min(2 * b, max_batch)
    torch.cuda.synchronize(gen.device)


def encode_jpeg(frame: np.ndarray, quality: int, max_side: int = 0) -> bytes:
    """BGR uint8 → JPEG bytes (scaled down first so the longer side is at most `max_side`, when given)."""
    import cv2

    h, w = frame.shape[:2]
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
        frame = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", frame, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


class BatchWorker:
    """The device's drawing threads; `submit` from any thread, callbacks run on the JPEG threads.

    `drawers`: how many drawing threads (the server runs two on a CUDA device, where the host work of
    one batch overlaps the device work of another, and one on the CPU, whose network uses every core).
    """

    def __init__(self, max_batch: int = 16, encoders: int = 0, drawers: int = 1) -> None:
        self.max_batch = max(1, int(max_batch))
        self._jobs: list[FrameJob] = []
        drawers = max(1, int(drawers))
        self._warm: list[list[tuple[Any, threading.Event, list]]] = [[] for _ in range(drawers)]  # per thread
        self._cond = threading.Condition()
        self._stop = False
        from ..device import usable_cpus

        # JPEG encoding is the CPU's share of every frame: half the cores, at most 8 (0 = that default)
        encoders = encoders or min(8, max(2, usable_cpus() // 2))
        self._pool = ThreadPoolExecutor(encoders, thread_name_prefix="synctalk-jpeg")
        self.batches = 0
        self.frames = 0
        self.shared_batches = 0  # batches that held frames of more than one stream
        self.shed = 0  # frames sent with the real mouth because they were already too late
        self.draw_seconds = 0.0  # the worker thread's time in draw (network + paste-back), all batches
        self.encode_seconds = 0.0  # JPEG encoding, summed over the encoder threads
        # the GPU path (bucketed batches, paste-back with torch on the device): None = when on CUDA
        self.gpu_path: bool | None = None
        self._stats = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"synctalk-serve-draw{i}", daemon=True)
                         for i in range(drawers)]
        self.drawers = len(self._threads)
        self.thread_batches = [0] * drawers  # batches each drawing thread drew
        for t in self._threads:
            t.start()

    def submit(self, jobs: list[FrameJob]) -> None:
        """Queue frames (in the order they must be drawn within their session)."""
        if not jobs:
            return
        with self._cond:
            self._jobs.extend(jobs)
            self._cond.notify()

    def warm(self, avatar: Any) -> None:
        """Warm `avatar` up on every drawing thread (warm_up), one thread after the other so the others
        keep drawing the streams already running; errors are raised here."""
        for queue in self._warm:
            done, errors = threading.Event(), []
            with self._cond:
                queue.append((avatar, done, errors))
                self._cond.notify_all()
            while not done.wait(0.5):
                if self._stop:
                    return
            if errors:
                raise errors[0]

    def pending(self) -> int:
        """Jobs waiting for the worker."""
        with self._cond:
            return len(self._jobs)

    def close(self) -> None:
        """Stop the threads after the batches in hand."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=10)
        self._pool.shutdown(wait=False)

    def _take(self, i: int) -> list[FrameJob] | tuple | None:
        """Thread i's next work: a warm-up request of its own, a batch, or None (stop)."""
        with self._cond:
            while not self._jobs and not self._warm[i] and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            if self._warm[i]:
                return self._warm[i].pop(0)
            # a viewer who has gone needs no more frames
            self._jobs = [j for j in self._jobs if not getattr(j.owner, "closed", False)]
            if not self._jobs:
                return []
            avatar = self._jobs[0].avatar
            batch, rest = [], []
            for j in self._jobs:
                (batch if j.avatar is avatar and len(batch) < self.max_batch else rest).append(j)
            self._jobs = rest
            if rest:  # another drawing thread can start on them now
                self._cond.notify()
            now = time.perf_counter()
            for j in batch:
                j.t_taken = now
            return batch

    def _run(self, i: int) -> None:
        while True:
            batch = self._take(i)
            if batch is None:
                return
            if isinstance(batch, tuple):  # a warm-up request for this thread
                avatar, done, errors = batch
                try:
                    warm_up(avatar, self.max_batch)
                except BaseException as exc:
                    errors.append(exc)
                done.set()
                continue
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                frames = self.draw(batch)
            except BaseException as exc:  # handed to each session; the worker keeps serving the others
                for j in batch:
                    j.failed(j, exc)
                continue
            with self._stats:
                self.draw_seconds += time.perf_counter() - t0
                self.batches += 1
                self.thread_batches[i] += 1
                self.frames += len(batch)
                self.shared_batches += len({id(j.owner) for j in batch}) > 1
            # encoding overlaps the next batch on the device; sessions put frames back in order
            for j, f in zip(batch, frames):
                self._pool.submit(self._encode, j, f)

    def _encode(self, job: FrameJob, frame: np.ndarray) -> None:
        t0 = time.perf_counter()
        try:
            jpeg = encode_jpeg(frame, job.quality, job.max_side)
        except BaseException as exc:
            job.failed(job, exc)
            return
        job.t_encoded = time.perf_counter()
        self.encode_seconds += job.t_encoded - t0  # a statistic: a lost update under threads is harmless
        job.done(job, jpeg)

    def draw(self, batch: list[FrameJob]) -> list[np.ndarray]:
        """Frames of one avatar (BGR, in job order): the UNet on the generated ones, then paste-back."""
        import torch

        from ..render import crops_to_uint8, paste_back, paste_back_torch

        avatar = batch[0].avatar
        gen = avatar.generator
        spec = gen.spec
        frames = [avatar.frame(j.source).copy() for j in batch]
        now = time.perf_counter()
        # a device that has fallen behind a live stream sheds work instead of falling further behind
        late = [j.max_lag > 0 and now - j.t_ready > j.max_lag for j in batch]
        with self._stats:
            self.shed += sum(late)
        todo = [i for i, j in enumerate(batch) if j.weight > 0 and not late[i]]
        if todo:
            crops = np.stack([avatar.crop(batch[i].source) for i in todo])
            # each job's window laid end to end: row i·window + left is job i's frame, so the
            # registry's window gather picks exactly each job's own rows
            rows = np.concatenate([batch[i].rows for i in todo])
            feats = torch.from_numpy(rows).to(gen.device)
            idx = [i * spec.window + spec.left for i in range(len(todo))]
            gpu = self.gpu_path if self.gpu_path is not None else gen.device.type == "cuda"
            if gpu:
                fill = batch_bucket(len(todo), self.max_batch) - len(todo)
                crops = np.concatenate([crops, np.repeat(crops[-1:], fill, axis=0)])
                idx = idx + [idx[-1]] * fill
            generated = gen(crops, feats, idx)[:len(todo)]
            sel = [frames[i] for i in todo]
            boxes = [avatar.boxes[batch[i].source] for i in todo]
            weights = [float(batch[i].weight) for i in todo]
            if gpu:
                paste_back_torch(sel, generated, boxes, weights)
            else:
                for f, c, b, w in zip(sel, crops_to_uint8(generated), boxes, weights):
                    paste_back(f, c, b, w)
        now = time.perf_counter()
        for j in batch:
            j.t_drawn = now
        return frames
