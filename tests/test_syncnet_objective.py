"""The SyncNet's contrast objective: runs of consecutive frames, each face against its run's audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synctalk.training.syncnet import contrast_step
from unet_328 import SyncNet


def test_contrast_step_learns_to_pick_the_own_window_on_a_toy() -> None:
    """A toy whose 'mouth' brightness is the loudness of the frame's own sound: after some steps
    the critic picks the own window among its run's far more often than chance (1/8)."""
    torch.manual_seed(0)
    model = SyncNet("mel", "tiny", face_rows=(0.0, 1.0), audio_context=8)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    chunk, runs = 8, 4

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        level = torch.rand(runs * chunk)
        faces = level[:, None, None, None].expand(-1, 3, 32, 32).clone()
        audio = torch.zeros(runs * chunk, 1, 80, 64)
        audio[:, :, :, 28:36] = (level * 8 - 4)[:, None, None, None]  # the frame's own mel steps
        return faces, audio

    first = None
    for step in range(60):
        faces, audio = batch()
        loss, picked = contrast_step(model, opt, scaler, faces, audio, chunk, torch.device("cpu"), "none")
        assert torch.isfinite(loss) and 0.0 <= float(picked) <= 1.0
        first = float(loss) if first is None else first
    model.eval()
    faces, audio = batch()
    with torch.no_grad():
        a, f = model(faces, audio)
    sim = torch.einsum("rid,rjd->rij", f.reshape(runs, chunk, -1), a.reshape(runs, chunk, -1))
    hits = (sim.argmax(dim=2) == torch.arange(chunk)).float().mean()
    assert float(loss) < first and float(hits) > 0.4


def test_pair_separation_reads_accuracy_threshold_and_auc_as_counting_would() -> None:
    """benchmarks/syncnet_offsets.py's binary reading, against the brute-force count on tied scores."""
    import sys

    from conftest import REPO

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from benchmarks.syncnet_offsets import pair_separation

    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(1, 1, 300), rng.normal(0, 1, 400)].round(1)  # rounded: many ties
    y = np.r_[np.ones(300), np.zeros(400)]
    acc0, best, threshold, auc = pair_separation(x, y)
    pos, neg = x[y > 0], x[y == 0]
    assert acc0 == pytest.approx(np.mean((x > 0) == (y > 0)))
    assert best == pytest.approx(max(np.mean((x > c) == (y > 0)) for c in np.r_[-np.inf, np.unique(x)]))
    assert np.mean((x > threshold) == (y > 0)) == pytest.approx(best)
    assert auc == pytest.approx(np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])))
    assert pair_separation(np.r_[2.0, 3.0], np.r_[0, 1])[3] == 1.0  # perfectly separated
