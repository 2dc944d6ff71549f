"""From finished results to numbers, per tagger and method: keep-top-k and drop-top-k rates with
95 % Wilson intervals, deletion/insertion areas (and how often they beat the random ranking's on
the same window), tagger calls, agreement of the top-3 set with the large-N reference, and a
replay of stopping rules on the recorded traces. Pure functions of the checkpoint (no I/O)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from audiolime.evaluation.config import RANDOM, SLIME, EvalConfig
from audiolime.method.stats import wilson
from audiolime.method.surrogate import agrees_up_to_ties

REPLAY_THRESHOLDS = (0.9, 0.95, 0.99)


def rounded(x: float | None, places: int = 4) -> float | None:
    """``x`` rounded; NaN and None are None (JSON ``null``, CSV empty)."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), places)


def rate(values: Sequence[float]) -> dict:
    """Mean of per-window successes (0/1, or fractions for random) with a Wilson interval that
    treats windows as the trials."""
    n = len(values)
    if not n:
        return {"rate": None, "n": 0, "ci_low": None, "ci_high": None}
    r = float(np.mean(values))
    lo, hi = wilson(r * n, n)
    return {"rate": rounded(r), "n": n, "ci_low": rounded(lo), "ci_high": rounded(hi)}


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def calls_to_reach(trace: Sequence[dict], reference: Sequence[int]) -> int | None:
    """Fewest masks of the stream from which every later round's top-3 set is the reference's
    (None: not the reference's at the end of the trace)."""
    reached = None
    for step in trace:
        if step["top"] == sorted(reference):
            reached = reached if reached is not None else step["unique"]
        else:
            reached = None
    return reached


def replay(trace: Sequence[dict], threshold: float, consecutive: int = 1) -> dict | None:
    """Where a stopping rule would have stopped on a recorded trace: the first round whose
    stability (and that of the ``consecutive - 1`` rounds before it, with the same top-3 set)
    reaches ``threshold``; the trace's end when none does."""
    if not trace:
        return None
    for i, step in enumerate(trace):
        run = trace[max(0, i - consecutive + 1):i + 1]
        if len(run) == consecutive and all(s["stability"] >= threshold and s["top"] == step["top"] for s in run):
            return step | {"stopped": True}
    return trace[-1] | {"stopped": False}


def _median(xs: Sequence[float]) -> float | None:
    return rounded(float(np.median(xs)), 1) if len(xs) else None


