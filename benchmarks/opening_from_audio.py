"""How much of a person's mouth opening the audio alone predicts: a ceiling for eval's sync_corr.

A small regressor reads the audio window the UNet hears (the dataset's features for `--asr`, the same
window, the same A/V-offset correction) and predicts the landmark mouth opening of that frame; it is
fitted on the training frames and scored like `synctalk eval` scores a render: Pearson correlation with
the real opening on the held-out tail and, with `--reference_name`, on another recording of the same
person (preprocessed like any dataset, never trained on), at lag 0 and at the best lag of −5…+5.

Two regressors: ridge regression (its strength chosen on the last tenth of the training frames) and a
two-layer perceptron with dropout. Neither draws a face, so neither is hurt by blur or by a landmarker
misreading a generated mouth: when a UNet's sync_corr on the same recording sits near these figures,
the audio features, not the generator, bound it.

    python benchmarks/opening_from_audio.py --name May --reference_name May_other --asr mel
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

RIDGE_STRENGTHS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def audio_windows(feats: np.ndarray, asr: str, rows: np.ndarray) -> np.ndarray:
    """(N, D) flattened audio windows of the feature rows `rows` (zero-padded at the ends)."""
    import torch

    from synctalk.audio.registry import get_spec

    spec = get_spec(asr).for_rows(tuple(feats.shape[1:]))
    x = spec.batch_windows(torch.from_numpy(feats), torch.as_tensor(rows, dtype=torch.long))
    return x.reshape(len(rows), -1).numpy().astype(np.float32)


def person(dataset_dir: Path, name: str, asr: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(audio windows, landmark openings, how the A/V offset was read) of one preprocessed dataset; frame
    i hears the audio row its A/V offset gives it, as in training."""
    from synctalk.data.features import load_features
    from synctalk.data.frames import frame_audio_rows
    from synctalk.faces.lms import load_all_landmarks
    from synctalk.faces.topology import topology_for_points
    from synctalk.layout import dataset_layout
    from synctalk.training.loop import resolve_av_offset

    layout = dataset_layout(dataset_dir, name)
    feats = load_features(layout, asr)
    n = min(len(feats), len(list(layout.landmarks_dir.glob("*.lms"))))
    if n < 2:
        raise SystemExit(f"{name}: no landmarks in {layout.landmarks_dir} (preprocess the recording first)")
    lms = load_all_landmarks(layout, n)
    opening = topology_for_points(lms.shape[1]).mouth_aperture(lms)
    offset, why = resolve_av_offset("auto", layout)
    return audio_windows(feats[:n], asr, frame_audio_rows(n, offset)), opening, why


class Ridge:
    """Ridge regression on standardised inputs, its strength picked on a validation slice."""

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> "Ridge":
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-6
        self.ymu = y.mean()
        z, zv = (x - self.mu) / self.sd, (x_val - self.mu) / self.sd
        gram, zy = z.T @ z, z.T @ (y - self.ymu)
        best = None
        for lam in RIDGE_STRENGTHS:
            w = np.linalg.solve(gram + lam * len(z) * np.eye(len(gram), dtype=gram.dtype), zy)
            r = _corr(zv @ w + self.ymu, y_val)
            if best is None or r > best[0]:
                best = (r, lam, w)
        self.strength, self.w = best[1], best[2]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mu) / self.sd) @ self.w + self.ymu


class Perceptron:
    """Two hidden layers with dropout, Adam, the epoch with the best validation correlation kept."""

    def __init__(self, epochs: int = 60, hidden: int = 256, seed: int = 0):
        self.epochs, self.hidden, self.seed = epochs, hidden, seed

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> "Perceptron":
        import torch

        torch.manual_seed(self.seed)
        self.mu, self.sd, self.ymu, self.ysd = x.mean(0), x.std(0) + 1e-6, y.mean(), y.std() + 1e-9
        xt = torch.from_numpy((x - self.mu) / self.sd)
        yt = torch.from_numpy(((y - self.ymu) / self.ysd).astype(np.float32))
        self.net = torch.nn.Sequential(
            torch.nn.Dropout(0.2), torch.nn.Linear(x.shape[1], self.hidden), torch.nn.GELU(), torch.nn.Dropout(0.3),
            torch.nn.Linear(self.hidden, self.hidden // 4), torch.nn.GELU(), torch.nn.Linear(self.hidden // 4, 1))
        opt = torch.optim.AdamW(self.net.parameters(), lr=1e-3, weight_decay=1e-2)
        best = (-2.0, None)
        for _ in range(self.epochs):
            self.net.train()
            for idx in torch.randperm(len(xt)).split(256):
                loss = torch.nn.functional.mse_loss(self.net(xt[idx]).squeeze(1), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            r = _corr(self.predict(x_val), y_val)
            if r > best[0]:
                best = (r, {k: v.clone() for k, v in self.net.state_dict().items()})
        self.net.load_state_dict(best[1])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        import torch

        self.net.eval()
        with torch.no_grad():
            out = self.net(torch.from_numpy(((x - self.mu) / self.sd).astype(np.float32))).squeeze(1).numpy()
        return out * self.ysd + self.ymu


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    from synctalk.evaluate.metrics import pearson

    r = pearson(a, b)
    return -1.0 if r is None else float(r)


def score(pred: np.ndarray, real: np.ndarray) -> str:
    """Correlation at lag 0 and the best lag (+N: the prediction N frames late), with the std ratio."""
    from synctalk.evaluate.metrics import lag_profile, peak_lag

    peak = peak_lag(lag_profile(pred, real)) or {"lag": 0, "corr": float("nan")}
    return (f"r {_corr(pred, real):.3f} at lag 0, peak {peak['lag']:+d} = {peak['corr']:.3f}, "
            f"range {pred.std() / max(real.std(), 1e-9):.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="the person (its training frames and held-out tail)")
    p.add_argument("--reference_name", default=None, help="another preprocessed recording of the same person")
    p.add_argument("--dataset_dir", type=Path, default=Path("dataset"))
    p.add_argument("--asr", default="mel", help="audio features (the dataset must have them)")
    p.add_argument("--val_fraction", type=float, default=0.1)
    p.add_argument("--seeds", type=int, default=3, help="perceptron runs (their spread is printed)")
    args = p.parse_args(argv)

    from synctalk.data.samples import split_indices

    x, y, why = person(args.dataset_dir, args.name, args.asr)
    train, tail = split_indices(len(y), args.val_fraction)
    fit, val = split_indices(len(train), 0.1)  # the regressors' own choice: the last tenth of the training frames
    parts = [(f"{args.name} held-out tail ({len(tail)} frames)", x[tail], y[tail])]
    if args.reference_name:
        xr, yr, why_r = person(args.dataset_dir, args.reference_name, args.asr)
        parts.append((f"{args.reference_name} ({len(yr)} frames, A/V offset {why_r})", xr, yr))
    print(f"{args.name}: {len(train)} training frames, {x.shape[1]} audio values a frame ({args.asr}), "
          f"A/V offset {why}")
    ridge = Ridge().fit(x[train][fit], y[train][fit], x[train][val], y[train][val])
    print(f"ridge (strength {ridge.strength:g}):")
    for what, xs, ys in parts:
        print(f"  {what}: {score(ridge.predict(xs), ys)}")
    for seed in range(args.seeds):
        mlp = Perceptron(seed=seed).fit(x[train][fit], y[train][fit], x[train][val], y[train][val])
        print(f"perceptron, seed {seed}:")
        for what, xs, ys in parts:
            print(f"  {what}: {score(mlp.predict(xs), ys)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
