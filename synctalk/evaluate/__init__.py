"""`synctalk eval`: metrics (pure functions), scoring (render through the infer path and measure), command."""

from .command import add_arguments, print_table, run
from .metrics import (LAG_FRAMES, jitter, lag_profile, laplacian_variance, masked_jitter, mouth_patch, mouth_region,
                      peak_lag, pearson, psnr, score_series, ssim)
from .scoring import METRIC_KEYS, MIN_FRAMES, SHIFT_FRAMES, EvalResult, LandmarkMeter, evaluate, landmark_meter

__all__ = [
    "LAG_FRAMES", "METRIC_KEYS", "MIN_FRAMES", "SHIFT_FRAMES", "EvalResult", "LandmarkMeter", "add_arguments",
    "evaluate", "jitter", "lag_profile", "landmark_meter", "laplacian_variance", "masked_jitter", "mouth_patch",
    "mouth_region", "peak_lag", "pearson", "print_table", "psnr", "run", "score_series", "ssim",
]
