"""One method on one analysis window: an audioLIME variant, SLIME, or the random baseline.

Every method explains the window's top tag through the same engine and is then measured the same
way, with the tagger itself: keep-top-k and drop-top-k for every k of the run (the top-k
*positive* components, as the paper), deletion/insertion curves over its whole ranking, and its
cost in tagger calls. An audioLIME variant also records a *trace*: the top-3 set and the
bootstrap stability after every round of its mask stream (exactly what adaptive sampling
computes, replayed on prefixes: no extra tagger calls for fixed N; adaptive variants draw up to
``trace_samples`` masks), and, when asked, a large-N *reference* explanation of the same
factorization with another seed.

Tagger outputs are shared between methods with the same factorization (:class:`MaskPredictions`):
an adaptive and a fixed-N variant with the same sampler draw the same first masks, and the cost
each method reports is its own, as if it had run alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from audiolime.evaluation.baselines import random_draws, random_rankings, to_masks, top_k_positive
from audiolime.evaluation.config import EvalConfig, Variant
from audiolime.method.engine import Engine, MaskPredictions, WindowExplanation, descending
from audiolime.method.faithfulness import area, deletion_masks, insertion_masks
from audiolime.method.sampling import MaskStream, mask_set, round_sizes
from audiolime.method.surrogate import fit_round

TRACE_K = 3  # the top-k set compared with the reference
REFERENCE_SEED_OFFSET = 7919


@dataclass
class WindowContext:
    """One (song, tagger, window) item: the window at the tagger's rate, its stems per separator
    (computed on first use), the engine, and one prediction memo per factorization."""

    tagger: object
    window: np.ndarray
    start_s: float
    seed: int
    stems: Callable[[str], dict[str, np.ndarray]]  # separator -> model-domain stems
    engine: Engine
    top: int  # the window's top tag: what every method explains
    trace_samples: int = 0
    memos: dict = field(default_factory=dict)

    def factorization(self, request):
        from audiolime.method.factorization import StemSegmentFactorization

        key = (request.separator, request.segments, request.edges, request.fade)
        if key not in self.memos:
            fact = StemSegmentFactorization(self.stems(request.separator), self.tagger.sample_rate, request.segments,
                                            self.start_s, edges=request.edges, fade=request.fade)
            self.memos[key] = MaskPredictions(self.engine, fact)
        memo = self.memos[key]
        return memo.factorization, memo


def weights_of(exp: WindowExplanation, d: int) -> np.ndarray:
    w = np.zeros(d)
    for rc in exp.targets[0].ranking:
        w[rc.component.index] = rc.weight
    return w


def top_k_rows(memo: MaskPredictions, weights: np.ndarray, ks, top: int, labels) -> list[dict]:
    """Keep-top-k and drop-top-k of the top-k positive components, for every k (one batched call)."""
    d = len(weights)
    sets = [top_k_positive(weights, k) for k in ks]
    keep = to_masks(sets, d)
    preds = memo(np.concatenate([keep, 1 - keep]))
    rows = []
    for i, k in enumerate(ks):
        pk, pd = preds[i], preds[len(ks) + i]
        rows.append({"k": k, "components": len(sets[i]),
                     "keep": bool(len(sets[i])) and int(np.argmax(pk)) == top, "keep_probability": round(float(pk[top]), 6),
                     "kept_top_tag": labels[int(np.argmax(pk))],
                     "drop_lost": int(np.argmax(pd)) != top, "drop_probability": round(float(pd[top]), 6)})
    return rows


def explanation_record(exp: WindowExplanation, memo: MaskPredictions, cfg: EvalConfig, labels) -> dict:
    """What every explaining method reports: ranking weights, keep/drop rows, curves, cost."""
    d = memo.factorization.num_components
    t = exp.targets[0]
    w = weights_of(exp, d)
    f = t.faithfulness
    return {"d": d, "weights": [round(float(x), 6) for x in w],
            "rows": top_k_rows(memo, w, cfg.ks, t.tag_index, labels),
            "deletion": None if f.deletion is None else [round(float(x), 6) for x in f.deletion.probabilities],
            "insertion": None if f.insertion is None else [round(float(x), 6) for x in f.insertion.probabilities],
            "deletion_auc": None if f.deletion is None else round(f.deletion.auc, 6),
            "insertion_auc": None if f.insertion is None else round(f.insertion.auc, 6),
            "surrogate_r2": round(t.surrogate_r2, 4), "stability": round(f.stability, 4),
            "stopping": {"rounds": exp.stopping.rounds, "masks": exp.stopping.masks, "reason": exp.stopping.reason,
                         "stability": round(exp.stopping.stability, 4)},
            "calls": {"sampling": exp.unique_samples, "metrics": exp.metric_calls},
            "top_k_set": sorted(int(rc.component.index) for rc in t.top(TRACE_K)),
            "timings_s": {k: round(v, 3) for k, v in exp.timings_s.items()}}


def trace(ctx: WindowContext, exp: WindowExplanation, request, memo: MaskPredictions) -> list[dict]:
    """Top-3 set and stability after every round of the variant's mask stream (adaptive: drawn on
    to ``trace_samples``), as the engine computes them; empty when the masks were enumerated."""
    if exp.masks.exhaustive:
        return []
    d = memo.factorization.num_components
    n = exp.num_samples
    if request.adaptive and ctx.trace_samples > n:
        n = ctx.trace_samples
        rows = MaskStream(d, request.seed, request.kernel, request.sampling == "paired").take(n)
    else:
        rows = exp.masks.masks
    top = exp.targets[0].tag_index
    out = []
    for rnd, size in enumerate(round_sizes(d, n), 1):
        ms = mask_set(rows[:size])
        fit, stability = fit_round(ms, memo(ms.unique)[ms.inverse][:, [top]], request, rnd)
        order = descending(fit.coef[0])
        out.append({"masks": size, "unique": ms.num_unique, "stability": round(float(stability[0]), 4),
                    "top": sorted(int(i) for i in order[:TRACE_K])})
    return out


def run_variant(ctx: WindowContext, variant: Variant, cfg: EvalConfig, tagger_name: str) -> dict:
    """An audioLIME variant: its explanation record, trace and (when asked) reference."""
    t0 = time.perf_counter()
    request = variant.request(ctx.seed).validate()
    fact, memo = ctx.factorization(request)
    exp = ctx.engine.explain(fact, ctx.window, [ctx.top], request, memo=memo)
    rec = explanation_record(exp, memo, cfg, ctx.tagger.labels)
    rec["trace"] = trace(ctx, exp, request, memo)
    rec["reference"] = None
    if variant.reference:
        ref_req = replace(request, num_samples=cfg.reference_n(tagger_name), seed=ctx.seed + REFERENCE_SEED_OFFSET,
                          curves="off")
        ref = ctx.engine.explain(fact, ctx.window, [ctx.top], ref_req, memo=memo)
        rec["reference"] = {"samples": ref.num_samples, "unique": ref.unique_samples,
                            "top_k_set": sorted(int(rc.component.index) for rc in ref.targets[0].top(TRACE_K)),
                            "stability": round(ref.targets[0].faithfulness.stability, 4),
                            "exhaustive": ref.masks.exhaustive,
                            "weights": [round(float(x), 6) for x in weights_of(ref, fact.num_components)]}
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    return rec


def run_slime(ctx: WindowContext, cfg: EvalConfig) -> dict:
    """SLIME (time x frequency rectangles) through the same engine and measurements."""
    from audiolime.evaluation.slime import NotApplicable, audio_for_tagger, for_tagger

    t0 = time.perf_counter()
    tagger = ctx.tagger
    if cfg.slime_domain == "audio":
        rect = audio_for_tagger(tagger, ctx.window, cfg.slime_segments, cfg.slime_bands, cfg.slime_baseline, ctx.start_s)
        engine, analysed = ctx.engine, ctx.window
    else:
        try:
            rect = for_tagger(tagger, ctx.window, cfg.slime_segments, cfg.slime_bands, cfg.slime_baseline, ctx.start_s)
        except NotApplicable as exc:  # waveform-only tagger: SLIME is n/a
            return {"not_applicable": str(exc), "rows": [], "seconds": round(time.perf_counter() - t0, 2)}
        engine = Engine(tagger.predict_spectrogram, tagger.labels, ctx.engine.batch_size)
        analysed = rect.spectrogram
    memo = MaskPredictions(engine, rect)
    exp = engine.explain(rect, analysed, [ctx.top], cfg.slime_request(ctx.seed), memo=memo)
    rec = explanation_record(exp, memo, cfg, tagger.labels)
    rec.update({"domain": cfg.slime_domain, "baseline": rect.baseline, "seconds": round(time.perf_counter() - t0, 2)})
    return rec


def run_random(ctx: WindowContext, primary: Variant, primary_rec: dict, cfg: EvalConfig) -> dict:
    """The random baseline over the primary variant's components: k random positive components
    outside its top-k (R draws per k), and ``curve_draws`` random rankings for the curves."""
    t0 = time.perf_counter()
    request = primary.request(ctx.seed)
    _, memo = ctx.factorization(request)
    w = np.asarray(primary_rec["weights"])
    d = len(w)
    top = ctx.top
    rng = np.random.default_rng(ctx.seed + 1)
    rows = []
    for k in cfg.ks:
        draws = random_draws(w, k, cfg.draws, rng)
        if draws is None:
            rows.append({"k": k, "components": None, "keep": None, "drop_lost": None, "draws": 0})
            continue
        keep = to_masks(draws, d)
        preds = memo(np.concatenate([keep, 1 - keep]))
        rows.append({"k": k, "components": k, "draws": len(draws),
                     "keep": round(float(np.mean(np.argmax(preds[:len(draws)], 1) == top)), 6),
                     "drop_lost": round(float(np.mean(np.argmax(preds[len(draws):], 1) != top)), 6),
                     "keep_probability": round(float(np.mean(preds[:len(draws), top])), 6),
                     "drop_probability": round(float(np.mean(preds[len(draws):, top])), 6)})
    orders = random_rankings(d, cfg.curve_draws, rng)
    masks = np.concatenate([np.concatenate([deletion_masks(o), insertion_masks(o)]) for o in orders])
    preds = memo(masks)[:, top].reshape(len(orders), 2, d + 1)
    dels, ins = [area(p[0]) for p in preds], [area(p[1]) for p in preds]
    return {"d": d, "rows": rows, "deletion_auc": round(float(np.mean(dels)), 6),
            "insertion_auc": round(float(np.mean(ins)), 6), "deletion_aucs": [round(x, 6) for x in dels],
            "insertion_aucs": [round(x, 6) for x in ins], "seconds": round(time.perf_counter() - t0, 2)}

