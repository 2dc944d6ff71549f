"""The locally weighted linear surrogate: row weights of each kernel, one weighted ridge solver
(for the fit and for its bootstrap replicates), and the stability of the top-k set.

The ridge is scikit-learn's ``Ridge(alpha, fit_intercept=True)`` with ``sample_weight`` (the
intercept is not penalised), solved in closed form so that many weightings of the same rows --
bootstrap replicates are multinomial counts times the kernel weights -- are one batched solve.
``tests/test_sampling.py`` checks it against scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics.pairwise import cosine_distances
from threadpoolctl import threadpool_limits

from audiolime.method.request import TIE, ExplainRequest
from audiolime.method.sampling import MaskSet, shapley_kernel

BOOTSTRAP_FITS = 100
SHAP_ANCHOR_WEIGHT = 1e3  # x the total weight of the sampled rows: f(all on), f(all off) as constraints


def kernel_weights(masks: np.ndarray, kernel_width: float = 0.25) -> np.ndarray:
    """LIME's exponential kernel on the cosine distance of every mask to the all-ones mask."""
    ones = np.ones((1, masks.shape[1]))
    d = cosine_distances(masks.astype(np.float64), ones)[:, 0]  # all-zero mask -> distance 1
    return np.sqrt(np.exp(-(d ** 2) / kernel_width ** 2))


def anchor_rows(masks: np.ndarray, kernel: str) -> np.ndarray:
    """Rows that are constraints rather than samples: all ones (every kernel), all zeros (``shap``)."""
    s = masks.sum(axis=1)
    return (s == masks.shape[1]) | ((s == 0) if kernel == "shap" else False)


def row_weights(masks: np.ndarray, kernel: str = "lime", kernel_width: float = 0.25,
                exhaustive: bool = False) -> np.ndarray:
    """Regression weight of every drawn row. ``lime``: LIME's kernel. ``shap``: the rows were
    drawn from the Shapley kernel, so 1 each -- or, enumerated exhaustively, the kernel itself --
    and the two anchors a weight far above everything else (Kernel SHAP's constraints)."""
    if kernel == "lime":
        return kernel_weights(masks, kernel_width)
    w = shapley_kernel(masks) if exhaustive else np.ones(len(masks))
    anchors = anchor_rows(masks, "shap")
    w[anchors] = 0.0
    w[anchors] = SHAP_ANCHOR_WEIGHT * max(w.sum(), 1.0)
    return w


@dataclass(frozen=True)
class SurrogateFit:
    """Per target: ``coef [t, d]``, ``intercept [t]``, weighted ``r2 [t]``."""

    coef: np.ndarray
    intercept: np.ndarray
    r2: np.ndarray


