"""The audioLIME engine: sample masks, evaluate them through a black-box ``predict``, fit a
surrogate per target, rank components, and measure the ranking's faithfulness with the tagger.

Sampling is fixed (N masks) or adaptive (``num_samples = 0``): masks are drawn in rounds
(:func:`~audiolime.explain.sampling.round_sizes`) and after each round the surrogate is refitted
and bootstrapped; sampling stops when every target's top-k set is unchanged in at least
``request.stability`` of the bootstrap fits, at ``max_samples``, or when every mask has been
enumerated. Each round is announced as ``predict`` events (masks evaluated / masks drawn so far).

Importable without TensorFlow or gRPC. ``predict`` is any callable
``float32 [batch, samples] -> float32 [batch, tags]``: an in-process SavedModel or a remote
TF Serving client. All per-request state lives in locals and the returned objects; an
``Engine`` holds only configuration and may serve concurrent requests.
"""

from __future__ import annotations

import contextvars
import difflib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol

import numpy as np

from audiolime.errors import InvalidInput
from audiolime.explain.events import Event, EventSink, ignore
from audiolime.explain.faithfulness import Curve, Drop, deletion_masks, insertion_masks
from audiolime.explain.request import ExplainRequest
from audiolime.explain.sampling import (MaskSet, MaskStream, enumerate_masks, exhaustive_at, mask_set,
                                        round_sizes)
from audiolime.explain.surrogate import SurrogateFit, fit_round

Predict = Callable[[np.ndarray], np.ndarray]