def _mean(xs: Sequence[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return rounded(float(np.mean(xs))) if xs else None


def aggregate(cfg: EvalConfig, records: Sequence[dict]) -> dict:
    """``{tagger: {method: summary}}`` (see the module docstring)."""
    by = {(r["tagger"], r["method"]): [] for r in records}
    for r in records:
        by[(r["tagger"], r["method"])].append(r)
    random_del = {(r["song"], r["tagger"], r["window"]): r["result"] for r in records if r["method"] == RANDOM}
    table: dict = {}
    for t in cfg.taggers:
        table[t] = {}
        for m in cfg.methods:
            recs = [r for r in by.get((t, m), []) if "not_applicable" not in r["result"]]
            table[t][m] = summarize(cfg, m, recs, random_del)
        table[t]["paired"] = {m: paired(cfg, by.get((t, cfg.primary.name), []), by.get((t, m), []))
                              for m in cfg.methods if m != cfg.primary.name}
    return table


def paired(cfg: EvalConfig, first: Sequence[dict], other: Sequence[dict]) -> dict:
    """Keep-top-k of the primary variant minus another method's, on the windows both have, per k:
    ``{k: {diff, wins, losses, n}}`` (wins: windows where only the primary keeps the top tag;
    random's keep is a share of draws, so its wins/losses count whole differences of it)."""
    theirs = {(r["song"], r["window"]): r["result"] for r in other if "not_applicable" not in r["result"]}
    out = {}
    for k in cfg.ks:
        diffs = []
        for r in first:
            o = theirs.get((r["song"], r["window"]))
            if o is None:
                continue
            a = next(x for x in r["result"]["rows"] if x["k"] == k)["keep"]
            b = next(x for x in o["rows"] if x["k"] == k).get("keep")
            if a is not None and b is not None:
                diffs.append(float(a) - float(b))
        out[str(k)] = {"diff": _mean(diffs), "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs),
                       "n": len(diffs)}
    return out


def summarize(cfg: EvalConfig, method: str, recs: Sequence[dict], random_by_window: dict) -> dict:
    out: dict = {"windows": len(recs), "keep": {}, "drop": {}}
    for k in cfg.ks:
        rows = [next(x for x in r["result"]["rows"] if x["k"] == k) for r in recs]
        out["keep"][str(k)] = rate([float(x["keep"]) for x in rows if x.get("keep") is not None])
        out["drop"][str(k)] = rate([float(x["drop_lost"]) for x in rows if x.get("drop_lost") is not None])
    res = [r["result"] for r in recs]
    out["deletion_auc"] = _mean([x.get("deletion_auc") for x in res])
    out["insertion_auc"] = _mean([x.get("insertion_auc") for x in res])
    if method != RANDOM:
        pairs = [(r["result"], random_by_window.get((r["song"], r["tagger"], r["window"]))) for r in recs]
        pairs = [(a, b) for a, b in pairs if b is not None and a.get("deletion_auc") is not None]
        out["deletion_below_random"] = rate([float(a["deletion_auc"] < b["deletion_auc"]) for a, b in pairs])
        out["insertion_above_random"] = rate([float(a["insertion_auc"] > b["insertion_auc"]) for a, b in pairs])
        out["surrogate_r2"] = _mean([x.get("surrogate_r2") for x in res])
        out["stability"] = _mean([x.get("stability") for x in res])
        out["calls"] = {"sampling_median": _median([x["calls"]["sampling"] for x in res]),
                        "metrics_median": _median([x["calls"]["metrics"] for x in res]),
                        "sampling_max": max((x["calls"]["sampling"] for x in res), default=None)}
        reasons: dict[str, int] = {}
        for x in res:
            reasons[x["stopping"]["reason"]] = reasons.get(x["stopping"]["reason"], 0) + 1
        out["stopping"] = reasons
        out["seconds_median"] = _median([x["seconds"] for x in res])
    if method not in (SLIME, RANDOM):
        out["reference"] = reference_summary(cfg, res)
    return out


def reference_summary(cfg: EvalConfig, res: Sequence[dict]) -> dict | None:
    """Agreement of the top-3 set with the reference, calls, and a replay of stopping rules."""
    refs = [x for x in res if x.get("reference")]
    if not refs:
        return None
    same = [float(x["top_k_set"] == x["reference"]["top_k_set"]) for x in refs]
    calls = [x["calls"]["sampling"] for x in refs]
    ref_calls = [x["reference"]["unique"] for x in refs]
    reach = [calls_to_reach(x["trace"], x["reference"]["top_k_set"]) if x["trace"]
             else (x["calls"]["sampling"] if x["top_k_set"] == x["reference"]["top_k_set"] else None) for x in refs]
    out = {"windows": len(refs), "same_top3": rate(same),
           "same_top3_up_to_ties": rate([float(agrees_up_to_ties(x["top_k_set"], x["reference"]["weights"]))
                                         for x in refs]),
           "jaccard_mean": _mean([jaccard(x["top_k_set"], x["reference"]["top_k_set"]) for x in refs]),
           "calls_median": _median(calls), "reference_calls_median": _median(ref_calls),
           "calls_ratio_median": rounded(float(np.median(np.array(calls) / np.array(ref_calls))), 4),
           "reference_stability_mean": _mean([x["reference"]["stability"] for x in refs]),
           "reached": rate([float(r is not None) for r in reach]),
           "calls_to_reach_median": _median([r for r in reach if r is not None]),
           "replay": {}}
    for consecutive in (1, 2):
        for thr in REPLAY_THRESHOLDS:
            stops = [(replay(x["trace"], thr, consecutive), x["reference"]["top_k_set"]) for x in refs if x["trace"]]
            if not stops:
                continue
            out["replay"][f"{thr:g}x{consecutive}"] = {
                "same_top3": rate([float(s["top"] == sorted(ref)) for s, ref in stops]),
                "calls_median": _median([s["unique"] for s, _ in stops]),
                "stopped": rate([float(s["stopped"]) for s, _ in stops])}
    return out
