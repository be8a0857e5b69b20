"""Where a trained SyncNet's best offset lands on a person's held-out tail, against the frame's own audio.

The held-out figures (`offset_acc_1_speech`, ...) count how often offset 0 — the frame's audio after the
A/V-offset correction — scores best. This says why a critic misses: if its choices pile up a frame or more
off 0 (in the whole tail or in a part of it), the tail's correction disagrees with that of the frames the
critic learnt from (a drift the fitted line did not follow); if they spread around 0, the critic itself
cannot tell the offsets apart. (An offset wrong by the same amount everywhere cannot show here: the critic
learns it too.) Last, the held-out balanced pairs (`val_acc`: own audio against audio at least 5 frames
away): the accuracy at the logit's sign, at the best threshold, and the area under the ROC curve, which
say whether a low binary accuracy is a matter of calibration (the threshold) or of separation.

With `--unet`: what this critic's sync loss would ask of that UNet. Over the held-out tail in runs of
the critic's frames (each frame's reference image a training frame's, as in training's validation),
the BCE of the generated run being in sync beside that of the real run, the share of runs whose
generated mouth the critic already scores at least as in sync as the real one, and the relative sync
loss (`train-unet --sync_mode relative`: the mean of max(0, generated - real)). A critic that scores the
UNet's mouths as well as the person's own has nothing to teach it through the relative loss, and its
absolute loss then pushes the mouth past the real one.

    python benchmarks/syncnet_offsets.py --checkpoint checkpoint/May/syncnet/checkpoint_best.pth --name May
    python benchmarks/syncnet_offsets.py --checkpoint ... --name May --unet checkpoint/May/checkpoint_best.pth
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="a SyncNet checkpoint")
    p.add_argument("--name", required=True)
    p.add_argument("--dataset_dir", type=Path, default=Path("dataset"))
    p.add_argument("--val_fraction", type=float, default=0.1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--parts", type=int, default=4, help="the tail is also read in this many consecutive parts")
    p.add_argument("--unet", type=Path, default=None, help="a UNet checkpoint of the person: how the critic scores "
                                                            "its mouths against the real ones")
    args = p.parse_args(argv)

    from synctalk.data import load_frame_data
    from synctalk.data.samples import split_indices
    from synctalk.device import resolve_device
    from synctalk.layout import dataset_layout
    from synctalk.training.loop import resolve_av_offset
    from synctalk.training.syncnet import (MAX_OFFSET, held_out_pairs, load_syncnet, offset_scores,
                                           run_offset_accuracy, speech_frames)

    device = resolve_device(args.device)
    layout = dataset_layout(args.dataset_dir, args.name)
    model, ckpt = load_syncnet(args.checkpoint, device)
    offset, why = resolve_av_offset("auto", layout)
    data = load_frame_data(layout, ckpt["asr"], device=device, progress=False, av_offset=offset)
    _train, val = split_indices(len(data), args.val_fraction)
    speech = speech_frames(layout, data)
    at = np.ones(len(val), bool) if speech is None else np.asarray(speech, bool)[val]
    where = "at speech"
    if not at.any():  # as the held-out figures: without speech in the tail, every frame counts
        at, where = np.ones(len(val), bool), "all frames (no speech in the tail)"
    scores, _valid = offset_scores(model, data, val, device=device)
    chosen = scores.argmax(dim=1).cpu().numpy() - MAX_OFFSET
    c = chosen[at]
    print(f"{args.name}: held-out frames {val[0]}-{val[-1]} ({len(val)}; read {where}: {int(at.sum())}); "
          f"A/V offset {why}")
    print(f"the label moved by s frames: offset accuracy within ±1 / exact, {where}")
    for s in range(-3, 4):
        print(f"  {s:+d}: {np.mean(np.abs(c - s) <= 1):.3f} / {np.mean(c == s):.3f}")
    hist = {int(o): int(np.sum(c == o)) for o in range(-5, 6)}
    print(f"chosen offsets, -5..+5: {hist}; beyond: {int(np.sum(np.abs(c) > 5))}")
    for k, part in enumerate(np.array_split(np.arange(len(val)), max(1, min(args.parts, len(val))))):
        sel = chosen[part][at[part]]
        if not sel.size:
            continue
        near = sel[np.abs(sel) <= 5]
        print(f"  part {k + 1} (frames {val[part[0]]}-{val[part[-1]]}): ±1 {np.mean(np.abs(sel) <= 1):.3f}, "
              f"mean chosen offset within ±5 {float(np.mean(near)) if near.size else float('nan'):+.2f}")
    by_mouth(layout, len(data), val[at], c)
    # a run of frames: the scores of W consecutive held-out frames summed at each offset (the clip offset
    # is this over the whole tail; the held-out figure offset_acc_1_speech_run5 is W = 5)
    parts = []
    for w in (1, 5, 9, 25):
        acc, runs = run_offset_accuracy(scores, at, w)
        if runs:
            parts.append(f"{w} frames: ±1 {acc:.3f} ({runs} runs)")
    print("runs of frames, mostly at speech, scores summed: " + "; ".join(parts))
    logits, labels = (t.cpu().numpy() for t in held_out_pairs(model, data, val, device=device))
    pairs = np.concatenate([at, at])
    acc0, best, threshold, auc = pair_separation(logits[pairs], labels[pairs])
    print(f"balanced pairs {where} ({int(pairs.sum())}): accuracy {acc0:.3f} at logit 0, {best:.3f} at the best "
          f"threshold ({threshold:+.2f}); ROC AUC {auc:.3f}")
    if args.unet is not None:
        generated, real, middle = critic_on_unet(model, args.unet, layout, data, _train, val, device)
        for what, sel in (("all runs", np.ones(len(middle), bool)), (where, at[middle])):
            if not sel.any():
                continue
            g, r = generated[sel], real[sel]
            print(f"critic on the UNet's mouths, {what} ({int(sel.sum())} runs of {model.face_frames}): BCE generated "
                  f"{g.mean():.4f}, real {r.mean():.4f}; generated at least as in sync {np.mean(g <= r):.3f}; "
                  f"relative sync loss {np.maximum(g - r, 0).mean():.4f}")
    return 0


def critic_on_unet(critic, unet_path: Path, layout, data, train, val,
                   device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(BCE of each generated run, of each real run, the held-out position of each run's middle frame): the
    UNet of `unet_path` redraws the tail in runs of the critic's frames, each with a training frame's
    crop as its reference image (drawn as training's validation draws them)."""
    import torch

    from synctalk.data import parse_mask
    from synctalk.losses import sync_bce
    from synctalk.render import load_generator
    from synctalk.training.unet import validation_references

    unet, ckpt = load_generator(unet_path, device, layout=layout)
    config = ckpt.get("config") or {}
    mask = parse_mask(config.get("mask"))  # as the renderer reads it
    k = int(critic.face_frames)
    count = len(val) // k * k
    idx = torch.as_tensor(np.asarray(val[:count]), dtype=torch.long)
    refs = validation_references(idx, train, int(config.get("seed") or 0))  # the run's own validation draw
    generated, real = [], []
    step = 8 * k
    with torch.no_grad():
        for start in range(0, count, step):
            sl = slice(start, start + step)
            b = data.unet_batch(idx[sl].to(device), refs[sl].to(device), mask)
            pred = unet(b.img6, b.audio).float()
            g, r = sync_bce(critic, torch.cat([pred, b.target.float()]), torch.cat([b.audio, b.audio])).chunk(2)
            generated.append(g.cpu().numpy())
            real.append(r.cpu().numpy())
    return np.concatenate(generated), np.concatenate(real), np.arange(count // k) * k + k // 2


def pair_separation(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float, float, float]:
    """(accuracy at logit 0, best accuracy over thresholds, that threshold, ROC AUC) of scored pairs;
    n log n, so a long tail reads as fast as a short one."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels) > 0.5
    n, n_pos = len(logits), int(labels.sum())
    n_neg = n - n_pos
    acc0 = float(np.mean((logits > 0) == labels))
    values, inverse = np.unique(logits, return_inverse=True)
    pos_at = np.bincount(inverse, weights=labels, minlength=len(values))
    neg_at = np.bincount(inverse, weights=~labels, minlength=len(values))
    # "positive above the cut": a cut below everything, then one at each distinct value
    neg_below = np.concatenate([[0.0], np.cumsum(neg_at)])
    pos_above = n_pos - np.concatenate([[0.0], np.cumsum(pos_at)])
    accs = (neg_below + pos_above) / max(n, 1)
    k = int(np.argmax(accs))
    threshold = float(values[k - 1]) if k > 0 else float("-inf")
    if not n_pos or not n_neg:
        return acc0, float(accs[k]), threshold, float("nan")
    # AUC: the chance that a positive outscores a negative, ties counting half (Mann-Whitney)
    neg_lower = np.cumsum(neg_at) - neg_at
    auc = float(np.sum(pos_at * (neg_lower + 0.5 * neg_at)) / (n_pos * n_neg))
    return acc0, float(accs[k]), threshold, auc


def by_mouth(layout, frames: int, val, chosen) -> None:
    """The same read in thirds of the frames by the mouth's opening and by how much it moves (landmarks)."""
    from synctalk.errors import SyncTalkError
    from synctalk.faces.lms import load_all_landmarks
    from synctalk.faces.topology import topology_for_points

    try:
        lms = load_all_landmarks(layout, frames)
    except (SyncTalkError, OSError, ValueError) as exc:  # a dataset without its landmark files: the rest stands
        print(f"(no reading by mouth opening: {exc})")
        return
    aperture = topology_for_points(lms.shape[1]).mouth_aperture(lms)
    motion = np.convolve(np.abs(np.gradient(aperture)), np.ones(5) / 5, mode="same")  # over the critic's 5 frames
    for what, x in (("mouth opening", aperture[val]), ("mouth motion", motion[val])):
        if len(x) < 3:
            return
        third = np.digitize(x, np.quantile(x, [1 / 3, 2 / 3]))
        parts = []
        for k, label in enumerate(("low", "mid", "high")):
            sel = chosen[third == k]
            parts.append(f"{label} ±1 {np.mean(np.abs(sel) <= 1):.3f} / beyond ±5 {np.mean(np.abs(sel) > 5):.3f}")
        print(f"by {what} (thirds): " + "; ".join(parts))


if __name__ == "__main__":
    sys.exit(main())
