"""Perturbation masks: LIME's uniform on/off sampling, deduplicated, or exhaustive when small."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audiolime.explain.request import check_num_samples


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


def sample_masks(num_components: int, num_samples: int, seed: int) -> MaskSet:
    """Draw ``num_samples`` masks over ``num_components`` components, deterministic per ``seed``.

    When ``2**d <= num_samples`` every mask is enumerated exactly once instead (all ones first).
    """
    d = num_components
    check_num_samples(num_samples, d)
    if d < 30 and 2 ** d <= num_samples:
        codes = np.arange(2 ** d - 1, -1, -1, dtype=np.int64)  # all ones first
        masks = ((codes[:, None] >> np.arange(d - 1, -1, -1)) & 1).astype(np.uint8)
        return MaskSet(masks, masks, np.arange(len(masks)), exhaustive=True)
    rng = np.random.default_rng(seed)
    masks = rng.integers(0, 2, size=(num_samples, d), dtype=np.uint8)
    masks[0] = 1
    unique, first, inverse = np.unique(masks, axis=0, return_index=True, return_inverse=True)
    # Keep unique rows in order of first appearance, so unique row 0 is the all-ones mask.
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return MaskSet(masks, unique[order], rank[inverse.reshape(-1)], exhaustive=False)
