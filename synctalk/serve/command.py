"""`synctalk serve`: start the server (localhost by default; elsewhere only with a token)."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

from ..errors import SyncTalkError


def is_loopback(host: str) -> bool:
    """Whether `host` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `synctalk serve`."""
    from ..render.command import add_amp_flags

    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--names", default="", help="avatars to load at start, comma-separated (others load on first use)")
    p.add_argument("--token", default=None,
                   help="secret every request must carry; needed to listen on any address but localhost")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")
    p.add_argument("--dataset_dir", default="dataset", type=Path)
    p.add_argument("--checkpoint_dir", default="checkpoint", type=Path)
    p.add_argument("--work_dir", default="serve_work", type=Path, help="uploads, job logs and rendered files")
    p.add_argument("--models_dir", default=None, type=Path, help="where audio model weights are looked for first")
    p.add_argument("--max_batch", type=int, default=16, help="frames per network batch across all streams")
    add_amp_flags(p)
    p.add_argument("--max_audio_mb", type=float, default=50.0, help="largest audio upload")
    p.add_argument("--max_video_mb", type=float, default=500.0, help="largest video upload")


def config_from_args(args: argparse.Namespace):
    """The ServerConfig of parsed flags (checks the listen address against the token)."""
    from ..layout import validate_name
    from .app import ServerConfig

    if not is_loopback(args.host) and not args.token:
        raise SyncTalkError(f"--host {args.host} listens beyond this machine: pass --token SECRET as well")
    if not 0 < args.port < 65536:
        raise SyncTalkError(f"--port {args.port} is not a TCP port")
    if args.max_batch < 1:
        raise SyncTalkError(f"--max_batch must be at least 1, got {args.max_batch}")
    names = [validate_name(n.strip()) for n in args.names.split(",") if n.strip()]
    return ServerConfig(dataset_dir=args.dataset_dir, checkpoint_dir=args.checkpoint_dir, work_dir=args.work_dir,
                        device=args.device, token=args.token, names=names, max_batch=args.max_batch, amp=args.amp,
                        max_audio_mb=args.max_audio_mb, max_video_mb=args.max_video_mb, models_dir=args.models_dir)


def run(args: argparse.Namespace) -> int:
    """Entry point of `synctalk serve`."""
    try:
        from aiohttp import web
    except ImportError:
        raise SyncTalkError("synctalk serve needs aiohttp: pip install 'synctalk[serve]'") from None
    from .app import create_app

    cfg = config_from_args(args)
    app = create_app(cfg)
    where = f"http://{args.host}:{args.port}/" + (f"?token={args.token}" if args.token else "")
    print(f"synctalk serve on {where} (datasets {cfg.dataset_dir}, checkpoints {cfg.checkpoint_dir})", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None)
    return 0