class Factorization(Protocol):
    """What the engine needs of a set of interpretable components (audioLIME's stems x segments,
    or the evaluation's SLIME rectangles)."""

    info: list

    @property
    def num_components(self) -> int: ...

    def compose(self, masks: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RankedComponent:
    rank: int
    component: object  # factorization.Component (or a SLIME rectangle): index, source, name, ...
    weight: float


@dataclass(frozen=True)
class Fidelity:
    """The paper's check: tagger on the mix of only the top-k positive components."""

    top_k: int
    components: tuple[int, ...]
    same_top_tag: bool
    top_tag: str
    target_probability: float
    probabilities: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Faithfulness:
    """How far to trust one target's ranking: drop-top-k, deletion/insertion curves (None when
    off) and the bootstrap stability of the top-k set."""

    drop: Drop
    deletion: Curve | None
    insertion: Curve | None
    stability: float


@dataclass(frozen=True)
class TargetExplanation:
    tag: str
    tag_index: int
    surrogate_r2: float
    intercept: float
    ranking: list[RankedComponent]  # every component, by descending weight
    fidelity: Fidelity
    faithfulness: Faithfulness

    def top(self, k: int) -> list[RankedComponent]:
        return self.ranking[:k]


@dataclass(frozen=True)
class Stopping:
    """Why sampling stopped: ``fixed`` (N given), ``stable`` (every target's top-k set kept in
    ``stability`` of the bootstrap fits), ``max_samples``, or ``exhaustive`` (all 2^d' masks)."""

    rounds: int
    masks: int
    reason: str
    stability: float  # the least stable target's


@dataclass(frozen=True)
class Explanation:
    prediction: np.ndarray  # tagger on the analysed window [tags]
    targets: list[TargetExplanation]
    masks: MaskSet
    mask_predictions: np.ndarray  # [unique, tags]
    timings_s: dict[str, float]
    stopping: Stopping
    metric_calls: int  # tagger windows spent on the faithfulness metrics (beyond the sampled masks)

    @property
    def num_samples(self) -> int:
        return self.masks.num_samples

    @property
    def unique_samples(self) -> int:
        return self.masks.num_unique


class MaskPredictions:
    """Tagger predictions of masks of one factorization, each distinct mask evaluated once --
    also across explanations that share it (the evaluation compares samplers on one window)."""

    def __init__(self, engine: Engine, factorization: Factorization) -> None:
        self.engine = engine
        self.factorization = factorization
        self._index: dict[bytes, int] = {}
        self._rows: list[np.ndarray] = []
        self.evaluated = 0  # tagger windows actually run

    def __call__(self, masks: np.ndarray, on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Predictions ``[len(masks), tags]``; ``on_batch(done, len(masks))`` counts known masks as done."""
        masks = np.ascontiguousarray(masks, dtype=np.uint8)
        keys = [row.tobytes() for row in masks]
        missing = list(dict.fromkeys(k for k in keys if k not in self._index))
        known = len(masks) - len(missing)
        if on_batch:
            on_batch(known, len(masks))
        if missing:
            new = np.frombuffer(b"".join(missing), dtype=np.uint8).reshape(len(missing), -1)
            preds = self.engine.evaluate(self.factorization.compose, new,
                                         (lambda done, _n: on_batch(known + done, len(masks))) if on_batch else None)
            for key, p in zip(missing, preds):
                self._index[key] = len(self._rows)
                self._rows.append(p)
            self.evaluated += len(missing)
        return np.stack([self._rows[self._index[k]] for k in keys]) if keys else np.empty((0, len(self.engine.labels)))


def resolve_tags(labels: Sequence[str], names: Sequence[str]) -> list[int]:
    """Tag names -> indices (exact, then case-insensitive); unknown names list close matches."""
    lower = {lab.lower(): i for i, lab in enumerate(labels)}
    out = []
    for name in names:
        if name in labels:
            out.append(labels.index(name))
        elif name.lower() in lower:
            out.append(lower[name.lower()])
        else:
            close = difflib.get_close_matches(name, labels, n=5, cutoff=0.4) or list(labels[:5])
            raise InvalidInput(f"unknown tag {name!r}; closest valid tags: {', '.join(close)}")
    return out


class Engine:
    """Runs explanations against one tagger ``predict`` with ``labels``.

    ``batch_size`` windows go to ``predict`` per call; up to ``max_in_flight`` calls run
    concurrently (threads), which is what lets a remote tagger fan batches out over replicas.
    """

    def __init__(self, predict: Predict, labels: Sequence[str], batch_size: int = 64, max_in_flight: int = 1) -> None:
        if batch_size < 1 or max_in_flight < 1:
            raise InvalidInput("batch_size and max_in_flight must be >= 1")
        self.predict = predict
        self.labels = list(labels)
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight

    def evaluate(self, compose: Callable[[np.ndarray], np.ndarray], masks: np.ndarray,
                 on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Predict on the composition of every mask row, in batches, up to ``max_in_flight`` at once.

        Worker threads run in a copy of the caller's context, so request ids and deadlines held in
        contextvars travel with every tagger call. ``on_batch(done, total)`` follows each batch, in
        order; it may raise to stop (batches in flight finish, no new ones start)."""
        n = len(masks)
        out = np.empty((n, len(self.labels)), dtype=np.float32)
        starts = list(range(0, n, self.batch_size))
        done = 0

        def run(start: int) -> int:
            batch = masks[start:start + self.batch_size]
            probs = np.asarray(self.predict(compose(batch)), dtype=np.float32)
            if probs.shape != (len(batch), len(self.labels)):
                raise InvalidInput(f"tagger returned shape {list(probs.shape)}, expected "
                                   f"{[len(batch), len(self.labels)]}")
            out[start:start + len(batch)] = probs
            return len(batch)

        if self.max_in_flight == 1 or len(starts) == 1:
            for s in starts:
                done += run(s)
                if on_batch:
                    on_batch(done, n)
            return out
        with ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="tagger-batch") as pool:
            pending = iter(starts)
            futures = [pool.submit(contextvars.copy_context().run, run, s)
                       for s in islice(pending, self.max_in_flight)]
            try:
                while futures:
                    done += futures.pop(0).result()
                    futures += [pool.submit(contextvars.copy_context().run, run, s) for s in islice(pending, 1)]
                    if on_batch:
                        on_batch(done, n)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return out

    def explain(self, factorization: Factorization, window: np.ndarray, targets: Sequence[int] | None,
                request: ExplainRequest = ExplainRequest(), events: EventSink = ignore,
                memo: MaskPredictions | None = None) -> Explanation:
        """Explain ``targets`` (tag indices; None = top predicted tag) for the analysed ``window``.

        Emits ``predict`` (per round: masks evaluated / drawn so far; a round's refit and
        bootstrap belong to it), ``fit`` (sampling has stopped) and ``fidelity`` events. ``memo``: predictions already made for this factorization (evaluation only)."""
        if request.top_k < 1:
            raise InvalidInput(f"top_k must be >= 1, got {request.top_k}")
        if memo is not None and memo.factorization is not factorization:
            raise InvalidInput("memo belongs to another factorization")
        memo = memo or MaskPredictions(self, factorization)
        timings = {"sample": 0.0, "predict": 0.0, "fit": 0.0}
        t0 = time.perf_counter()
        prediction = self.evaluate(lambda _: window[None, :].astype(np.float32), np.ones((1, 1)))[0]
        target_idx = list(targets) if targets else [int(np.argmax(prediction))]
        timings["predict"] += time.perf_counter() - t0
        masks, unique_pred, fit, stability, stopping = self._sample(factorization.num_components, target_idx,
                                                                    request, memo, events, timings)
        events(Event("fidelity"))
        t3 = time.perf_counter()
        rankings = []
        for j, _ in enumerate(target_idx):
            order = np.argsort(-fit.coef[j], kind="stable")
            rankings.append([RankedComponent(r + 1, factorization.info[i], float(fit.coef[j, i]))
                             for r, i in enumerate(order)])
        results, metric_calls = self._faithfulness(factorization, masks, memo, prediction, target_idx, rankings,
                                                   fit, stability, request)
        timings["fidelity"] = time.perf_counter() - t3
        return Explanation(prediction, results, masks, unique_pred, timings, stopping, metric_calls)

    def _sample(self, d: int, target_idx: list[int], request: ExplainRequest, memo: MaskPredictions,
                events: EventSink, timings: dict[str, float]
                ) -> tuple[MaskSet, np.ndarray, SurrogateFit, np.ndarray, Stopping]:
        """Draw, evaluate and fit, round by round, until the stopping rule holds."""
        sizes = round_sizes(d, request.max_samples) if request.adaptive else [request.num_samples]
        stream = MaskStream(d, request.seed, request.kernel, request.sampling == "paired")
        rows = np.empty((0, d), np.uint8)
        for rnd, size in enumerate(sizes, 1):
            t = time.perf_counter()
            exhaustive = exhaustive_at(d, size)
            rows = enumerate_masks(d) if exhaustive else np.concatenate([rows, stream.take(size - len(rows))])
            masks = mask_set(rows, exhaustive)
            timings["sample"] += time.perf_counter() - t
            t = time.perf_counter()
            unique_pred = memo(masks.unique, lambda done, n: events(Event("predict", done, n)))
            timings["predict"] += time.perf_counter() - t
            t = time.perf_counter()
            fit, stability = fit_round(masks, unique_pred[masks.inverse][:, target_idx], request, rnd)
            timings["fit"] += time.perf_counter() - t
            reason = ("exhaustive" if exhaustive else "fixed" if not request.adaptive
                      else "stable" if stability.min() >= request.stability
                      else "max_samples" if rnd == len(sizes) else "")
            if reason:
                events(Event("fit"))  # once: the stages stay in order (a round's refit belongs to predict)
                return masks, unique_pred, fit, stability, Stopping(rnd, masks.num_samples, reason,
                                                                    float(stability.min()))
        raise AssertionError("the last round always stops")  # pragma: no cover

    def _faithfulness(self, factorization: Factorization, masks: MaskSet, memo: MaskPredictions,
                      prediction: np.ndarray, target_idx: list[int], rankings: list[list[RankedComponent]],
                      fit: SurrogateFit, stability: np.ndarray, request: ExplainRequest
                      ) -> tuple[list[TargetExplanation], int]:
        """Keep-top-k, drop-top-k and (when on) deletion/insertion curves of every target, as one
        batched evaluation; masks the sampling already evaluated are not run again."""
        d = factorization.num_components
        curves = request.curves_for(d)
        blocks, chosen = [], []
        for ranking in rankings:
            pos = tuple(rc.component.index for rc in ranking[:request.top_k] if rc.weight > 0)
            keep = np.zeros((1, d), np.uint8)
            keep[0, list(pos)] = 1
            block = [keep, 1 - keep]
            if curves:
                order = np.array([rc.component.index for rc in ranking])
                block += [deletion_masks(order), insertion_masks(order)]
            blocks.append(np.concatenate(block))
            chosen.append(pos)
        all_masks = np.concatenate(blocks)
        sampled = {row.tobytes() for row in masks.unique}
        metric_calls = len({row.tobytes() for row in all_masks} - sampled)
        preds = memo(all_masks)
        top = int(np.argmax(prediction))
        results, at = [], 0
        for j, tag in enumerate(target_idx):
            p_keep, p_drop = preds[at], preds[at + 1]
            fidelity = Fidelity(len(chosen[j]), chosen[j], bool(chosen[j]) and int(np.argmax(p_keep)) == top,
                                self.labels[int(np.argmax(p_keep))], float(p_keep[tag]), p_keep)
            drop = Drop(chosen[j], int(np.argmax(p_drop)) == top, self.labels[int(np.argmax(p_drop))], float(p_drop[tag]))
            deletion = insertion = None
            if curves:
                deletion = Curve(preds[at + 2:at + 3 + d, tag].astype(np.float64))
                insertion = Curve(preds[at + 3 + d:at + 4 + 2 * d, tag].astype(np.float64))
            at += len(blocks[j])
            results.append(TargetExplanation(self.labels[tag], tag, float(fit.r2[j]), float(fit.intercept[j]),
                                             rankings[j], fidelity,
                                             Faithfulness(drop, deletion, insertion, float(stability[j]))))
        return results, metric_calls
