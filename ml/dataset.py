"""Windows of per-minute features as the LSTM sees them (numpy): standardised residuals
against the deployment's own running baseline (`residuals`, what the detector feeds
the model), or, for models trained before, z-scores with fixed training-time scaling."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from helios.ml.generate import FEATURES, Series

WINDOW = 60
CLIP = 20.0


@dataclass(frozen=True)
class Scaling:
    """Per-feature mean and spread of normal traffic; inputs are clipped z-scores."""

    features: list[str]
    mean: list[float]
    std: list[float]
    clip: float = CLIP

    def apply(self, steps: Sequence[dict[str, float]]) -> np.ndarray:
        raw = np.array([[s.get(f, 0.0) for f in self.features] for s in steps], dtype=np.float32)
        scaled = (raw - np.array(self.mean, dtype=np.float32)) / np.array(
            self.std, dtype=np.float32
        )
        return np.clip(scaled, -self.clip, self.clip)


def fit_scaling(series: Series) -> Scaling:
    normal = [s for s, label in zip(series.steps, series.labels, strict=True) if label is None]
    raw = np.array([[s[f] for f in FEATURES] for s in normal], dtype=np.float64)
    mean = raw.mean(axis=0)
    # A floor keeps near-constant rates from turning noise into huge z-scores.
    std = np.maximum(raw.std(axis=0), np.maximum(np.abs(mean) * 0.05, 1e-3))
    return Scaling(list(FEATURES), mean.tolist(), std.tolist())


def windows(series: Series, scaling: Scaling) -> tuple[np.ndarray, np.ndarray]:
    """(n, WINDOW, features) windows and the label of each window's last step."""
    x = scaling.apply(series.steps)
    labels = np.array([label is not None for label in series.labels], dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(x, WINDOW, axis=0)  # (n, features, WINDOW)
    return np.ascontiguousarray(view.transpose(0, 2, 1)), labels[WINDOW - 1 :]


def residuals(series: Series, features: Sequence[str] = FEATURES) -> np.ndarray:
    """Each step's features as standardised residuals against the running EWMA baseline
    before that step, clipped, exactly as LstmDetector computes them at run time: the
    scale of a deployment never reaches the model."""
    from helios.plugins.detectors.ewma import EwmaDetector

    ewma = EwmaDetector()
    rows = np.zeros((len(series.steps), len(features)), dtype=np.float32)
    for i, step in enumerate(series.steps):
        for j, name in enumerate(features):
            base = ewma.plain_baseline(name)
            if base is not None:
                rows[i, j] = max(-CLIP, min(CLIP, (step[name] - base[0]) / base[1]))
        ewma.update(step)
    return rows


def residual_windows(series: Series) -> tuple[np.ndarray, np.ndarray]:
    """(n, WINDOW, features) residual windows and the label of each window's last step."""
    x = residuals(series)
    labels = np.array([label is not None for label in series.labels], dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(x, WINDOW, axis=0)
    return np.ascontiguousarray(view.transpose(0, 2, 1)), labels[WINDOW - 1 :]
