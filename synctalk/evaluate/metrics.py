"""Pure metrics of `synctalk eval`: images, mouth-opening series, lags, silence. No I/O, no models."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..constants import BORDER, MOUTH_BOX

LAG_FRAMES = 5  # the lag profile spans −5…+5 frames


def mouth_region(crop328: np.ndarray) -> np.ndarray:
    """The mouth box (constants.MOUTH_BOX, in the inner 320) of a 328 crop."""
    x0, y0, x1, y1 = MOUTH_BOX
    return crop328[BORDER + y0:BORDER + y1, BORDER + x0:BORDER + x1]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of two uint8 images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(a: np.ndarray, b: np.ndarray, window: int = 11, sigma: float = 1.5) -> float:
    """Structural similarity of two uint8 images (Gaussian window, per channel, averaged; 'valid' borders)."""
    import cv2

    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    x = np.asarray(a, np.float64)
    y = np.asarray(b, np.float64)
    g = _gaussian_kernel(window, sigma)
    r = window // 2

    def blur(t: np.ndarray) -> np.ndarray:  # separable Gaussian, then only the fully covered pixels
        out = cv2.sepFilter2D(t, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)
        return out[r:out.shape[0] - r, r:out.shape[1] - r]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cov = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def laplacian_variance(img: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: higher is sharper."""
    import cv2

    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation, or None when either series is constant."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if len(x) < 2 or x.std() < 1e-12 or y.std() < 1e-12:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def jitter(points: np.ndarray) -> float:
    """Mean |second difference| over time of landmark tracks (T, P, 2)."""
    if len(points) < 3:
        return float("nan")
    return float(np.abs(points[2:] - 2 * points[1:-1] + points[:-2]).mean())


def ratio(a: float | None, b: float | None) -> float | None:
    """a ÷ b, or None when either is missing or not finite, or b is 0."""
    if a is None or b is None:
        return None
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return a / b


def lag_profile(x: Sequence[float], y: Sequence[float], max_lag: int = LAG_FRAMES,
                mask_y: np.ndarray | None = None) -> dict[int, float | None]:
    """Pearson correlation of x[t] with y[t - lag] for lag in −max_lag…+max_lag.

    A peak at a positive lag means x follows y that many frames late (for eval: the generated mouth
    moves after the real one). With `mask_y`, only pairs whose y frame is in the mask count.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = min(len(x), len(y))
    out: dict[int, float | None] = {}
    for lag in range(-max_lag, max_lag + 1):
        xs = x[max(0, lag):n + min(0, lag)]
        ys = y[max(0, -lag):n - max(0, lag)]
        if mask_y is not None:
            keep = np.asarray(mask_y, bool)[max(0, -lag):n - max(0, lag)]
            xs, ys = xs[keep], ys[keep]
        out[lag] = pearson(xs, ys)
    return out


def peak_lag(profile: dict[int, float | None]) -> dict[str, float] | None:
    """The lag of the highest correlation ({"lag", "corr", "subframe"}), None when nothing is defined.

    `subframe` refines the peak with a parabola through it and its two neighbours; ties go to the
    lag nearest 0.
    """
    finite = {k: v for k, v in profile.items() if v is not None and math.isfinite(v)}
    if not finite:
        return None
    lag = max(finite, key=lambda k: (finite[k], -abs(k)))
    sub = float(lag)
    lo, hi = finite.get(lag - 1), finite.get(lag + 1)
    if lo is not None and hi is not None:
        denom = lo - 2 * finite[lag] + hi
        if denom < 0:
            sub = lag + float(np.clip(0.5 * (lo - hi) / denom, -0.5, 0.5))
    return {"lag": int(lag), "corr": float(finite[lag]), "subframe": sub}


def masked_jitter(points: np.ndarray, mask: np.ndarray) -> float:
    """jitter over the frame triples (t-1, t, t+1) that lie wholly inside `mask` (NaN if none)."""
    points = np.asarray(points, np.float64)
    mask = np.asarray(mask, bool)[:len(points)]
    if len(points) < 3:
        return float("nan")
    inside = mask[2:] & mask[1:-1] & mask[:-2]
    if not inside.any():
        return float("nan")
    d = np.abs(points[2:] - 2 * points[1:-1] + points[:-2])[inside]
    return float(d.mean())


def masked_mean(x: Sequence[float], mask: np.ndarray) -> float:
    """Mean of x where mask holds (NaN if nowhere)."""
    x = np.asarray(x, np.float64)
    m = np.asarray(mask, bool)[:len(x)]
    return float(x[m].mean()) if m.any() else float("nan")


def speaking_percentile(openings: Sequence[float], speech: np.ndarray, q: float) -> float:
    """The q-th percentile of the mouth opening over speech frames (NaN if fewer than two)."""
    x = np.asarray(openings, np.float64)
    m = np.asarray(speech, bool)[:len(x)]
    return float(np.percentile(x[m], q)) if m.sum() >= 2 else float("nan")


def finite_or_none(v: Any) -> Any:
    """v, or None where it is a non-finite float."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def mouth_patch(frame: np.ndarray, face_box: Sequence[float], size: tuple[int, int] = (160, 96)) -> np.ndarray:
    """The lower middle of a face box (where the mouth is), resized to `size` (w, h): comparable across videos."""
    import cv2

    x1, y1, x2, y2 = (float(v) for v in face_box[:4])
    w, h = x2 - x1, y2 - y1
    xa, xb = int(round(x1 + 0.2 * w)), int(round(x2 - 0.2 * w))
    ya, yb = int(round(y1 + 0.6 * h)), int(round(y2))
    hh, ww = frame.shape[:2]
    xa, xb, ya, yb = max(xa, 0), min(xb, ww), max(ya, 0), min(yb, hh)
    if xb - xa < 2 or yb - ya < 2:
        return np.zeros((size[1], size[0], 3), np.uint8)
    return cv2.resize(frame[ya:yb, xa:xb], size, interpolation=cv2.INTER_AREA)


