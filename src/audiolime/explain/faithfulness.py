"""Faithfulness of one ranking, measured with the tagger itself (no surrogate involved):

- keep-top-k: only the top-k positive components (the paper's check; :class:`~audiolime.explain.engine.Fidelity`);
- drop-top-k: everything but those components;
- deletion curve: the target's probability as components are removed in ranking order, from all
  on (d'+1 points); a faithful ranking makes it fall fast (low area);
- insertion curve: the same as components are added in ranking order, from all off; a faithful
  ranking makes it rise fast (high area).

Areas are the trapezoid rule over the fraction of components removed/added (x in [0, 1]), so
they are comparable across d'. This module builds the masks and reads the curves; the engine
evaluates every mask of every target in one batched call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Curve:
    """Target probabilities at 0, 1, ..., d' components removed (deletion) or added (insertion)."""

    probabilities: np.ndarray = field(repr=False)

    @property
    def auc(self) -> float:
        return area(self.probabilities)


@dataclass(frozen=True)
class Drop:
    """The tagger with the top-k positive components removed."""

    components: tuple[int, ...]
    same_top_tag: bool
    top_tag: str
    target_probability: float


def area(curve: np.ndarray) -> float:
    """Area under a curve of d'+1 points over x = 0, 1/d', ..., 1 (trapezoid rule)."""
    c = np.asarray(curve, np.float64)
    if len(c) < 2:
        return float(c[0]) if len(c) else float("nan")
    return float(np.sum((c[1:] + c[:-1]) / 2) / (len(c) - 1))


def deletion_masks(order: np.ndarray) -> np.ndarray:
    """``[d'+1, d']``: row i has the first i components of ``order`` removed."""
    d = len(order)
    masks = np.ones((d + 1, d), np.uint8)
    for i in range(1, d + 1):
        masks[i:, order[i - 1]] = 0
    return masks


def insertion_masks(order: np.ndarray) -> np.ndarray:
    """``[d'+1, d']``: row i has only the first i components of ``order`` (deletion's complement)."""
    return (1 - deletion_masks(order)).astype(np.uint8)
