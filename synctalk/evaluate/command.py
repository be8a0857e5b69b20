"""`synctalk eval`: render through the infer path and score it — held-out tail or another recording."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .scoring import HELD_OUT_REFERENCES, METRIC_KEYS, SHIFT_FRAMES, EvalResult, evaluate


_DESCRIPTIONS = {
    "sync_corr": ("mouth opening vs real at lag 0 (Pearson)", "higher; 1 is perfect"),
    "lag_peak": ("lag of the best correlation, −5…+5 frames", "0; +N: generated N frames late"),
    "lag_peak_corr": ("correlation at that lag", "higher; near sync_corr"),
    "sync_corr_shifted": ("same with audio 1 s off (control)", "must be clearly below sync"),
    "sync_margin": ("sync − control", "higher"),
    "lag_peak_vs_audio": ("lag of the generated mouth vs its audio (lag_peak + the recording's A/V offset "
                          "over the scored frames)", "0"),
    "sync_corr_vs_audio": ("correlation with the real mouth moved onto its audio", "higher"),
    "psnr_mouth": ("PSNR of the mouth region (dB)", "higher"),
    "ssim_mouth": ("SSIM of the mouth region", "higher; 1 is identical"),
    "jitter_ratio": ("mouth landmark jitter, generated ÷ real", "near 1; above is shakier"),
    "sharpness_ratio": ("Laplacian variance, generated ÷ real", "near 1; below is blurrier"),
    "opening_range_ratio": ("std of mouth opening, generated ÷ real", "near 1; below is muted"),
    "mean_opening_ratio": ("mean mouth opening, generated ÷ real", "near 1"),
    "peak_opening_ratio": ("widest openings at speech (95th percentile), generated ÷ real", "near 1; below: "
                           "never opens fully"),
    "closure_ratio": ("most-closed openings at speech (5th percentile), generated ÷ real", "near 1; above: never "
                      "closes fully"),
    "silence_opening_generated": ("mean opening in silent stretches, generated", "near the real one"),
    "silence_opening_real": ("mean opening in silent stretches, real", ""),
    "silence_opening_gap": ("|generated − real| in silence ÷ real speaking range", "≤ 0.1"),
    "silence_jitter_ratio": ("mouth jitter in silence, generated ÷ real", "≤ 1"),
}


def print_table(result: EvalResult) -> None:
    """The metrics as a rich table."""
    from rich.console import Console
    from rich.table import Table

    if result.info.get("mode") == "reference":
        ref = result.info.get("reference", {})
        title = f"{result.name}: speech of {ref.get('video')} ({ref.get('frames')} frames), {result.checkpoint}"
    else:
        held = result.info.get("held_out", {})
        refs = " (references: training frames)" if held.get("reference") == "train" else ""
        title = (f"{result.name}: held-out frames {held.get('first')}–{held.get('last')} "
                 f"({held.get('count')} of {held.get('of')}){refs}, {result.checkpoint}")
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("what")
    table.add_column("better")
    for key in METRIC_KEYS:
        v = result.metrics.get(key)
        text = "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else (
            f"{v:+d}" if isinstance(v, int) else f"{v:.4f}")
        what, better = _DESCRIPTIONS[key]
        table.add_row(key, text, what, better)
    console = Console()
    console.print(table)
    profile = "  ".join(f"{k:+d}: {'n/a' if v is None else f'{v:.3f}'}" for k, v in sorted(result.lag_profile.items()))
    console.print(f"lag profile (generated vs real, +N = generated N frames late): {profile}")
    for key, what in (("dataset_av_offset", "the person's video"), ("reference_av_offset", "the reference video")):
        off = result.info.get(key)
        if off:
            console.print(f"A/V offset of {what} (lips vs sound, +N = lips N frames late): {off.get('frames'):+d} "
                          f"(r={off.get('corr')})")



def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `synctalk eval`."""
    p.add_argument("--name", required=True, help="person name: dataset/<name>/, checkpoint/<name>/")
    p.add_argument("--checkpoint", default=None, help="UNet checkpoint (default: the one `synctalk infer` uses)")
    p.add_argument("--json", default=None, type=Path, help="write the scores (and per-frame series) here")
    p.add_argument("--dataset_dir", default="dataset", type=Path)
    p.add_argument("--checkpoint_dir", default="checkpoint", type=Path)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")
    p.add_argument("--models_dir", default=None, type=Path, help="where model weights (face detector, landmarker, audio model) are looked for first")
    p.add_argument("--detector", default="auto", choices=("auto", "scrfd", "dlib"),
                   help="face detector that finds the mouths (auto: scrfd when its file is found, else dlib)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--val_fraction", type=float, default=None,
                   help="held-out tail (default: the checkpoint's training value, else 0.1)")
    p.add_argument("--reference_video", default=None, type=Path,
                   help="cross-sentence: render this recording's speech (same person) and score it against its "
                        "real mouth instead of the held-out tail")
    p.add_argument("--start_frame", type=int, default=0, help="avatar frame the cross-sentence render starts from")
    p.add_argument("--held_out_reference", default="own", choices=HELD_OUT_REFERENCES,
                   help="held-out tail: each frame's own crop as the UNet's reference image (own: as a render of "
                        "the person's own video, so the UNet sees the real mouth) or a training frame's (train)")
    p.add_argument("--landmarker", default=None, choices=("dlib", "pfld"),
                   help="landmarks that measure the mouths (default: the one the dataset was made with)")
    p.add_argument("--shift", type=int, default=SHIFT_FRAMES, help="frames the control's audio is moved by")
    p.add_argument("--no_silence", action="store_true", help="render pauses like speech (as `infer --no_silence`)")
    p.add_argument("--no_progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Entry point of `synctalk eval`."""
    from ..fileio import write_json_atomic

    result = evaluate(args.name, dataset_dir=args.dataset_dir, checkpoint_dir=args.checkpoint_dir,
                      checkpoint=args.checkpoint, device=args.device, models_dir=args.models_dir,
                      batch_size=args.batch_size, val_fraction=args.val_fraction, shift=args.shift,
                      reference_video=args.reference_video, start_frame=args.start_frame,
                      landmarker=args.landmarker, silence=not args.no_silence, progress=not args.no_progress,
                      detector=args.detector, held_out_reference=args.held_out_reference)
    print_table(result)
    if args.json:
        write_json_atomic(args.json, result.to_json())
        print(f"scores written to {args.json}")
    return 0
