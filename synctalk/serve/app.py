"""The HTTP and WebSocket server (aiohttp): the page, the avatars' state, uploads, jobs and live streams.

Routes (JSON unless said otherwise; with a token every request needs it: `Authorization: Bearer T`,
`?token=T` once (it is then kept in a cookie) or the cookie):
  GET  /                          the browser page (static/index.html)
  GET  /api/info                  device, audio models' least delay, loaded avatars, upload limits
  GET  /api/avatars               every person in the dataset folder with its state
  GET  /api/avatars/{name}        one person: state rows, next step, previews
  GET  /api/avatars/{name}/frame.jpg           its first frame
  GET  /api/avatars/{name}/previews/{file}     a training preview image
  POST /api/avatars               multipart name + video: save it and queue its preprocessing
  POST /api/render                multipart name + audio: queue a render; the MP4 comes from the job
  GET  /api/jobs, GET /api/jobs/{id}, POST /api/jobs {kind, name, args}, POST /api/jobs/{id}/cancel
  GET  /api/jobs/{id}/output      a render's MP4
  GET  /ws/stream?name=A          the live stream (protocol.py)
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SyncTalkError
from ..layout import checkpoint_layout, dataset_layout, validate_name

STATIC = Path(__file__).resolve().parent / "static"
AUDIO_TYPES = (".wav", ".mp3", ".m4a", ".ogg", ".oga", ".flac", ".webm", ".opus", ".aac")
VIDEO_TYPES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
_MARKUP = re.compile(r"\[/?[a-z ]*\]")
_PREVIEW = re.compile(r"^[\w\-.]{1,80}\.(png|jpg)$")
TOKEN_COOKIE = "synctalk_token"
_SERVER_KEY: Any = None  # the web.AppKey of the Server, made on first use (aiohttp imports lazily)


def server_key() -> Any:
    """The application key under which create_app stores its Server."""
    global _SERVER_KEY
    if _SERVER_KEY is None:
        from aiohttp import web

        _SERVER_KEY = web.AppKey("synctalk_server", Server)
    return _SERVER_KEY


@dataclass
class ServerConfig:
    """Everything the server is started with."""

    dataset_dir: Path = Path("dataset")
    checkpoint_dir: Path = Path("checkpoint")
    work_dir: Path = Path("serve_work")  # uploads, job logs, rendered files
    device: str = "auto"
    token: str | None = None
    names: list[str] = field(default_factory=list)  # avatars loaded at start
    max_batch: int = 16
    amp: str = "auto"  # the UNet's precision: auto (bf16 on a CUDA GPU), bf16, none
    draw_threads: int = 0  # 0: two on a CUDA device, one on the CPU
    max_audio_mb: float = 50.0
    max_video_mb: float = 500.0
    models_dir: Path | None = None


class Server:
    """The state behind the routes: the device, the avatar pool, the frame worker, the job runner."""

    def __init__(self, cfg: ServerConfig) -> None:
        from ..device import resolve_device
        from ..render.generator import inference_bf16
        from .avatar import AvatarPool
        from .jobs import JobRunner
        from .worker import BatchWorker

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.bf16 = inference_bf16(cfg.amp, self.device)
        drawers = cfg.draw_threads or (2 if self.device.type == "cuda" else 1)
        self.worker = BatchWorker(cfg.max_batch, drawers=drawers)
        self.pool = AvatarPool(cfg.dataset_dir, cfg.checkpoint_dir, self.device, bf16=self.bf16,
                               models_dir=cfg.models_dir, warm=self.worker.warm)
        self.jobs = JobRunner(Path(cfg.work_dir) / "jobs", cfg.dataset_dir, cfg.checkpoint_dir, str(self.device))
        self.uploads = Path(cfg.work_dir) / "uploads"
        self.sessions: set = set()  # the open streams
        self.finished: list[dict] = []  # per closed stream: latencies and frame counts (benchmarks read it)

    def close(self) -> None:
        """Stop the worker threads."""
        self.worker.close()
        self.jobs.close()

    # ---------------------------------------------------------------- avatars

    def avatar_names(self) -> list[str]:
        """People with a dataset folder."""
        root = Path(self.cfg.dataset_dir)
        if not root.is_dir():
            return []
        out = []
        for p in sorted(root.iterdir()):
            try:
                validate_name(p.name)
            except SyncTalkError:
                continue
            if p.is_dir() and (dataset_layout(root, p.name).state_file.exists() or (p / "crop_boxes.npy").exists()):
                out.append(p.name)
        return out

    def avatar_state(self, name: str) -> dict:
        """A person's state: the `synctalk status` rows (markup removed), the next step, previews."""
        from ..render import resolve_checkpoint
        from ..status import status_rows

        rows, nxt = status_rows(Path(self.cfg.dataset_dir), Path(self.cfg.checkpoint_dir), name)
        try:
            ckpt = str(resolve_checkpoint(self.cfg.checkpoint_dir, name))
        except SyncTalkError:
            ckpt = None
        ck = checkpoint_layout(self.cfg.checkpoint_dir, name)
        previews = sorted(p.name for p in (ck.unet_dir / "previews").glob("*.png")) if (ck.unet_dir / "previews").is_dir() else []
        return {
            "name": name,
            "rows": [{"step": s, "state": _MARKUP.sub("", st), "detail": _MARKUP.sub("", d)} for s, st, d in rows],
            "next": nxt,
            "checkpoint": ckpt,
            "ready": ckpt is not None and dataset_layout(self.cfg.dataset_dir, name).crop_boxes.exists(),
            "loaded": name in self.pool.loaded(),
            "previews": [f"/api/avatars/{name}/previews/{p}" for p in previews[-8:]],
        }


