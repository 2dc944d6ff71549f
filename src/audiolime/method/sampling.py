"""Perturbation masks: a deterministic stream of masks per seed, evaluated once per distinct mask,
enumerated exhaustively when small; and the round schedule of adaptive sampling.

Two distributions (``kernel``): ``lime`` draws every bit uniformly (audioLIME's sampling; the
LIME kernel then weights the rows), ``shap`` draws a coalition size ``s`` with probability
proportional to the Shapley kernel ``(d - 1) / (s (d - s))`` and then ``s`` components uniformly,
so the rows need no further weighting (Kernel SHAP's sampling; the all-ones and all-zeros rows
are anchors). ``paired`` follows every drawn mask by its complement (antithetic sampling).

The stream is prefix-consistent: the first ``n`` masks of a seed are the same however they are
taken (one block of N, or rounds), so an adaptive run that stops at ``n`` masks has drawn
exactly the first ``n`` masks of the fixed-N run with the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audiolime.errors import InvalidInput
from audiolime.method.request import KERNELS, check_num_samples

ROUND_QUANTUM = 64  # round sizes are multiples of this (tagger batches stay full)
FIRST_ROUND = 128  # with 8 (d'+1): 128 masks at d' = 12 (docs/performance.md "How small the first round can be")
ROUND_GROWTH = 1.5  # each round brings the total to 1.5 x the previous total


@dataclass(frozen=True)
class MaskSet:
    """``masks [n, d]`` as drawn (row 0 all ones); ``unique [u, d]`` to evaluate; ``inverse [n]``
    maps every drawn row to its unique row, so predictions are evaluated once and broadcast."""

    masks: np.ndarray
    unique: np.ndarray
    inverse: np.ndarray
    exhaustive: bool

    @property
    def num_samples(self) -> int:
        return int(self.masks.shape[0])

    @property
    def num_unique(self) -> int:
        return int(self.unique.shape[0])


def unique_rows(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows in order of first appearance, and the index of every row's distinct row."""
    unique, first, inverse = np.unique(masks, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return unique[order], rank[inverse.reshape(-1)]


def mask_set(masks: np.ndarray, exhaustive: bool = False) -> MaskSet:
    unique, inverse = unique_rows(masks)
    return MaskSet(masks, unique, inverse, exhaustive)


def enumerate_masks(d: int) -> np.ndarray:
    """All ``2**d`` masks, all ones first, all zeros last."""
    codes = np.arange(2 ** d - 1, -1, -1, dtype=np.int64)
    return ((codes[:, None] >> np.arange(d - 1, -1, -1)) & 1).astype(np.uint8)


def shapley_size_probabilities(d: int) -> np.ndarray:
    """P(coalition size = s) for s = 1 .. d-1 under the Shapley kernel (the size's total kernel weight)."""
    s = np.arange(1, d)
    p = (d - 1) / (s * (d - s))
    return p / p.sum()


def shapley_kernel(masks: np.ndarray) -> np.ndarray:
    """Kernel SHAP's weight of each mask, ``(d-1) / (C(d, s) s (d - s))``; 0 for the anchors
    (all ones, all zeros: their weight is infinite, they are handled as constraints)."""
    from math import comb

    d = masks.shape[1]
    s = masks.sum(axis=1).astype(np.int64)
    table = np.zeros(d + 1)
    for k in range(1, d):
        table[k] = (d - 1) / (comb(d, k) * k * (d - k))
    return table[s]


class MaskStream:
    """The masks of one seed, in order: all ones first (and all zeros, when paired or ``shap``),
    then draws from ``kernel``'s distribution, each followed by its complement when ``paired``."""

    def __init__(self, num_components: int, seed: int, kernel: str = "lime", paired: bool = False) -> None:
        if kernel not in KERNELS:
            raise InvalidInput(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        if num_components < 1 or (kernel == "shap" and num_components < 2):
            raise InvalidInput(f"{kernel} sampling needs more components, got d' = {num_components}")
        self.d, self.kernel, self.paired = num_components, kernel, paired
        self._rng = np.random.default_rng(seed)
        # all ones first; all zeros too for shap (its other anchor) and when paired (the complement)
        self._buffer = np.ones((2 if kernel == "shap" or paired else 1, self.d), np.uint8)
        self._buffer[1:] = 0
        self.drawn = 0
        if kernel == "shap":
            self._cdf = np.cumsum(shapley_size_probabilities(self.d))

    def _draw(self, n: int) -> np.ndarray:
        """``n`` fresh masks. Every mask consumes a fixed number of the generator's doubles, so
        blocks of any size concatenate to the same sequence."""
        if self.kernel == "lime":
            return (self._rng.random((n, self.d)) < 0.5).astype(np.uint8)
        u = self._rng.random((n, self.d + 1))
        size = np.minimum(np.searchsorted(self._cdf, u[:, 0], side="right"), self.d - 2) + 1
        rank = np.argsort(np.argsort(u[:, 1:], axis=1, kind="stable"), axis=1, kind="stable")
        return (rank < size[:, None]).astype(np.uint8)

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` masks of the stream ``[n, d]``."""
        while len(self._buffer) < n:
            need = n - len(self._buffer)
            fresh = self._draw(-(-need // 2) if self.paired else need)
            if self.paired:
                fresh = np.stack([fresh, 1 - fresh], axis=1).reshape(-1, self.d)
            self._buffer = np.concatenate([self._buffer, fresh])
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        self.drawn += n
        return out


def sample_masks(num_components: int, num_samples: int, seed: int, kernel: str = "lime",
                 paired: bool = False) -> MaskSet:
    """``num_samples`` masks over ``num_components`` components, deterministic per ``seed``.

    When ``2**d <= num_samples`` every mask is enumerated exactly once instead (all ones first).
    """
    d = num_components
    check_num_samples(num_samples, d)
    if exhaustive_at(d, num_samples):
        return mask_set(enumerate_masks(d), exhaustive=True)
    return mask_set(MaskStream(d, seed, kernel, paired).take(num_samples))


def exhaustive_at(num_components: int, num_samples: int) -> bool:
    """Whether ``num_samples`` masks are enough to enumerate all ``2**d'`` of them."""
    return num_components < 30 and 2 ** num_components <= num_samples


def round_sizes(num_components: int, max_samples: int, first_round: int | None = None,
                growth: float = ROUND_GROWTH) -> list[int]:
    """Cumulative masks after each round of adaptive sampling: about ``8 (d'+1)`` (at least
    :data:`FIRST_ROUND`) first, then x :data:`ROUND_GROWTH` per round, multiples of
    :data:`ROUND_QUANTUM`, the last one ``max_samples``.

    ``first_round`` (None: the default above) is the first round's size exactly (at least d'+1, a
    linear surrogate's unknowns); ``growth`` (> 1) replaces :data:`ROUND_GROWTH`. Both are the
    engine's settings (``Engine(first_round=..., round_growth=...)``), for measuring the schedule."""
    def up(n: float) -> int:
        return int(-(-n // ROUND_QUANTUM) * ROUND_QUANTUM)

    if not growth > 1:
        raise InvalidInput(f"round growth must be > 1, got {growth:g}")
    if first_round is None:
        first = up(max(FIRST_ROUND, 8 * (num_components + 1)))
    elif first_round < num_components + 1:
        raise InvalidInput(f"first round must be at least d'+1 = {num_components + 1} masks, got {first_round}")
    else:
        first = first_round
    sizes = [min(first, max_samples)]
    while sizes[-1] < max_samples:
        sizes.append(min(up(sizes[-1] * growth), max_samples))
    return sizes
