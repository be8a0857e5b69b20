"""Live-stream benchmark of `synctalk serve`: latency, sustained fps of concurrent streams, drift.

It starts the server in this process on 127.0.0.1 and talks to it through the WebSocket protocol, as a
real client does:
  1. latency: one stream sends speech in 20 ms chunks at the pace of the audio; for each frame, the time
     from the arrival of the audio that completes its window to the frame leaving the server (the
     server's own clock; median and p99), and the same seen by the client (adds the loopback socket);
  2. throughput: N streams at once, each at the pace of its audio; the sustained fps of each stream;
  3. drift: one stream of M minutes (its audio clock may run faster than real time with --speed); how
     much later, against its audio, the last frames arrive than the first ones (it must not grow), and
     whether every frame's timestamp is index × 40 ms.

    python benchmarks/serve_latency.py --name NAME                       # a trained avatar
    python benchmarks/serve_latency.py --name NAME --random_unet tiny    # CPU: a preprocessed dataset only
    python benchmarks/serve_latency.py --name NAME --random_unet full --streams 8 --drift_minutes 5 --speed 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))


def percentile(values: list[float], q: float) -> float:
    """q-th percentile (nan for no values)."""
    return float(np.percentile(values, q)) if values else float("nan")


def speech_audio(path: Path | None, seconds: float) -> np.ndarray:
    """`seconds` of speech: the given file (or the fixture speech), repeated as needed."""
    from synctalk import media

    src = path or REPO.parent / "shared" / "fixtures" / "audio_talk_hb.wav"
    audio = media.load_audio(src)
    n = int(seconds * 16000)
    return np.resize(audio, n).astype(np.float32) if audio.size < n else audio[:n]


def random_checkpoint(name: str, dataset_dir: Path, width: str, out_dir: Path) -> Path:
    """A randomly initialised UNet of `width` for the dataset's audio features (timing needs no training)."""
    import torch

    from synctalk.data import DEFAULT_MASK
    from synctalk.layout import checkpoint_layout, dataset_layout
    from synctalk.audio.registry import ASR_MODELS
    from synctalk.training.checkpoint import save_checkpoint
    from unet_328 import build_unet

    layout = dataset_layout(dataset_dir, name)
    made = [a for a in ASR_MODELS if layout.features(a).exists()]
    if not made:
        raise SystemExit(f"{dataset_dir / name} has no audio features: preprocess it first")
    asr = "mel" if "mel" in made else made[0]
    torch.manual_seed(0)
    model = build_unet(asr, width)
    ck = checkpoint_layout(out_dir, name)
    config = {"asr": asr, "width": width, "mask": list(DEFAULT_MASK)}
    return save_checkpoint(ck.best(ck.unet_dir), {"kind": "unet", "model": model.state_dict(), "config": config,
                                                  "asr": asr, "epoch": 0, "metrics": {}})


def finished_streams(server, count: int, timeout: float = 10.0) -> list[dict]:
    """The statistics of the last `count` closed streams (waiting for the server to close them)."""
    import time

    deadline = time.perf_counter() + timeout
    while len(server.finished) < count and time.perf_counter() < deadline:
        time.sleep(0.01)
    return server.finished[-count:]


def stage_medians(stages: list) -> dict:
    """Median ms of each stage of a frame's latency (worker.FrameJob.stages_ms)."""
    names = ("queue", "draw", "jpeg", "send")
    return {n: round(percentile([s[i] for s in stages], 50), 1) for i, n in enumerate(names)} if stages else {}


def client_latency(result, lookahead: int, right_context: int) -> list[float]:
    """Per speech frame: arrival at the client − sending of the chunk that completed its window (ms)."""
    out = []
    for f, t in zip(result.frames, result.arrived):
        if f.kind != 1:
            continue
        last_sample = (f.index + lookahead) * 640 + right_context - 1
        out.append(1000.0 * (t - result.sent_time_of(last_sample)))
    return out