def score_series(real: np.ndarray, generated: np.ndarray, shifted: np.ndarray | None, real_points: np.ndarray,
                 generated_points: np.ndarray, speech: np.ndarray | None = None,
                 max_lag: int = LAG_FRAMES) -> tuple[dict[str, float | None], dict[int, float | None]]:
    """Sync, lag, liveliness, jitter and silence figures of mouth-opening series (and mouth point tracks).

    Returns (metrics, lag profile). `speech` (bool per frame) marks where someone speaks; the
    silence figures use the rest.
    """
    real = np.asarray(real, np.float64)
    generated = np.asarray(generated, np.float64)
    n = min(len(real), len(generated))
    real, generated = real[:n], generated[:n]
    sync = pearson(generated, real)
    control = pearson(shifted[:n], real) if shifted is not None else None
    profile = lag_profile(generated, real, max_lag)
    peak = peak_lag(profile)
    m: dict[str, float | None] = {
        "sync_corr": sync,
        "sync_corr_shifted": control,
        "sync_margin": (sync - control) if sync is not None and control is not None else None,
        "lag_peak": peak["lag"] if peak else None,
        "lag_peak_subframe": round(peak["subframe"], 3) if peak else None,
        "lag_peak_corr": peak["corr"] if peak else None,
        "jitter_ratio": ratio(jitter(generated_points[:n]), jitter(real_points[:n])),
        "opening_range_ratio": ratio(float(np.std(generated)), float(np.std(real))),
        "mean_opening_ratio": ratio(float(np.mean(generated)), float(np.mean(real))),
    }
    silent = np.zeros(n, bool) if speech is None else ~np.asarray(speech, bool)[:n]
    gen_rest, real_rest = masked_mean(generated, silent), masked_mean(real, silent)
    # articulation, from the two distributions at speech (frame pairing and sync do not enter): how wide
    # the widest openings get and how far the mouth closes, each against the real mouth's
    wide_gen, wide_real = speaking_percentile(generated, ~silent, 95), speaking_percentile(real, ~silent, 95)
    shut_gen, shut_real = speaking_percentile(generated, ~silent, 5), speaking_percentile(real, ~silent, 5)
    span = wide_real - shut_real  # the real speaking range (NaN without speech)
    m.update({
        "peak_opening_ratio": ratio(wide_gen, wide_real),
        "closure_ratio": ratio(shut_gen, shut_real),
        "silence_frames": int(silent.sum()),
        "silence_opening_generated": finite_or_none(gen_rest),
        "silence_opening_real": finite_or_none(real_rest),
        # how far the resting mouth is from the real one, in units of the real speaking range (≤ 0.1 is good)
        "silence_opening_gap": finite_or_none(abs(gen_rest - real_rest) / span) if span and span > 0 else None,
        "silence_jitter_ratio": ratio(masked_jitter(generated_points[:n], silent),
                                      masked_jitter(real_points[:n], silent)),
    })
    return m, profile
