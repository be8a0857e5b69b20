"""The live server on CPU with a tiny avatar: incremental features, a 10 s stream, idle frames, jobs,
renders, uploads and the token."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import MODELS, VIDEOS
from helpers_serve import NAME, SR, served_person, speech

aiohttp = pytest.importorskip("aiohttp")


@pytest.fixture(scope="module")
def person(tmp_path_factory) -> SimpleNamespace:
    return served_person(tmp_path_factory)


def _config(person, work: Path, **kw):
    from synctalk.serve.app import ServerConfig

    kw = {"max_batch": 8, **kw}
    return ServerConfig(dataset_dir=person.dataset_dir, checkpoint_dir=person.checkpoint_dir, work_dir=work,
                        device="cpu", models_dir=MODELS, **kw)


@pytest.fixture(scope="module")
def server(person, tmp_path_factory):
    from synctalk.serve.app import BackgroundServer

    srv = BackgroundServer(_config(person, tmp_path_factory.mktemp("work"), max_audio_mb=2.0))
    yield srv
    srv.stop()


async def _request(method: str, url: str, **kw):
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, **kw) as resp:
            ctype = resp.headers.get("Content-Type", "")
            body = await (resp.json() if "json" in ctype else resp.read())
            return resp.status, body


def request(method: str, url: str, **kw):
    return asyncio.run(_request(method, url, **kw))


def upload(url: str, field: str, filename: str, data: bytes, **fields):
    form = aiohttp.FormData()
    for k, v in fields.items():
        form.add_field(k, v)
    form.add_field(field, io.BytesIO(data), filename=filename)
    return request("POST", url, data=form)


def wait_job(url: str, jid: int, timeout: float = 300) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status, body = request("GET", f"{url}/api/jobs/{jid}")
        assert status == 200
        if body["status"] not in ("queued", "running"):
            return body
        time.sleep(0.5)
    raise AssertionError(f"job {jid} did not finish in {timeout} s")


def wav_bytes(audio: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# ---------------------------------------------------------------- features


def test_incremental_mel_equals_the_file_path():
    """Rows made chunk by chunk (random chunk sizes) are the rows the file render computes."""
    from synctalk.audio.features import compute_features
    from synctalk.audio.registry import get_spec
    from synctalk.serve.features import StreamFeatures

    audio = speech(4.0)[: 4 * SR - 77]
    n = -(-audio.size // 640)
    ref = compute_features("mel", audio, n, progress=False)
    sf = StreamFeatures("mel")
    rng = np.random.default_rng(1)
    got, i = [], 0
    while i < audio.size:
        c = int(rng.integers(320, 3000))
        sf.push(audio[i:i + c])
        i += c
        while len(got) < sf.ready_frames():
            got.append(sf.window(len(got)))
            sf.forget_before(len(got))
        # frame k waits for its whole window: 8 rows of look-ahead, never more
        assert len(got) <= max(0, (i - 96) // 640 - 7)
    sf.end()
    while len(got) < sf.ready_frames():
        got.append(sf.window(len(got)))
    assert len(got) == n
    spec = get_spec("mel")
    err = max(float(np.abs(spec.window_rows(ref, k) - got[k]).max()) for k in range(n))
    assert err < 1e-3


def test_least_delay_per_audio_model():
    from synctalk.serve.features import latency_table

    table = latency_table()
    assert table["mel"]["lookahead_frames"] == 8
    assert table["mel"]["min_delay_ms"] == pytest.approx(326.0)  # 8 frames + the STFT's half window past
    assert all(v["min_delay_ms"] >= 320 for v in table.values())


# ---------------------------------------------------------------- streaming


def test_ten_seconds_stream_into_250_frames_in_order(server, person):
    from synctalk.serve.client import stream_audio

    import cv2

    r = asyncio.run(stream_audio(server.url, NAME, speech(10.0), chunk_ms=100, pace="asap"))
    assert not r.errors
    assert r.ready["lookahead_frames"] == 8 and r.ready["asr"] == "mel"
    sp = r.speech
    assert [f.index for f in sp] == list(range(250))
    assert [f.timestamp_us for f in sp] == [k * 40_000 for k in range(250)]
    seqs = [f.seq for f in r.frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert r.ends == [{"type": "end", "frames": 250}]
    img = cv2.imdecode(np.frombuffer(sp[125].jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (r.ready["height"], r.ready["width"])
    # the walk through the avatar's frames goes on one step per frame, speech and idle alike
    srcs = [f.source for f in r.frames]
    assert all(abs(a - b) <= 1 for a, b in zip(srcs, srcs[1:]))
    assert server.server.worker.batches < 250  # frames were batched


def test_utterances_continue_the_audio_clock(server):
    """Two utterances: the second starts on the next whole frame, so frame k stays tied to sample k·640."""
    from synctalk.serve.client import to_pcm
    from synctalk.serve.protocol import unpack_frame

    first, second = speech(1.0), speech(0.5, offset=3.0)[:7700]  # 12.03 frames: rounds up to 13

    async def run():
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(server.url.replace("http", "ws") + "/ws/stream") as ws:
                await ws.send_str(json.dumps({"type": "start", "name": NAME, "pace": "asap", "max_side": 256}))
                ready = json.loads((await ws.receive(timeout=30)).data)
                assert ready["type"] == "ready" and max(ready["width"], ready["height"]) == 256
                for part in (first, second):
                    await ws.send_bytes(to_pcm(part))
                    await ws.send_str(json.dumps({"type": "end"}))
                frames, ends = [], []
                while len(ends) < 2:
                    msg = await ws.receive(timeout=120)
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        frames.append(unpack_frame(msg.data))
                    else:
                        ends.append(json.loads(msg.data))
                return frames, ends

    frames, ends = asyncio.run(run())
    sp = [f for f in frames if f.kind == 1]
    assert [f.index for f in sp] == list(range(25 + 13))
    assert [e["frames"] for e in ends] == [25, 38]
    assert sp[30].timestamp_us == 30 * 40_000
    import cv2

    for f in (sp[5], frames[0]):  # speech and idle frames scaled to max_side
        assert max(cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR).shape[:2]) == 256


def test_realtime_pace_holds_a_burst_to_25_fps(server):
    """Audio sent faster than real time (a whole sentence at once) still comes back at 25 fps."""
    from synctalk.serve.client import stream_audio

    r = asyncio.run(stream_audio(server.url, NAME, speech(2.0), chunk_ms=2000, pace="realtime"))
    t = [a for f, a in zip(r.frames, r.arrived) if f.kind == 1]
    assert len(t) == 50
    assert t[-1] - t[0] >= 49 * 0.04 * 0.95


def test_concurrent_streams_share_batches(server):
    """Two viewers at once: each gets all its frames in order, and the worker batches them together."""
    from synctalk.serve.client import stream_audio

    async def both():
        return await asyncio.gather(*[stream_audio(server.url, NAME, speech(3.0, offset=o), chunk_ms=200)
                                      for o in (1.0, 5.0)])

    shared0 = server.server.worker.shared_batches
    results = asyncio.run(both())
    for r in results:
        assert [f.index for f in r.speech] == list(range(75))
    assert server.server.worker.shared_batches > shared0


def test_two_drawing_threads_keep_each_stream_in_order(person, tmp_path):
    """With two drawing threads (a GPU server's default) batches are drawn by both, frames still sent in order."""
    from synctalk.serve.app import BackgroundServer
    from synctalk.serve.client import stream_audio

    srv = BackgroundServer(_config(person, tmp_path, draw_threads=2, max_batch=2))
    try:
        async def both():
            return await asyncio.gather(*[stream_audio(srv.url, NAME, speech(2.0, offset=o), chunk_ms=500)
                                          for o in (1.0, 5.0)])

        for r in asyncio.run(both()):
            assert [f.index for f in r.speech] == list(range(50))
        assert srv.server.worker.drawers == 2 and min(srv.server.worker.thread_batches) > 0
        stages = srv.server.finished[-1]["stages_ms"]  # where each frame's latency went, all measured
        assert len(stages) == 50 and all(len(s) == 4 and min(s) >= 0 for s in stages)
    finally:
        srv.stop()


def test_warm_up_runs_on_every_drawing_thread(monkeypatch):
    """cuDNN keeps its kernel choices per thread: each drawing thread warms a new avatar up itself."""
    import threading

    from synctalk.serve import worker as worker_mod

    seen = []
    monkeypatch.setattr(worker_mod, "warm_up", lambda avatar, max_batch: seen.append(threading.current_thread().name))
    w = worker_mod.BatchWorker(4, encoders=1, drawers=2)
    try:
        w.warm(object())
        assert sorted(seen) == sorted(t.name for t in w._threads)

        def broken(avatar, max_batch):
            raise RuntimeError("no kernel")

        monkeypatch.setattr(worker_mod, "warm_up", broken)
        with pytest.raises(RuntimeError, match="no kernel"):
            w.warm(object())
    finally:
        w.close()


def test_a_late_live_stream_sheds_frames_instead_of_falling_behind(server):
    """With max_lag_ms, frames already too late show the real mouth (no network run), still in order."""
    from synctalk.serve.client import stream_audio

    shed0 = server.server.worker.shed
    # a burst of 2 s with a 1 ms limit: nearly every frame is late when it is drawn
    r = asyncio.run(stream_audio(server.url, NAME, speech(2.0), chunk_ms=2000, options={"max_lag_ms": 1}))
    assert [f.index for f in r.speech] == list(range(50))
    assert server.server.worker.shed - shed0 >= 40


def test_idle_frames_at_25_fps_without_audio(server):
    from synctalk.serve.protocol import KIND_IDLE, unpack_frame

    async def run():
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(server.url.replace("http", "ws") + f"/ws/stream?name={NAME}") as ws:
                ready = json.loads((await ws.receive()).data)
                frames, t0 = [], time.perf_counter()
                while time.perf_counter() - t0 < 1.0:
                    msg = await ws.receive(timeout=2)
                    frames.append(unpack_frame(msg.data))
                # a chunk under 20 ms is refused with a reason
                await ws.send_bytes(b"\0\0" * 100)
                while True:
                    msg = await ws.receive(timeout=5)
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        return ready, frames, json.loads(msg.data)

    ready, frames, err = asyncio.run(run())
    assert ready["type"] == "ready"
    assert all(f.kind == KIND_IDLE and f.index == -1 for f in frames)
    assert 18 <= len(frames) <= 30  # 25 per second
    assert err["type"] == "error" and "20 ms" in err["message"]


def test_unknown_avatar_is_a_clear_error(server):
    async def run():
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(server.url.replace("http", "ws") + "/ws/stream?name=nobody") as ws:
                return json.loads((await ws.receive(timeout=30)).data)

    msg = asyncio.run(run())
    assert msg["type"] == "error" and "nobody" in msg["message"]


# ---------------------------------------------------------------- avatars, renders, jobs


def test_avatars_list_their_state(server):
    status, body = request("GET", f"{server.url}/api/avatars")
    assert status == 200
    (av,) = [a for a in body["avatars"] if a["name"] == NAME]
    assert av["ready"] and av["checkpoint"].endswith("checkpoint_best.pth")
    rows = {r["step"]: r["state"] for r in av["rows"]}
    assert rows["frames"] == "done" and rows["crop boxes"] == "done"


def test_render_an_uploaded_file(server):
    from synctalk import media

    status, body = upload(f"{server.url}/api/render", "audio", "hello.wav", wav_bytes(speech(1.2)), name=NAME)
    assert status == 201, body
    job = wait_job(server.url, body["job"]["id"])
    assert job["status"] == "done", job
    status, mp4 = request("GET", f"{server.url}{job['output']}")
    assert status == 200 and mp4[4:8] == b"ftyp"
    path = Path(server.server.jobs.jobs_dir) / "check.mp4"
    path.write_bytes(mp4)
    assert media.probe(path).has_audio and len(list(media.iter_frames(path))) == 30


def test_a_job_from_the_api_finishes_and_shows_in_status(server):
    """Creating an avatar from an uploaded video: the preprocessing job runs and its state shows."""
    video = (VIDEOS / "clip3.mp4").read_bytes()
    status, body = upload(f"{server.url}/api/avatars", "video", "me.mp4", video, name="newface", landmarker="dlib")
    assert status == 201, body
    job = wait_job(server.url, body["job"]["id"])
    assert job["status"] == "done", job
    assert job["state"]["preprocessing"]["completed"] is True
    assert any("newface" in line for line in job["log"])
    status, av = request("GET", f"{server.url}/api/avatars/newface")
    assert status == 200
    rows = {r["step"]: r["state"] for r in av["rows"]}
    assert rows["frames"] == "done" and rows["features"] == "done" and rows["unet"] == "todo"
    assert not av["ready"]  # no model yet
    status, body = request("GET", f"{server.url}/api/jobs")
    assert any(j["id"] == job["id"] and j["status"] == "done" for j in body["jobs"])


@pytest.mark.parametrize("field, filename, data, fields, why", [
    ("audio", "speech.txt", b"hello", {"name": NAME}, "type .txt"),
    ("audio", "speech.wav", b"RIFF not really a wav file" * 10, {"name": NAME}, "not a readable media file"),
    ("audio", "speech.wav", b"\0" * (3 * 2**20), {"name": NAME}, "larger than"),
    ("audio", "speech.wav", b"", {"name": NAME}, "empty"),
    ("audio", "speech.wav", None, {"name": "../etc"}, "invalid name"),
    ("video", "face.mp4", None, {"name": "x"}, "holds no video"),
])
def test_bad_uploads_are_refused(server, field, filename, data, fields, why):
    if data is None:
        data = wav_bytes(speech(0.5))
    url = f"{server.url}/api/render" if field == "audio" else f"{server.url}/api/avatars"
    before = set(server.server.uploads.glob("*")) if server.server.uploads.exists() else set()
    status, body = upload(url, field, filename, data, **fields)
    assert status == 400 and why in body["error"], body
    after = set(server.server.uploads.glob("*")) if server.server.uploads.exists() else set()
    assert after == before  # nothing refused stays on disk


def test_bad_job_requests_are_refused(server):
    status, body = request("POST", f"{server.url}/api/jobs", json={"kind": "rm", "name": NAME})
    assert status == 400 and "unknown job kind" in body["error"]
    status, body = request("POST", f"{server.url}/api/jobs", json={"kind": "train", "name": NAME, "args": ["; rm -rf /"]})
    assert status == 400 and "not allowed" in body["error"]
    status, body = request("POST", f"{server.url}/api/jobs",
                           json={"kind": "train", "name": NAME, "args": ["--dataset_dir", "/"]})
    assert status == 400 and "set by the server" in body["error"]


# ---------------------------------------------------------------- binding and the token


def test_token_guards_every_route(person, tmp_path):
    from synctalk.serve.app import BackgroundServer

    srv = BackgroundServer(_config(person, tmp_path, token="s3cret"))
    try:
        assert request("GET", f"{srv.url}/api/info")[0] == 401
        assert request("GET", f"{srv.url}/api/info", headers={"Authorization": "Bearer wrong"})[0] == 401
        status, body = request("GET", f"{srv.url}/api/info", headers={"Authorization": "Bearer s3cret"})
        assert status == 200 and body["audio_models"]["mel"]["lookahead_frames"] == 8
        assert request("GET", f"{srv.url}/?token=s3cret")[0] == 200

        async def cookie_then_stream():  # the page opened once with ?token= works on by its cookie
            # unsafe=True: like a browser, keep cookies of a host given by IP address
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                async with http.get(f"{srv.url}/?token=s3cret") as resp:
                    assert resp.status == 200 and "synctalk_token" in resp.cookies
                async with http.get(f"{srv.url}/api/avatars") as resp:
                    assert resp.status == 200
                async with http.ws_connect(srv.url.replace("http", "ws") + f"/ws/stream?name={NAME}") as ws:
                    return json.loads((await ws.receive(timeout=60)).data)

        assert asyncio.run(cookie_then_stream())["type"] == "ready"
    finally:
        srv.stop()


def test_the_serve_command_answers(person, tmp_path):
    """`synctalk serve` as a user starts it: a process that listens and answers."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "synctalk.cli", "serve", "--port", str(port), "--device", "cpu",
                             "--dataset_dir", str(person.dataset_dir), "--checkpoint_dir", str(person.checkpoint_dir),
                             "--work_dir", str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 60
        while True:
            try:
                status, body = request("GET", f"http://127.0.0.1:{port}/api/avatars")
                break
            except aiohttp.ClientConnectionError:
                assert proc.poll() is None and time.monotonic() < end, proc.stdout.read().decode()
                time.sleep(0.3)
        assert status == 200 and NAME in [a["name"] for a in body["avatars"]]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_other_sites_cannot_use_a_local_server(server):
    """Cross-site posts and streams, and requests for another host name (DNS rebinding), are refused."""
    from synctalk.serve.app import foreign_request

    evil = {"Origin": "http://evil.example"}
    status, body = request("POST", f"{server.url}/api/jobs", json={"kind": "train", "name": NAME}, headers=evil)
    assert status == 403 and "evil.example" in body["error"]
    assert request("GET", f"{server.url}/api/info", headers={"Host": "evil.example"})[0] == 403
    assert request("GET", f"{server.url}/api/info", headers={"Origin": server.url})[0] == 200
    assert foreign_request("127.0.0.1:8765", "http://127.0.0.1:8765", changes=True, local_only=True) is None
    assert foreign_request("[::1]:8765", None, changes=True, local_only=True) is None
    assert foreign_request("box.lan:8765", None, changes=False, local_only=False) is None  # with a token
    assert foreign_request("box.lan:8765", "http://other", changes=True, local_only=False)


def test_listening_beyond_localhost_needs_a_token():
    from synctalk.cli import build_parser
    from synctalk.errors import SyncTalkError
    from synctalk.serve.command import config_from_args

    parser = build_parser("serve")
    with pytest.raises(SyncTalkError, match="--token"):
        config_from_args(parser.parse_args(["serve", "--host", "0.0.0.0"]))
    cfg = config_from_args(parser.parse_args(["serve", "--host", "0.0.0.0", "--token", "t", "--names", "a,b"]))
    assert cfg.token == "t" and cfg.names == ["a", "b"]
    assert config_from_args(parser.parse_args(["serve"])).token is None  # localhost needs none


def test_encoder_features_stream_as_the_file_path_makes_them(tmp_path):
    """ave rows made as the audio arrives (the encoder loaded once, run on short slices) equal the rows of
    the file path; a randomly initialised encoder in SyncTalk's file format stands in for the weights."""
    import torch

    import synctalk.serve.features as sfeat
    from synctalk.audio import ave
    from synctalk.audio.features import compute_features

    torch.manual_seed(0)
    torch.save({k[len("audio_encoder."):]: v for k, v in ave.build_encoder("synctalk").state_dict().items()},
               tmp_path / "audio_visual_encoder.pth")
    audio = speech(3.0)
    n = audio.size // 640
    ref = compute_features("ave", audio, n, models_dir=tmp_path, device="cpu", progress=False)
    sf = sfeat.StreamFeatures("ave", models_dir=tmp_path, device="cpu")
    calls = []
    real = sfeat.encoder_rows
    sfeat.encoder_rows = lambda asr, piece, k, enc, dev: calls.append(piece.size) or real(asr, piece, k, enc, dev)
    try:
        got = []
        for i in range(0, audio.size, 640):
            sf.push(audio[i:i + 640])
            while len(got) < sf.ready_frames():
                got.append(sf.window(len(got))[sf.spec.left])  # the frame's own row
                sf.forget_before(len(got))
        sf.end()
        while len(got) < sf.ready_frames():
            got.append(sf.window(len(got))[sf.spec.left])
    finally:
        sfeat.encoder_rows = real
    assert len(got) == n
    np.testing.assert_allclose(np.stack(got), ref, rtol=1e-3, atol=1e-3)
    assert max(calls) < 16000  # every run saw a short slice, never the whole past
    key = ("ave", str(tmp_path), "cpu")
    assert key in sfeat._ENCODERS  # loaded once, kept for every later stream


def test_silence_in_a_stream_eases_back_to_the_real_frame():
    """Speech, a 1 s pause, speech: generated, cross-faded to the real frame and back (complete two frames
    before the sound, as file renders); a 2-frame gap keeps the generated mouth."""
    from synctalk.serve.session import SilenceGate

    talk = speech(1.0)  # 25 frames, loud at both ends
    audio = np.concatenate([talk, np.zeros(2 * 640, np.float32), talk, np.zeros(25 * 640, np.float32), talk])
    gate = SilenceGate()
    gate.push(audio)
    gate.end()
    w = np.array([gate.weight(k) for k in range(gate.frames)])
    assert len(w) == 102 and gate.loud[51] and not any(gate.loud[52:77]) and gate.loud[77]
    assert w[:54].min() == 1.0  # speech, the short gap, and two frames of trailing lips
    np.testing.assert_allclose(w[54:58], [0.8, 0.6, 0.4, 0.2])  # eased, not cut
    assert w[58:71].max() == 0.0  # the real frame in the pause
    np.testing.assert_allclose(w[71:75], [0.2, 0.4, 0.6, 0.8])
    assert w[75:].min() == 1.0  # generated from two frames before the sound
    # a stream that never ends keeps only the frames a weight can still read
    gate.forget_before(90)
    assert gate.start == 90 - gate.REACH and len(gate.loud) == gate.frames - gate.start
    assert [gate.weight(k) for k in range(90, 102)] == list(w[90:])
