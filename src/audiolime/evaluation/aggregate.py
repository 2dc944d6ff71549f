"""From finished items to numbers: one flat row per (song, window, method, k), the same-top-tag
rate per (tagger, method, k) with its 95 % Wilson interval, and per-method means of the
explanations' metadata. Pure functions of the checkpoint's items (no I/O)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from audiolime.evaluation.config import METHODS, EvalConfig


def rounded(x: float | None) -> float | None:
    """``x`` to 4 decimals; NaN and None are None (JSON ``null``, CSV empty)."""
    return None if x is None or math.isnan(x) else round(x, 4)


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def flat_rows(items: Sequence[dict]) -> list[dict]:
    out = []
    for rec in items:
        for r in rec["rows"]:
            out.append({"song": rec["song"], "window": rec["window"], "window_start_s": rec["window_start_s"],
                        "tagger": rec["tagger"], **r})
    return out


def aggregate(cfg: EvalConfig, rows: Sequence[dict]) -> dict:
    """``{tagger: {method: {k: {rate, n, ci_low, ci_high}}}}``; random: mean over explanations
    of the per-explanation fraction of R draws (CI treats explanations as the trials)."""
    table: dict = {}
    for t in cfg.taggers:
        table[t] = {}
        for m in METHODS:
            table[t][m] = {}
            for k in cfg.ks:
                vals = [r["same_top_tag"] for r in rows
                        if r["tagger"] == t and r["method"] == m and r["k"] == k and r["same_top_tag"] is not None]
                n = len(vals)
                rate = float(np.mean(vals)) if n else math.nan
                lo, hi = wilson(rate * n, n) if n else (math.nan, math.nan)
                table[t][m][str(k)] = {"rate": rounded(rate), "n": n, "ci_low": rounded(lo), "ci_high": rounded(hi)}
    return table


def meta_means(cfg: EvalConfig, items: Sequence[dict], key: str) -> dict:
    """Mean of one per-explanation metadata value, per tagger and method (skipping n/a)."""
    return {t: {m: _mean([rec["meta"][m][key] for rec in items if rec["tagger"] == t and key in rec["meta"][m]])
                for m in ("audiolime", "slime")} for t in cfg.taggers}


def _mean(xs: Sequence[float]) -> float | None:
    return round(float(np.mean(xs)), 3) if xs else None
