"""LIME's locally weighted linear surrogate (kernel weights + scikit-learn ridge)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.metrics.pairwise import cosine_distances


def kernel_weights(masks: np.ndarray, kernel_width: float = 0.25) -> np.ndarray:
    """LIME's exponential kernel on the cosine distance of every mask to the all-ones mask."""
    ones = np.ones((1, masks.shape[1]))
    d = cosine_distances(masks.astype(np.float64), ones)[:, 0]  # all-zero mask -> distance 1
    return np.sqrt(np.exp(-(d ** 2) / kernel_width ** 2))


@dataclass(frozen=True)
class SurrogateFit:
    """Per target: ``coef [t, d]``, ``intercept [t]``, weighted ``r2 [t]``."""

    coef: np.ndarray
    intercept: np.ndarray
    r2: np.ndarray


def fit_surrogate(masks: np.ndarray, targets: np.ndarray, weights: np.ndarray, alpha: float = 1.0) -> SurrogateFit:
    """Weighted ridge of ``targets [n, t]`` on ``masks [n, d]``; one fit for all targets."""
    x = masks.astype(np.float64)
    y = np.asarray(targets, np.float64).reshape(len(x), -1)
    model = Ridge(alpha=alpha, fit_intercept=True).fit(x, y, sample_weight=weights)
    pred = model.predict(x).reshape(y.shape)
    w = weights[:, None]
    mean = (w * y).sum(0) / w.sum()
    ss_res = (w * (y - pred) ** 2).sum(0)
    ss_tot = (w * (y - mean) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, 0.0)
    return SurrogateFit(np.atleast_2d(model.coef_), np.atleast_1d(model.intercept_), r2)
