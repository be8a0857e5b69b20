"""One viewer's stream: audio in, features as it arrives, frames submitted to the worker, sent in order.

Frame k of the stream is the audio from sample k·640 on (of the audio the client sent, utterances laid
end to end, each rounded up to a whole frame). Its index, not the wall clock, says which audio it
shows, so the two cannot drift apart. When no audio is waiting, idle frames (the avatar's own frames,
walking on) keep the picture alive at 25 fps. The walk through the avatar's frames is one sequence for
speech and idle frames alike, so the body never jumps.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from typing import Any, Awaitable, Callable

import numpy as np

from ..audio.activity import SILENCE_FLOOR, SILENCE_REL_DB  # below the speech level by this much, and -55 dBFS
from ..constants import CROSSFADE_FRAMES, FPS, SAMPLE_RATE, SPEECH_LEAD_FRAMES
from .features import HOP, StreamFeatures, lookahead_frames, min_delay_ms
from .protocol import KIND_IDLE, KIND_SPEECH, pack_frame
from .worker import BatchWorker, FrameJob

FRAME_S = 1.0 / FPS
# silence in a stream, by the rule file renders use, decided frame by frame inside the look-ahead the
# audio window already waits for: the mouth is generated from SPEECH_LEAD frames before a loud frame
# to SPEECH_LEAD frames after it, cross-faded to the real frame over CROSSFADE_FRAMES outside that
# (so pauses of up to 2·SPEECH_LEAD frames keep the generated mouth)
SPEECH_LEAD = SPEECH_LEAD_FRAMES  # frames the lips lead (and trail) the sound
LEVEL_DECAY = 0.9995  # per frame: the speech level forgets a loud moment over about a minute
IDLE_AFTER_S = 0.2  # inside an utterance, wait this long for audio before showing idle frames


class SilenceGate:
    """Per frame of a stream: how much of the mouth is generated (1) or the real frame (0).

    Frame k's weight reads the loudness of frames up to k + SPEECH_LEAD + CROSSFADE_FRAMES + 1, which
    a frame's audio window (8 frames of look-ahead) has always brought already.
    """

    REACH = SPEECH_LEAD + CROSSFADE_FRAMES + 1

    def __init__(self) -> None:
        self.loud: list[bool] = []  # loudness of frames start.. (older ones are forgotten)
        self.start = 0
        self._rest = np.zeros(0, dtype=np.float32)
        self.level = 0.0

    def push(self, audio: np.ndarray) -> None:
        """Add samples (RMS and loudness per whole frame)."""
        x = np.concatenate([self._rest, np.asarray(audio, dtype=np.float32)])
        n = x.size // HOP
        if n:
            r = np.sqrt(np.mean(x[:n * HOP].reshape(n, HOP).astype(np.float64) ** 2, axis=1))
            for v in r.tolist():
                self.level = max(self.level * LEVEL_DECAY, v)
                self.loud.append(v >= max(SILENCE_FLOOR, self.level * 10 ** (-SILENCE_REL_DB / 20.0)))
        self._rest = x[n * HOP:]

    def end(self) -> None:
        """Count the last partial frame."""
        if self._rest.size:
            self.push(np.zeros(HOP - self._rest.size, dtype=np.float32))

    @property
    def frames(self) -> int:
        """Whole frames pushed so far."""
        return self.start + len(self.loud)

    def forget_before(self, k: int) -> None:
        """Frame k is the oldest whose weight is still to be asked: keep only what its reach needs."""
        drop = k - self.REACH - self.start
        if drop > 0:
            del self.loud[:drop]
            self.start += drop

    def weight(self, k: int) -> float:
        """Weight of frame k: 1 within SPEECH_LEAD frames of a loud frame, easing to 0 beyond."""
        lo, hi = max(self.start, k - self.REACH), min(self.frames, k + self.REACH + 1)
        near = [abs(i - k) for i in range(lo, hi) if self.loud[i - self.start]]
        if not near:
            return 0.0
        d = min(near)
        return 1.0 if d <= SPEECH_LEAD else max(0.0, 1.0 - (d - SPEECH_LEAD) / (CROSSFADE_FRAMES + 1))


class StreamSession:
    """The state of one WebSocket stream; all methods run on the event loop's thread."""

    def __init__(self, avatar: Any, worker: BatchWorker, send: Callable[[Any], Awaitable[None]], *,
                 pace: str = "realtime", quality: int = 80, start_frame: int = 0, max_side: int = 0,
                 max_lag_ms: float = 0.0, models_dir: Any = None) -> None:
        from ..errors import SyncTalkError
        from ..render import pingpong_indices

        if pace not in ("realtime", "asap"):
            raise SyncTalkError(f"pace must be 'realtime' or 'asap', got {pace!r}")
        if not 1 <= int(quality) <= 100:
            raise SyncTalkError(f"quality must be 1..100, got {quality!r}")
        if not (int(max_side) == 0 or 16 <= int(max_side) <= 8192):
            raise SyncTalkError(f"max_side must be 0 (full size) or 16..8192, got {max_side!r}")
        self.max_side = int(max_side)
        if not 0 <= float(max_lag_ms) <= 60_000:
            raise SyncTalkError(f"max_lag_ms must be 0 (off) to 60000, got {max_lag_ms!r}")
        self.max_lag = float(max_lag_ms) / 1000.0
        self.avatar = avatar
        self.worker = worker
        self.send = send
        self.pace = pace
        self.quality = int(quality)
        self.models_dir = models_dir
        self.loop = asyncio.get_running_loop()
        n = avatar.num_frames
        period = max(1, 2 * (n - 1))
        self._walk_table = pingpong_indices(period, n, int(start_frame) % n if n else 0)
        self.walk = 0
        self._new_utterance(0)
        self.next_index = 0  # next frame to submit
        self.next_send = 0  # next speech frame to send
        self.seq = 0
        self._done: dict[int, tuple[FrameJob, bytes]] = {}
        self._ends: deque[int] = deque()  # frame counts at which an utterance's "end" is due
        self.wake = asyncio.Event()
        self.closed = False
        self.error: BaseException | None = None
        self.latencies_ms: list[float] = []  # window complete → frame sent, per speech frame
        self.stages_ms: list[tuple[float, ...]] = []  # per speech frame: where that time went (FrameJob.stages_ms)
        self.sent_speech = 0
        self.sent_idle = 0

    # ---------------------------------------------------------------- audio in

    def _new_utterance(self, offset: int) -> None:
        self.offset = offset
        self.features = StreamFeatures(self.avatar.asr, models_dir=self.models_dir, device=self.avatar.device)
        self.gate = SilenceGate()
        self.open = False  # audio received since the last end

    def info(self) -> dict:
        """The "ready" message."""
        asr = self.avatar.asr
        info = {"type": "ready", **self.avatar.describe(), "fps": FPS, "sample_rate": SAMPLE_RATE,
                "lookahead_frames": lookahead_frames(asr), "min_delay_ms": min_delay_ms(asr), "pace": self.pace}
        w, h = self.avatar.width, self.avatar.height
        if self.max_side and max(w, h) > self.max_side:  # the size of the frames this stream sends
            scale = self.max_side / max(w, h)
            info["width"], info["height"] = max(1, round(w * scale)), max(1, round(h * scale))
        return info

    def push_pcm(self, data: bytes) -> None:
        """Add one binary audio message (s16le, already checked) and submit every frame it completes."""
        audio = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        t = time.perf_counter()
        self.features.push(audio)
        self.gate.push(audio)
        self.open = True
        self._submit(t)

    def end_utterance(self) -> None:
        """The client says the utterance is over: make its last frames, then start the next one."""
        self.gate.end()
        count = self.features.end()
        self._submit(time.perf_counter())
        self._ends.append(self.offset + count)
        self._new_utterance(self.offset + count)  # the caller wakes the sender (on the loop's thread)

    def _submit(self, t_ready: float) -> None:
        ready = self.offset + self.features.ready_frames()
        jobs = []
        period = len(self._walk_table)
        for k in range(self.next_index, ready):
            rows = self.features.window(k - self.offset)
            src = int(self._walk_table[self.walk % period])
            self.walk += 1
            jobs.append(FrameJob(self.avatar, k, src, self.gate.weight(k - self.offset), rows,
                                 self._done_cb, self._fail_cb, self.quality, self, self.max_side, self.max_lag,
                                 t_ready))
        self.next_index = max(self.next_index, ready)
        self.features.forget_before(self.next_index - self.offset)
        self.gate.forget_before(self.next_index - self.offset)
        self.worker.submit(jobs)

    # ---------------------------------------------------------------- frames back (worker thread → loop)

    def _done_cb(self, job: FrameJob, jpeg: bytes) -> None:
        self.loop.call_soon_threadsafe(self._deliver, job, jpeg)

    def _fail_cb(self, job: FrameJob, exc: BaseException) -> None:
        self.loop.call_soon_threadsafe(self._fail, exc)

    def _deliver(self, job: FrameJob, jpeg: bytes) -> None:
        self._done[job.index] = (job, jpeg)
        self.wake.set()

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self.wake.set()

    # ---------------------------------------------------------------- frames out

    async def run_sender(self) -> None:
        """Send speech frames in order (paced at 25 fps when pace is realtime) and idle frames between."""
        last_sent = last_speech = -math.inf
        anchor: tuple[float, int] | None = None
        while not self.closed:
            self.wake.clear()
            if self.error is not None:
                await self.send(json.dumps({"type": "error", "message": f"drawing frames failed: {self.error}"}))
                return
            now = self.loop.time()
            k = self.next_send
            if k in self._done:
                job, jpeg = self._done.pop(k)
                if self.pace == "realtime":
                    if anchor is None or now > anchor[0] + (k - anchor[1] + 1) * FRAME_S:
                        anchor = (now, k)  # late or first: send now and pace from here
                    due = anchor[0] + (k - anchor[1]) * FRAME_S
                    if due > now:
                        await asyncio.sleep(due - now)
                await self.send(pack_frame(KIND_SPEECH, self.seq, k, job.source, jpeg, FPS))
                t_sent = time.perf_counter()
                self.latencies_ms.append(1000.0 * (t_sent - job.t_ready))
                self.stages_ms.append(job.stages_ms(t_sent))
                self.seq += 1
                self.sent_speech += 1
                self.next_send += 1
                last_sent = last_speech = self.loop.time()
                await self._send_ends()
                continue
            await self._send_ends()
            busy = self.next_send < self.next_index
            wait_for_audio = IDLE_AFTER_S if self.open else FRAME_S
            if not busy and now - last_speech >= wait_for_audio and now - last_sent >= FRAME_S * 0.999:
                src = int(self._walk_table[self.walk % len(self._walk_table)])
                self.walk += 1
                jpeg = await self.loop.run_in_executor(None, self._idle_jpeg, src)
                await self.send(pack_frame(KIND_IDLE, self.seq, -1, src, jpeg, FPS))
                self.seq += 1
                self.sent_idle += 1
                last_sent = self.loop.time()
                anchor = None
            timeout = FRAME_S if busy else max(0.001, last_sent + FRAME_S - self.loop.time())
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=timeout)
            except asyncio.TimeoutError:
                pass

    def _idle_jpeg(self, src: int) -> bytes:
        """The resting avatar's frame: the stored JPEG, or re-encoded smaller when max_side asks it."""
        if self.max_side and max(self.avatar.width, self.avatar.height) > self.max_side:
            from .worker import encode_jpeg

            return encode_jpeg(self.avatar.frame(src), self.quality, self.max_side)
        return self.avatar.real_jpeg(src)

    async def _send_ends(self) -> None:
        while self._ends and self._ends[0] <= self.next_send:
            self._ends.popleft()
            await self.send(json.dumps({"type": "end", "frames": self.next_send}))

    def close(self) -> None:
        """Stop sending (frames still in the worker are dropped when they come back)."""
        self.closed = True
        self.wake.set()
