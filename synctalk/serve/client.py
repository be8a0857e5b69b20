"""A Python client of the streaming protocol (what a TTS pipeline would do; the tests and benchmark use it)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..constants import SAMPLE_RATE
from .protocol import FrameMessage, unpack_frame


@dataclass
class StreamResult:
    """What came back for one stream: the ready message, frames in arrival order, their arrival times."""

    ready: dict
    frames: list[FrameMessage] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)  # perf_counter at arrival
    sent_at: list[float] = field(default_factory=list)  # perf_counter when each audio chunk was sent
    sent_samples: list[int] = field(default_factory=list)  # samples sent once that chunk was out
    ends: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def sent_time_of(self, sample: int) -> float:
        """When the chunk holding audio sample `sample` had been sent (the last one for samples past the end)."""
        import bisect

        i = bisect.bisect_right(self.sent_samples, sample)
        return self.sent_at[min(i, len(self.sent_at) - 1)]

    @property
    def speech(self) -> list[FrameMessage]:
        """The speech frames, in arrival order."""
        return [f for f in self.frames if f.kind == 1]


def to_pcm(audio: np.ndarray) -> bytes:
    """Float audio in [-1, 1] → s16le bytes."""
    return (np.clip(np.asarray(audio, dtype=np.float32), -1, 1) * 32767).astype("<i2").tobytes()


async def stream_audio(url: str, name: str, audio: np.ndarray, *, chunk_ms: float = 100.0, realtime: bool = False,
                       pace: str = "asap", token: str | None = None, tail_idle_s: float = 0.0,
                       timeout: float = 300.0, speed: float = 1.0, options: dict | None = None) -> StreamResult:
    """Send `audio` (16 kHz mono float) in chunks, then "end"; collect frames until the server's "end".

    With `realtime` the chunks go out at the speed of the audio (times `speed`), as from a microphone.
    `options` are further stream options (quality, start_frame, max_side, max_lag_ms).
    """
    from urllib.parse import urlencode

    import aiohttp

    query = urlencode({"name": name, "pace": pace, **(options or {})})
    ws_url = url.replace("http", "ws", 1) + f"/ws/stream?{query}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    step = max(320, int(SAMPLE_RATE * chunk_ms / 1000))
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.ws_connect(ws_url, max_msg_size=0) as ws:
            first = await asyncio.wait_for(ws.receive(), timeout)
            ready = json.loads(first.data)
            if ready.get("type") != "ready":
                raise RuntimeError(f"server refused the stream: {ready}")
            result = StreamResult(ready)

            async def sender() -> None:
                t0 = time.perf_counter()
                for i in range(0, len(audio), step):
                    chunk = audio[i:i + step]
                    if len(chunk) < 320:  # the last scrap: pad to the 20 ms minimum
                        chunk = np.concatenate([chunk, np.zeros(320 - len(chunk), np.float32)])
                    if realtime:
                        due = t0 + i / SAMPLE_RATE / speed
                        await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    await ws.send_bytes(to_pcm(chunk))
                    result.sent_at.append(time.perf_counter())
                    result.sent_samples.append(i + len(chunk))
                await ws.send_str(json.dumps({"type": "end"}))

            task = asyncio.create_task(sender())
            deadline = time.perf_counter() + timeout
            ended_at = None
            while time.perf_counter() < deadline:
                wait = (ended_at + tail_idle_s - time.perf_counter()) if ended_at is not None else deadline - time.perf_counter()
                if ended_at is not None and wait <= 0:
                    break
                try:
                    msg = await asyncio.wait_for(ws.receive(), max(0.001, wait))
                except asyncio.TimeoutError:
                    if ended_at is not None:
                        break
                    raise
                if msg.type == aiohttp.WSMsgType.BINARY:
                    result.frames.append(unpack_frame(msg.data))
                    result.arrived.append(time.perf_counter())
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    body: Any = json.loads(msg.data)
                    if body.get("type") == "end":
                        result.ends.append(body)
                        ended_at = time.perf_counter()
                    elif body.get("type") == "error":
                        result.errors.append(body.get("message", ""))
                        break
                else:
                    break
            await task
            return result