# ---------------------------------------------------------------- helpers


def _json(data: Any, status: int = 200):
    from aiohttp import web

    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


def _error(message: str, status: int = 400):
    return _json({"error": message}, status)


_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


def foreign_request(host: str, origin: str | None, *, changes: bool, local_only: bool) -> str | None:
    """Why a request must be refused as coming from elsewhere (None: it may go on)."""
    name = host.rsplit(":", 1)[0] if host and not host.endswith("]") else host
    if local_only and name not in _LOCAL_HOSTS:
        return f"host {host!r} is not this machine (the server listens locally; start it with --token to serve others)"
    if changes and origin is not None and origin not in (f"http://{host}", f"https://{host}"):
        return f"requests from {origin} may not change anything here or open streams"
    return None


async def _save_upload(part: Any, directory: Path, allowed: tuple[str, ...], max_bytes: int) -> Path:
    """Stream one uploaded file to `directory` under a new name; check its extension and size."""
    filename = part.filename or ""
    ext = Path(filename).suffix.lower()
    if ext not in allowed:
        raise SyncTalkError(f"upload {filename!r}: type {ext or '(none)'} is not accepted; use one of {', '.join(allowed)}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{uuid.uuid4().hex}{ext}"  # the client's file name never becomes a path
    size = 0
    try:
        with open(path, "wb") as fh:
            while True:
                chunk = await part.read_chunk(1 << 20)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise SyncTalkError(f"upload {filename!r} is larger than {max_bytes / 2**20:.0f} MB")
                fh.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise SyncTalkError(f"upload {filename!r} is empty")
    return path


def _check_media(path: Path, need: str, filename: str) -> None:
    """The saved upload really holds audio (or video): ffprobe-level check, removed when not."""
    from .. import media

    try:
        info = media.probe(path)
    except SyncTalkError as exc:
        path.unlink(missing_ok=True)
        raise SyncTalkError(f"upload {filename!r} is not a readable media file ({exc})") from None
    ok = info.has_audio if need == "audio" else info.has_video
    if not ok or not (info.duration or 0) > 0:
        path.unlink(missing_ok=True)
        raise SyncTalkError(f"upload {filename!r} holds no {need}")


async def _form(request: Any, server: Server, file_field: str, allowed: tuple[str, ...], max_mb: float) -> tuple[dict, Path]:
    """Read a multipart form with text fields and one file; return (fields, saved file)."""
    if not request.content_type.startswith("multipart/"):
        raise SyncTalkError("expected a multipart/form-data upload")
    reader = await request.multipart()
    fields: dict[str, str] = {}
    saved: Path | None = None
    filename = ""
    try:
        async for part in reader:
            if part.name == file_field and part.filename is not None:
                if saved is not None:
                    raise SyncTalkError(f"only one {file_field} file per upload")
                filename = part.filename
                saved = await _save_upload(part, server.uploads, allowed, int(max_mb * 2**20))
            elif part.name:
                value = (await part.read(decode=True))[:4096]
                fields[part.name] = value.decode("utf-8", "replace")
    except BaseException:
        if saved is not None:
            saved.unlink(missing_ok=True)
        raise
    if saved is None:
        raise SyncTalkError(f"the upload has no {file_field} file")
    await asyncio.get_running_loop().run_in_executor(None, _check_media, saved, file_field, filename)
    return fields, saved


# ---------------------------------------------------------------- the application


def create_app(cfg: ServerConfig, server: Server | None = None) -> Any:
    """The aiohttp application (the server state under app[server_key()])."""
    from aiohttp import web

    server = server or Server(cfg)
    limit = int(max(cfg.max_audio_mb, cfg.max_video_mb) * 2**20) + (1 << 20)
    routes = web.RouteTableDef()

    @web.middleware
    async def guard(request, handler):
        # another web site open in the user's browser may send requests here too: changes and streams
        # must come from this page (Origin), and a local server only answers to local host names
        # (DNS rebinding)
        refused = foreign_request(request.host, request.headers.get("Origin"),
                                  changes=request.method not in ("GET", "HEAD") or request.path.startswith("/ws/"),
                                  local_only=cfg.token is None)
        if refused:
            return _error(refused, 403)
        token = cfg.token
        from_query = request.query.get("token")
        if token:
            given = from_query or request.cookies.get(TOKEN_COOKIE) or ""
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                given = auth[7:]
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _error("a valid token is needed (Authorization: Bearer T, or ?token=T)", 401)
        try:
            resp = await handler(request)
        except SyncTalkError as exc:
            return _error(str(exc), 400)
        if token and from_query and isinstance(resp, web.StreamResponse) and not resp.prepared:
            resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return resp

    @routes.get("/")
    async def index(request):
        return web.FileResponse(STATIC / "index.html")

    @routes.get("/api/info")
    async def info(request):
        from .features import latency_table

        return _json({"device": str(server.device), "loaded": server.pool.loaded(), "audio_models": latency_table(),
                      "max_audio_mb": cfg.max_audio_mb, "max_video_mb": cfg.max_video_mb,
                      "audio_types": AUDIO_TYPES, "video_types": VIDEO_TYPES})

    @routes.get("/api/avatars")
    async def avatars(request):
        loop = asyncio.get_running_loop()
        out = []
        for n in server.avatar_names():
            try:
                out.append(await loop.run_in_executor(None, server.avatar_state, n))
            except SyncTalkError as exc:
                out.append({"name": n, "error": str(exc), "ready": False})
        return _json({"avatars": out})

    @routes.get("/api/avatars/{name}")
    async def avatar(request):
        name = validate_name(request.match_info["name"])
        if name not in server.avatar_names():
            return _error(f"no avatar {name!r}", 404)
        return _json(await asyncio.get_running_loop().run_in_executor(None, server.avatar_state, name))

    @routes.get("/api/avatars/{name}/frame.jpg")
    async def avatar_frame(request):
        layout = dataset_layout(cfg.dataset_dir, request.match_info["name"])
        path = layout.frame_path(0)
        if not path.is_file():
            return _error("no frames yet", 404)
        return web.FileResponse(path)

    @routes.get("/api/avatars/{name}/previews/{file}")
    async def avatar_preview(request):
        ck = checkpoint_layout(cfg.checkpoint_dir, request.match_info["name"])
        fname = request.match_info["file"]
        if not _PREVIEW.match(fname):
            return _error("bad preview name", 400)
        path = ck.unet_dir / "previews" / fname
        if not path.is_file():
            return _error("no such preview", 404)
        return web.FileResponse(path)

    @routes.post("/api/avatars")
    async def create_avatar(request):
        fields, video = await _form(request, server, "video", VIDEO_TYPES, cfg.max_video_mb)
        try:
            name = validate_name(fields.get("name", ""))
            if dataset_layout(cfg.dataset_dir, name).root.exists():
                raise SyncTalkError(f"avatar {name!r} exists already; choose another name")
            asr = fields.get("asr") or "mel"
            from ..audio.registry import get_spec

            get_spec(asr)
            args = ["--video_path", str(video), "--asr", asr]
            if fields.get("landmarker"):
                args += ["--landmarker", fields["landmarker"]]
            if cfg.models_dir:
                args += ["--models_dir", str(cfg.models_dir)]
            job = server.jobs.submit("preprocess", name, args)
        except BaseException:
            video.unlink(missing_ok=True)
            raise
        return _json({"job": job.public()}, 201)

    @routes.post("/api/render")
    async def render_file(request):
        fields, audio = await _form(request, server, "audio", AUDIO_TYPES, cfg.max_audio_mb)
        try:
            name = validate_name(fields.get("name", ""))
            if name not in server.avatar_names():
                raise SyncTalkError(f"no avatar {name!r}")
            job = server.jobs.submit("render", name, audio=audio)
        except BaseException:
            audio.unlink(missing_ok=True)
            raise
        return _json({"job": job.public()}, 201)

    @routes.get("/api/jobs")
    async def jobs(request):
        return _json({"jobs": [j.public() for j in sorted(server.jobs.jobs.values(), key=lambda j: -j.id)]})

    @routes.post("/api/jobs")
    async def new_job(request):
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SyncTalkError("the job request must be JSON: {\"kind\": ..., \"name\": ..., \"args\": [...]}") from None
        if not isinstance(body, dict):
            raise SyncTalkError("the job request must be a JSON object")
        kind = body.get("kind")
        if kind == "render":
            raise SyncTalkError("renders are started with an upload to /api/render")
        name = validate_name(str(body.get("name", "")))
        after = None
        if kind != "preprocess":
            after = lambda _j, n=name: server.pool.drop(n)  # noqa: E731  (a retrained avatar reloads)
        job = server.jobs.submit(str(kind), name, body.get("args"), after=after)
        return _json({"job": job.public()}, 201)

    def _job_id(request) -> int:
        try:
            return int(request.match_info["id"])
        except ValueError:
            raise SyncTalkError("job ids are numbers") from None

    @routes.get("/api/jobs/{id}")
    async def job(request):
        j = server.jobs.get(_job_id(request))
        return _json(await asyncio.get_running_loop().run_in_executor(None, server.jobs.progress, j))

    @routes.post("/api/jobs/{id}/cancel")
    async def cancel(request):
        return _json(server.jobs.cancel(_job_id(request)).public())

    @routes.get("/api/jobs/{id}/output")
    async def job_output(request):
        j = server.jobs.get(_job_id(request))
        if j.output is None or j.status != "done" or not Path(j.output).is_file():
            return _error(f"job {j.id} has no output (status {j.status})", 404)
        return web.FileResponse(j.output, headers={"Content-Type": "video/mp4"})

    @routes.get("/ws/stream")
    async def stream(request):
        return await _stream(request, server)

    app = web.Application(middlewares=[guard], client_max_size=limit)
    app.add_routes(routes)
    app.router.add_static("/static/", STATIC)
    app[server_key()] = server

    async def _preload(app_):
        loop = asyncio.get_running_loop()
        for n in cfg.names:
            await loop.run_in_executor(None, server.pool.get, n)

    async def _cleanup(app_):
        server.close()

    app.on_startup.append(_preload)
    app.on_cleanup.append(_cleanup)
    return app


async def _stream(request: Any, server: Server) -> Any:
    """One viewer's WebSocket: start → audio/end messages in, frames out (protocol.py)."""
    from aiohttp import WSMsgType, web

    from .protocol import MAX_CHUNK_SAMPLES, check_audio_chunk
    from .session import StreamSession

    ws = web.WebSocketResponse(max_msg_size=MAX_CHUNK_SAMPLES * 2 + 1024, heartbeat=30)
    await ws.prepare(request)
    loop = asyncio.get_running_loop()
    keys = ("name", "pace", "quality", "start_frame", "max_side", "max_lag_ms")
    opts: dict[str, Any] = {k: request.query[k] for k in keys if k in request.query}
    session = None
    sender = None
    lock = asyncio.Lock()  # keeps each send whole when the sender and the handler both send

    async def send(msg: Any) -> None:
        async with lock:
            if ws.closed:
                return
            if isinstance(msg, (bytes, bytearray)):
                await ws.send_bytes(msg)
            else:
                await ws.send_str(msg)

    async def start() -> StreamSession:
        name = validate_name(str(opts.get("name", "")))
        avatar = await loop.run_in_executor(None, server.pool.get, name)
        s = StreamSession(avatar, server.worker, send, pace=str(opts.get("pace", "realtime")),
                          quality=int(opts.get("quality", 80)), start_frame=int(opts.get("start_frame", 0)),
                          max_side=int(opts.get("max_side", 0)), max_lag_ms=float(opts.get("max_lag_ms", 0)),
                          models_dir=server.cfg.models_dir)
        server.sessions.add(s)
        await send(json.dumps(s.info()))
        return s

    try:
        if "name" in opts:
            session = await start()
            sender = asyncio.create_task(session.run_sender())
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                if session is None:
                    raise SyncTalkError("send a start message (or ?name=) before audio")
                try:
                    check_audio_chunk(msg.data)
                except ValueError as exc:
                    raise SyncTalkError(str(exc)) from None
                if session.avatar.asr == "mel":
                    session.push_pcm(msg.data)
                else:  # encoders take milliseconds to seconds: keep the loop free
                    await loop.run_in_executor(None, session.push_pcm, msg.data)
                session.wake.set()
            elif msg.type == WSMsgType.TEXT:
                try:
                    body = json.loads(msg.data)
                    kind = body.get("type")
                except (json.JSONDecodeError, AttributeError):
                    raise SyncTalkError("text messages must be JSON objects with a 'type'") from None
                if kind == "start":
                    if session is not None:
                        raise SyncTalkError("the stream has started already")
                    opts.update({k: body[k] for k in keys if k in body})
                    session = await start()
                    sender = asyncio.create_task(session.run_sender())
                elif kind == "end":
                    if session is None:
                        raise SyncTalkError("nothing to end: the stream has not started")
                    if session.avatar.asr == "mel":
                        session.end_utterance()
                    else:  # the last rows run the encoder too
                        await loop.run_in_executor(None, session.end_utterance)
                    session.wake.set()
                else:
                    raise SyncTalkError(f"unknown message type {kind!r} (start, end)")
            elif msg.type == WSMsgType.ERROR:
                break
    except (SyncTalkError, ValueError) as exc:
        await send(json.dumps({"type": "error", "message": str(exc)}))
        await ws.close()
    finally:
        if session is not None:
            session.close()
            server.sessions.discard(session)
            server.finished.append({"name": session.avatar.name, "latencies_ms": session.latencies_ms,
                                    "stages_ms": session.stages_ms,
                                    "speech": session.sent_speech, "idle": session.sent_idle})
            del server.finished[:-1000]
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    return ws


class BackgroundServer:
    """The server on its own event-loop thread (for embedding, benchmarks and tests): `.url`, `.stop()`."""

    def __init__(self, cfg: ServerConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        import threading

        from aiohttp import web

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="synctalk-serve-loop", daemon=True)
        self._thread.start()
        self.app = create_app(cfg)
        self.server: Server = self.app[server_key()]
        self._runner = web.AppRunner(self.app)

        async def _start() -> int:
            await self._runner.setup()
            site = web.TCPSite(self._runner, host, port)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        self.port = asyncio.run_coroutine_threadsafe(_start(), self.loop).result(timeout=120)
        self.url = f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Shut the server down and end its thread."""
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