def ridge(x: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted ridge with an unpenalised intercept, for ``b`` weightings at once.

    ``x [n, d]``, ``y [n, t]``, ``w [b, n]`` -> ``coef [b, t, d]``, ``intercept [b, t]``."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64).reshape(len(x), -1)
    w = np.atleast_2d(np.asarray(w, np.float64))
    sw = w.sum(axis=1)  # [b]
    xm = (w @ x) / sw[:, None]  # [b, d]
    ym = (w @ y) / sw[:, None]  # [b, t]
    wx = w[:, :, None] * x[None]  # [b, n, d]
    wxt = np.transpose(wx, (0, 2, 1))  # [b, d, n]
    gram = wxt @ x - sw[:, None, None] * xm[:, :, None] * xm[:, None, :]  # batched BLAS, not einsum
    xy = wxt @ y - sw[:, None, None] * xm[:, :, None] * ym[:, None, :]
    d = x.shape[1]
    # 1e-10: a component constant in every row (possible in a bootstrap replicate) with alpha = 0
    coef = np.linalg.solve(gram + (alpha + 1e-10) * np.eye(d)[None], xy)  # [b, d, t]
    intercept = ym - np.einsum("bd,bdt->bt", xm, coef)
    return np.transpose(coef, (0, 2, 1)), intercept


def fit_surrogate(masks: np.ndarray, targets: np.ndarray, weights: np.ndarray, alpha: float = 1.0) -> SurrogateFit:
    """Weighted ridge of ``targets [n, t]`` on ``masks [n, d]``; one fit for all targets."""
    x = masks.astype(np.float64)
    y = np.asarray(targets, np.float64).reshape(len(x), -1)
    coef, intercept = ridge(x, y, weights[None, :], alpha)
    coef, intercept = coef[0], intercept[0]
    pred = x @ coef.T + intercept
    w = weights[:, None]
    mean = (w * y).sum(0) / w.sum()
    ss_res = (w * (y - pred) ** 2).sum(0)
    ss_tot = (w * (y - mean) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, 0.0)
    return SurrogateFit(coef, intercept, r2)


def top_set(coef: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest-weight components of each row of ``coef [..., d]``, as a sorted index set."""
    return np.sort(np.argsort(-coef, axis=-1, kind="stable")[..., :k], axis=-1)


def top_k_stability(masks: np.ndarray, targets: np.ndarray, weights: np.ndarray, alpha: float, k: int,
                    seed: int | Sequence[int], anchors: np.ndarray | None = None, coef: np.ndarray | None = None,
                    fits: int = BOOTSTRAP_FITS, chunk: int = 25, tie: float = TIE) -> np.ndarray:
    """Per target, the share of ``fits`` bootstrap replicates (rows resampled with replacement,
    anchor rows kept as they are) whose top-k set agrees with the full fit's (``coef [t, d]``,
    fitted here when not given): ``[t]`` in [0, 1]. A replicate agrees when it holds every
    component the full fit puts clearly above its k-th weight and none clearly below; "clearly":
    by more than ``tie`` x the largest absolute weight (0: the exact set, exactly equal weights
    aside). Components within that
    of the k-th weight are tied for the last places: which of them a replicate picks does not
    count, so a near-tie (which no number of masks would settle in time) does not keep sampling
    going to ``max_samples``."""
    with threadpool_limits(1, user_api="blas"):  # small matrices: see fit_round
        return _stability(masks, targets, weights, alpha, k, seed, anchors, coef, fits, chunk, tie)


def tied_bounds(coef: np.ndarray, k: int, tie: float = TIE) -> tuple[np.ndarray, np.ndarray]:
    """For ``coef [t, d]``: the components clearly in the top-k set (above the k-th weight by more
    than ``tie`` x max |weight|) and those clearly out (below it by more), as ``[t, d]`` masks."""
    kth = -np.sort(-coef, axis=-1)[..., k - 1:k]
    margin = tie * np.abs(coef).max(axis=-1, keepdims=True)
    return coef > kth + margin, coef < kth - margin


def agrees_up_to_ties(chosen: Sequence[int], weights: Sequence[float], tie: float = TIE) -> bool:
    """Whether the set ``chosen`` (k components) holds every component ``weights`` put clearly in
    their top-k set and none clearly out (see :func:`tied_bounds`)."""
    w = np.asarray(weights, np.float64)[None, :]
    must_in, must_out = tied_bounds(w, len(chosen), tie)
    picked = np.zeros(w.shape, bool)
    picked[0, list(chosen)] = True
    return bool(_agree(picked, must_in, must_out)[0])


def _agree(chosen: np.ndarray, must_in: np.ndarray, must_out: np.ndarray) -> np.ndarray:
    """``chosen [..., d]`` boolean sets against the bounds ``[..., d]``: agreement ``[...]``."""
    return (chosen | ~must_in).all(axis=-1) & ~(chosen & must_out).any(axis=-1)


def _stability(masks, targets, weights, alpha, k, seed, anchors, coef, fits, chunk, tie) -> np.ndarray:
    x = masks.astype(np.float64)
    y = np.asarray(targets, np.float64).reshape(len(x), -1)
    k = min(k, x.shape[1])
    coef = ridge(x, y, weights[None, :], alpha)[0][0] if coef is None else np.atleast_2d(coef)  # [t, d]
    must_in, must_out = tied_bounds(coef, k, tie)  # tie 0: the full fit's set (exactly equal weights aside)
    anchors = np.zeros(len(x), bool) if anchors is None else anchors
    free = np.flatnonzero(~anchors)
    rng = np.random.default_rng(seed)
    same = np.zeros(y.shape[1])
    for start in range(0, fits, chunk):
        b = min(chunk, fits - start)
        counts = np.zeros((b, len(x)))
        counts[:, anchors] = 1.0
        for i in range(b):
            counts[i, free] = np.bincount(rng.integers(0, len(free), len(free)), minlength=len(free))
        coef, _ = ridge(x, y, counts * weights[None, :], alpha)  # [b, t, d]
        chosen = np.zeros(coef.shape, bool)  # [b, t, d]
        np.put_along_axis(chosen, top_set(coef, k), True, axis=-1)
        same += _agree(chosen, must_in[None], must_out[None]).sum(axis=0)
    return same / fits


def fit_round(masks: MaskSet, targets: np.ndarray, request: ExplainRequest, round_no: int
              ) -> tuple[SurrogateFit, np.ndarray]:
    """One round of the method: the surrogate of ``targets [n, t]`` on every drawn mask, and the
    top-k stability of each target (1 when the masks were enumerated: there is nothing to resample).
    The bootstrap is seeded by (seed, round), so a replay of a round gives the same stability.

    BLAS runs single-threaded here: the matrices are small (d' x d'), and on a busy machine waking
    a BLAS thread pool for each of them cost up to 2 s per round instead of ~10 ms (measured)."""
    with threadpool_limits(1, user_api="blas"):
        return _fit_round(masks, targets, request, round_no)


def _fit_round(masks: MaskSet, targets: np.ndarray, request: ExplainRequest, round_no: int
               ) -> tuple[SurrogateFit, np.ndarray]:
    weights = row_weights(masks.masks, request.kernel, request.kernel_width, masks.exhaustive)
    fit = fit_surrogate(masks.masks, targets, weights, request.ridge_alpha)
    if masks.exhaustive:
        return fit, np.ones(fit.coef.shape[0])
    return fit, top_k_stability(masks.masks, targets, weights, request.ridge_alpha, request.top_k,
                                [request.seed, round_no], anchors=anchor_rows(masks.masks, request.kernel),
                                coef=fit.coef, tie=TIE)