async def run_streams(url: str, name: str, audios: list[np.ndarray], speed: float, chunk_ms: float,
                      max_lag_ms: float = 0.0):
    """Stream each audio at once, at the pace of its (sped-up) clock; the StreamResults."""
    from synctalk.serve.client import stream_audio

    opts = {"max_lag_ms": max_lag_ms} if max_lag_ms else None
    return await asyncio.gather(*[stream_audio(url, name, a, chunk_ms=chunk_ms, realtime=True, speed=speed,
                                               pace="asap", timeout=3600, options=opts) for a in audios])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--dataset_dir", type=Path, default=Path("dataset"))
    p.add_argument("--checkpoint_dir", type=Path, default=Path("checkpoint"))
    p.add_argument("--random_unet", choices=["tiny", "full"], default=None,
                   help="time a randomly initialised UNet of this width instead of the trained one")
    p.add_argument("--device", default="auto")
    p.add_argument("--audio", type=Path, default=None, help="speech to stream (default: the fixture speech)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the latency and throughput streams")
    p.add_argument("--chunk_ms", type=float, default=20.0, help="audio message size")
    p.add_argument("--streams", type=int, default=8, help="concurrent streams for the throughput run")
    p.add_argument("--drift_minutes", type=float, default=5.0, help="length of the drift stream (0: skip)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="the drift stream's audio clock runs this many times faster than real time")
    p.add_argument("--max_batch", type=int, default=16)
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "none"),
                   help="the UNet's precision (auto: bf16 on a CUDA GPU, as the server's default)")
    p.add_argument("--draw_threads", type=int, default=0, help="drawing threads (0: the server's default)")
    p.add_argument("--max_lag_ms", type=float, default=0.0,
                   help="streams shed frames later than this (0: every frame is drawn, as measured by default)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)

    from synctalk.serve.app import BackgroundServer, ServerConfig
    from synctalk.serve.features import lookahead_frames, min_delay_ms, right_context_samples

    tmp = tempfile.TemporaryDirectory(prefix="serve_bench_")
    ckpt_dir = args.checkpoint_dir
    if args.random_unet:
        ckpt_dir = Path(tmp.name) / "checkpoint"
        random_checkpoint(args.name, args.dataset_dir, args.random_unet, ckpt_dir)
    srv = BackgroundServer(ServerConfig(dataset_dir=args.dataset_dir, checkpoint_dir=ckpt_dir,
                                        work_dir=Path(tmp.name) / "work", device=args.device, names=[args.name],
                                        max_batch=args.max_batch, amp=args.amp,
                                        draw_threads=args.draw_threads))
    report: dict = {}
    try:
        avatar = srv.server.pool.get(args.name)
        asr = avatar.asr
        la, rc = lookahead_frames(asr), right_context_samples(asr)
        print(f"{args.name}: {avatar.width_name} UNet, {asr} features, {avatar.width}x{avatar.height} frames, "
              f"on {srv.server.device} ({'bf16' if srv.server.bf16 else 'fp32'}, {srv.server.worker.drawers} drawing "
              f"thread(s)); least delay of the audio window {min_delay_ms(asr):.0f} ms "
              f"({la} frames of look-ahead + {1000 * rc / 16000:.0f} ms of extractor context)")
        report["setup"] = {"name": args.name, "width": avatar.width_name, "asr": asr, "device": str(srv.server.device),
                           "bf16": srv.server.bf16, "draw_threads": srv.server.worker.drawers,
                           "min_delay_ms": min_delay_ms(asr), "frame_size": [avatar.width, avatar.height]}
        # warm-up: first batches pick kernels and fill caches
        asyncio.run(run_streams(srv.url, args.name, [speech_audio(args.audio, 2.0)], 4.0, args.chunk_ms))

        # 1. one stream: latency
        srv.server.finished.clear()
        (res,) = asyncio.run(run_streams(srv.url, args.name, [speech_audio(args.audio, args.seconds)], 1.0,
                                         args.chunk_ms, args.max_lag_ms))
        (stream,) = finished_streams(srv.server, 1)
        server_ms, stages = stream["latencies_ms"], stream["stages_ms"]
        client_ms = client_latency(res, la, rc)
        report["latency"] = {"server_median_ms": percentile(server_ms, 50), "server_p99_ms": percentile(server_ms, 99),
                             "client_median_ms": percentile(client_ms, 50), "client_p99_ms": percentile(client_ms, 99),
                             "frames": len(server_ms)}
        # where the slow frames are: the worst ones by frame index, and the stream's first and last frames
        worst = sorted(range(len(server_ms)), key=lambda i: -server_ms[i])[:8]
        report["latency"]["worst"] = [[i, round(server_ms[i], 1)] for i in sorted(worst)]
        # each of those split into: waiting for a drawing thread, drawing, JPEG, waiting to be sent
        report["latency"]["worst_stages"] = [[i, *[round(x, 1) for x in stages[i]]] for i in sorted(worst)]
        report["latency"]["stages_median_ms"] = stage_medians(stages)
        report["latency"]["first"] = [round(x, 1) for x in server_ms[:5]]
        report["latency"]["last"] = [round(x, 1) for x in server_ms[-12:]]
        L = report["latency"]
        print(f"latency, 1 stream, {len(server_ms)} frames: window complete → frame leaves the server "
              f"median {L['server_median_ms']:.1f} ms, p99 {L['server_p99_ms']:.1f} ms "
              f"(at the client: median {L['client_median_ms']:.1f} ms, p99 {L['client_p99_ms']:.1f} ms)")
        print(f"  slowest frames (index, ms): {L['worst']}; first {L['first']}; last {L['last']}")
        print(f"  median stages (ms): {L['stages_median_ms']}; slowest frames' stages (index, queue, draw, jpeg, send): "
              f"{L['worst_stages']}")

        # 2. N streams at once: sustained fps per stream
        if args.streams > 0:
            batches0 = srv.server.worker.batches
            draw0, enc0 = srv.server.worker.draw_seconds, srv.server.worker.encode_seconds
            frames0 = srv.server.worker.frames
            shed0 = srv.server.worker.shed
            results = asyncio.run(run_streams(srv.url, args.name,
                                              [speech_audio(args.audio, args.seconds) for _ in range(args.streams)],
                                              1.0, args.chunk_ms, args.max_lag_ms))
            fps = []
            for r in results:
                # leave out the first second (the look-ahead fills) and the frames the end of the
                # audio releases at once (its last window is padded, not waited for)
                n_frames = len(r.speech)
                t = [a for f, a in zip(r.frames, r.arrived) if f.kind == 1 and 25 <= f.index < n_frames - 10]
                fps.append((len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0)
            done = finished_streams(srv.server, args.streams + 1)[1:]  # after the latency stream's
            lat = [x for d in done for x in d["latencies_ms"]]
            nb = srv.server.worker.batches - batches0
            report["throughput"] = {"streams": args.streams, "fps_min": min(fps), "fps_median": percentile(fps, 50),
                                    "shed_frames": srv.server.worker.shed - shed0,
                                    "latency_median_ms": percentile(lat, 50), "latency_p99_ms": percentile(lat, 99),
                                    "stages_median_ms": stage_medians([s for d in done for s in d["stages_ms"]]),
                                    "mean_batch": (srv.server.worker.frames - frames0) / max(nb, 1),
                                    "draw_ms_per_batch": 1000 * (srv.server.worker.draw_seconds - draw0) / max(nb, 1),
                                    "encode_ms_per_frame": 1000 * (srv.server.worker.encode_seconds - enc0)
                                    / max(srv.server.worker.frames - frames0, 1)}
            T = report["throughput"]
            print(f"throughput, {args.streams} streams: sustained fps per stream min {T['fps_min']:.2f}, "
                  f"median {T['fps_median']:.2f}; latency median {T['latency_median_ms']:.1f} ms, "
                  f"p99 {T['latency_p99_ms']:.1f} ms; mean batch {T['mean_batch']:.1f} frames, drawn in "
                  f"{T['draw_ms_per_batch']:.1f} ms, JPEG {T['encode_ms_per_frame']:.1f} ms a frame"
                  + (f"; {T['shed_frames']} frames shed" if args.max_lag_ms else "")
                  + f"; median stages (ms) {T['stages_median_ms']}")

        # 3. drift over a long stream
        if args.drift_minutes > 0:
            seconds = args.drift_minutes * 60
            (res,) = asyncio.run(run_streams(srv.url, args.name, [speech_audio(args.audio, seconds)], args.speed,
                                             100.0 if args.speed > 1 else args.chunk_ms, args.max_lag_ms))
            sp = [(f, a) for f, a in zip(res.frames, res.arrived) if f.kind == 1]
            t0 = res.sent_at[0]
            # lag of frame k: its arrival against the moment its own audio started on the (sped-up) clock
            lag = [1000.0 * ((a - t0) - f.index / 25 / args.speed) for f, a in sp]
            n = max(1, min(250, len(lag) // 3))  # compare the first and the last 10 s of frames (a third if shorter)
            drift = percentile(lag[-n:], 50) - percentile(lag[:n], 50)
            expected = -(-int(seconds * 16000) // 640)
            bad_ts = sum(f.timestamp_us != f.index * 40_000 for f, _a in sp)
            in_order = [f.index for f, _a in sp] == list(range(len(sp)))
            report["drift"] = {"minutes": args.drift_minutes, "speed": args.speed, "drift_ms": drift,
                               "drift_audio_ms": drift * args.speed, "frames": len(sp), "expected": expected,
                               "bad_timestamps": bad_ts, "in_order": in_order}
            D = report["drift"]
            print(f"drift after {args.drift_minutes:g} min of audio (clock ×{args.speed:g}): {D['drift_ms']:+.1f} ms "
                  f"of wall time ({D['drift_audio_ms']:+.1f} ms of audio); {len(sp)}/{expected} frames, "
                  f"{'in order' if in_order else 'OUT OF ORDER'}, {bad_ts} timestamps off index × 40 ms")
    finally:
        srv.stop()
        tmp.cleanup()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
