"""Whisper features on real speech: speed, seams between 30 s windows, speech vs quiet rows.

    PYTHONPATH=. python benchmarks/whisper_features.py --whisper_model /path/to/whisper-folder \
        [--audio ../shared/fixtures/audio_talk_hb.wav] [--seconds 60] [--long ../shared/fixtures/real/cnn_anchor_71s.mp4]

Prints: features/s (video frames of features per second of wall time) for `--seconds` of `--audio`
(looped when shorter); for the `--long` clip (> 30 s, so several windows), how much the rows change
when the window joins move, and the jump at the joins, for several contexts, without and with the
silence baseline and the cross-fade; and how rows of loud and quiet frames differ.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _rows(audio, frames, encoder, context, fade=None, baseline=True, phase=0):
    from synctalk.audio import whisper
    from synctalk.audio.features import fit_audio

    fitted = fit_audio(audio, frames, whisper.RIGHT_CONTEXT)
    fade = whisper.FADE_ROWS if fade is None else fade
    return whisper.extract(fitted, frames, encoder, context_rows=context, fade_rows=fade, baseline=baseline,
                           phase=phase).reshape(2 * frames, -1)


def _cos(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)


def main(argv=None) -> int:
    """Run the measurements and print them."""
    import torch

    from synctalk import media
    from synctalk.audio import whisper
    from synctalk.constants import FPS, SAMPLE_RATE

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--whisper_model", default=None, help="id or folder (transformers or CTranslate2)")
    p.add_argument("--models_dir", default=None)
    p.add_argument("--audio", default="../shared/fixtures/audio_talk_hb.wav")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--long", default="../shared/fixtures/real/cnn_anchor_71s.mp4")
    p.add_argument("--contexts", default="0,50,100,250", help="context states to compare")
    p.add_argument("--threads", type=int, default=0, help="torch/CTranslate2 CPU threads (0: as is)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    encoder = whisper.load_whisper(args.whisper_model, args.models_dir)
    print(f"model: {encoder.source.kind} {encoder.source.where}  ({encoder.n_mels} mel bins), "
          f"loaded in {time.perf_counter() - t0:.1f} s, {torch.get_num_threads()} threads")

    audio = media.load_audio(args.audio, SAMPLE_RATE)
    n = int(args.seconds * SAMPLE_RATE)
    audio = np.tile(audio, int(np.ceil(n / audio.size)))[:n]
    frames = int(args.seconds * FPS)
    _rows(audio[: SAMPLE_RATE], FPS, encoder, whisper.CONTEXT_ROWS)  # warm-up
    t0 = time.perf_counter()
    rows = _rows(audio, frames, encoder, whisper.CONTEXT_ROWS)
    dt = time.perf_counter() - t0
    calls = len(whisper.window_plan(2 * frames, encoder.window_rows, whisper.CONTEXT_ROWS))
    print(f"speed: {args.seconds:.0f} s of audio → {frames} frames x (2, {rows.shape[1]}) in {dt:.2f} s "
          f"= {frames / dt:.0f} frames/s ({args.seconds / dt:.1f}x real time, {calls} encoder windows)")

    long = media.load_audio(args.long, SAMPLE_RATE)
    lf = long.size * FPS // SAMPLE_RATE
    ref = _rows(long, lf, encoder, whisper.CONTEXT_ROWS)
    print(f"windows on {args.long} ({long.size / SAMPLE_RATE:.0f} s): the same clip with the joins moved by "
          f"half a window's kept part (phase), and the row-to-row step at the joins against the median step:")
    for c, fade, base in [(int(x), 0, False) for x in args.contexts.split(",")] + [
            (whisper.CONTEXT_ROWS, 0, True), (whisper.CONTEXT_ROWS, whisper.FADE_ROWS, True)]:
        keep = encoder.window_rows - 2 * c
        a, b = (_rows(long, lf, encoder, c, fade=fade, baseline=base, phase=ph) for ph in (0, keep // 2))
        scale = float(np.linalg.norm(a, axis=1).mean())
        moved = np.linalg.norm(a - b, axis=1) / scale
        joins = [lo for _, lo, _ in whisper.window_plan(2 * lf, encoder.window_rows, c)[1:]]
        step = np.linalg.norm(np.diff(a, axis=0), axis=1) / scale
        at = float(np.mean([step[j - 1] for j in joins])) if joins else 0.0
        print(f"  context {c:3d} fade {fade:3d} baseline {'on ' if base else 'off'}: {len(joins) + 1} windows, "
              f"moved joins change rows by {moved.mean():.3f} of a row's norm; step at joins {at:.3f} "
              f"vs median {np.median(step):.3f}")

    # loud vs quiet frames (RMS per 40 ms frame), on the long clip's reference rows
    spf = SAMPLE_RATE // FPS
    rms = np.sqrt(np.mean(long[: lf * spf].reshape(lf, spf) ** 2, axis=1) + 1e-12)
    db = 20 * np.log10(rms)
    loud, quiet = db >= np.percentile(db, 70), db <= np.percentile(db, 10)
    per_frame = ref.reshape(lf, 2, -1).mean(1)
    cl, cq = per_frame[loud].mean(0), per_frame[quiet].mean(0)
    pred_loud = np.linalg.norm(per_frame - cl, axis=1) < np.linalg.norm(per_frame - cq, axis=1)
    acc = (pred_loud[loud].sum() + (~pred_loud[quiet]).sum()) / (loud.sum() + quiet.sum())
    print(f"speech vs quiet ({loud.sum()} loud frames, {quiet.sum()} quiet, {db[quiet].max():.0f} dBFS and below): "
          f"cos(centroids) {float(_cos(cl, cq)):.3f}, mean cos loud-loud {float(_cos(per_frame[loud], cl).mean()):.3f}, "
          f"quiet-quiet {float(_cos(per_frame[quiet], cq).mean()):.3f}, nearest-centroid accuracy {acc:.3f}; "
          f"mean row norm loud {float(np.linalg.norm(per_frame[loud], axis=1).mean()):.1f}, "
          f"quiet {float(np.linalg.norm(per_frame[quiet], axis=1).mean()):.1f}")
    pad = _rows(np.zeros(10 * SAMPLE_RATE, np.float32), 10 * FPS, encoder, whisper.CONTEXT_ROWS)
    print(f"10 s of digital silence: mean row norm {float(np.linalg.norm(pad, axis=1).mean()):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
