"""The random baselines: the audioLIME paper's for the top-k fidelity check, and random rankings
for the deletion/insertion curves.

For one explanation with component weights ``w`` and a given ``k``: draw ``k`` components
uniformly at random (without replacement) among the components with *positive* weight that
are *not* in the top-k, ``R`` times. The tagger is then run on each drawn mix; if the top-k
components explain the prediction better than other positive-weight components, the top tag
survives more often for the top-k than for the random draws.

When fewer than ``k`` such components exist the baseline is undefined for that explanation
(``None``): drawing fewer components, or non-positive ones, would bias the comparison.
"""

from __future__ import annotations

import numpy as np

DEFAULT_DRAWS = 32


def top_k_positive(weights: np.ndarray, k: int) -> np.ndarray:
    """Indices of the (at most) ``k`` highest-weight components with weight > 0, best first."""
    w = np.asarray(weights, dtype=np.float64)
    order = np.argsort(-w, kind="stable")[:k]
    return order[w[order] > 0]


def random_draws(weights: np.ndarray, k: int, draws: int = DEFAULT_DRAWS,
                 seed: int | np.random.Generator = 0) -> np.ndarray | None:
    """``draws`` random component sets ``[draws, k]`` (indices) for the paper's random baseline,
    or None when fewer than ``k`` positive-weight components lie outside the top-k."""
    if k < 1 or draws < 1:
        raise ValueError("k and draws must be >= 1")
    w = np.asarray(weights, dtype=np.float64)
    top = np.argsort(-w, kind="stable")[:k]
    pool = np.setdiff1d(np.flatnonzero(w > 0), top)
    if len(pool) < k:
        return None
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return np.stack([rng.choice(pool, size=k, replace=False) for _ in range(draws)])


def to_masks(index_sets: np.ndarray | list, num_components: int) -> np.ndarray:
    """Rows of component indices -> 0/1 masks ``[rows, num_components]``."""
    masks = np.zeros((len(index_sets), num_components), dtype=np.uint8)
    for row, idx in enumerate(index_sets):
        masks[row, np.asarray(idx, dtype=np.int64)] = 1
    return masks


def random_rankings(num_components: int, draws: int, seed: int | np.random.Generator = 0) -> list[np.ndarray]:
    """``draws`` uniformly random orders of all components (the random ranking's curves)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return [rng.permutation(num_components) for _ in range(draws)]
