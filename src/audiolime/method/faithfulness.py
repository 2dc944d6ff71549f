"""Faithfulness of one ranking, measured with the tagger itself (no surrogate involved):

- keep-top-k: only the top-k positive components (the paper's check; :class:`~audiolime.method.engine.KeepTopK`);
- drop-top-k: everything but those components;
- deletion curve: the target's probability as components are removed in ranking order, from all
  on (d'+1 points); a faithful ranking makes it fall fast (low area);
- insertion curve: the same as components are added in ranking order, from all off; a faithful
  ranking makes it rise fast (high area);
- the verdict: keep-top-k and drop-top-k next to R random k-sets of the same components (each
  kept alone and each removed). The top-k is *sufficient* when its mix alone still has the target
  as top tag and at most ``AS_GOOD_SHARE`` of the random k-sets keep the target's probability as
  high; *necessary* when removing it loses the target as top tag and at most that share of random
  removals lower the target's probability as far. The bootstrap stability is neither: it says how
  reproducible the ranking is, not whether the tagger relies on it.

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
class DropTopK:
    """The tagger with the top-k positive components removed."""

    components: tuple[int, ...]
    same_top_tag: bool
    top_tag: str
    target_probability: float


@dataclass(frozen=True)
class Verdict:
    """The top-k against ``random_sets`` random k-sets: the share of them that do as well when kept
    alone (target probability >= keep-top-k's) and when removed (<= drop-top-k's)."""

    random_sets: int
    keep_random_as_good: float
    drop_random_as_good: float
    sufficient: bool
    necessary: bool
    summary: str


def random_sets(num_components: int, k: int, count: int, seed: int) -> np.ndarray:
    """``[count, d']`` masks with ``k`` components on, drawn uniformly and independently (a set may
    repeat); a function of (d', k, count, seed) only, so targets with the same k share them."""
    rng = np.random.default_rng([seed, k, 0x76657264])  # a stream of its own, not the sampler's
    masks = np.zeros((count, num_components), np.uint8)
    for row in masks:
        row[rng.choice(num_components, size=k, replace=False)] = 1
    return masks


def verdict(tag: str, k: int, keep_top: bool, keep_p: float, keep_random: np.ndarray, drop_lost: bool,
            drop_p: float, drop_random: np.ndarray, as_good_share: float) -> Verdict:
    """The verdict of a top-k set of ``k`` components for ``tag``: ``keep_top`` whether the mix of only
    the top-k still has ``tag`` as top tag and ``keep_p`` its probability of it; ``drop_lost``
    whether the window without the top-k no longer has it and ``drop_p`` its probability; and the
    target's probabilities with each random k-set kept alone / removed."""
    n = len(keep_random)
    keep_n = int(np.sum(np.asarray(keep_random) >= keep_p))
    drop_n = int(np.sum(np.asarray(drop_random) <= drop_p))
    if k == 0:
        return Verdict(n, 1.0, 1.0, False, False,
                       f"neither sufficient nor necessary: no component raises '{tag}'")
    sufficient = keep_top and keep_n <= as_good_share * n
    necessary = drop_lost and drop_n <= as_good_share * n
    head = ("sufficient and necessary" if sufficient and necessary else
            "sufficient, not necessary" if sufficient else
            "necessary, not sufficient" if necessary else "neither sufficient nor necessary")
    keep = (f"keeping the top {k} keeps '{tag}' ({keep_n}/{n} random {k}-sets do as well)" if keep_top
            else f"keeping only the top {k} does not keep '{tag}'")
    drop = (f"removing them loses it ({drop_n}/{n} random removals lower it as much)" if drop_lost
            else "removing them does not lose it")
    return Verdict(n, keep_n / n, drop_n / n, sufficient, necessary, f"{head}: {keep}; {drop}")


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
