"""The audioLIME engine: sample masks, evaluate them through a black-box ``predict``, fit a
surrogate per target, rank components, and measure the ranking's faithfulness with the tagger.

Sampling is fixed (N masks) or adaptive (``num_samples = 0``): masks are drawn in rounds
(:func:`~audiolime.method.sampling.round_sizes`) and after each round the surrogate is refitted
and bootstrapped; sampling stops when every target's top-k set is unchanged in at least
``request.stability`` of the bootstrap fits, at ``max_samples``, or when every mask has been
enumerated. Each round is announced as ``predict`` events (masks evaluated / masks drawn so far).
With a :class:`Deadline`, adaptive sampling also stops before a round that would not fit in what is
left (``deadline``): the answer is the ranking of the rounds so far, with their stability, instead of
no answer at all.

Importable without TensorFlow or gRPC. ``predict`` is any callable
``float32 [batch, samples] -> float32 [batch, tags]``: an in-process SavedModel or a remote
TF Serving client. All per-request state lives in locals and the returned objects; an
``Engine`` holds only configuration and may serve concurrent requests.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

import numpy as np

from audiolime.errors import InvalidInput
from audiolime.method.events import Event, EventSink, RankedSoFar, Ranking, ignore
from audiolime.method.faithfulness import Curve, DropTopK, Verdict, deletion_masks, insertion_masks, random_sets, verdict
from audiolime.method.request import AS_GOOD_SHARE, DEADLINE_MIN_RANDOM_SETS, DEFAULT_BATCH_SIZE, ValidRequest
from audiolime.method.sampling import (
    ROUND_GROWTH,
    MaskSet,
    MaskStream,
    enumerate_masks,
    exhaustive_at,
    mask_set,
    round_sizes,
)
from audiolime.method.surrogate import SurrogateFit, fit_round

Predict = Callable[[np.ndarray], np.ndarray]


class Factorization(Protocol):
    """What the engine needs of a set of interpretable components (audioLIME's stems x segments,
    or the evaluation's SLIME rectangles)."""

    info: list[Any]

    @property
    def num_components(self) -> int: ...

    def compose(self, masks: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RankedComponent:
    rank: int
    component: Any  # factorization.Component (or a SLIME rectangle): index, source, name, ...
    weight: float


@dataclass(frozen=True)
class KeepTopK:
    """The paper's check ("fidelity" in the document and the API): the tagger on the mix of only
    the top-k positive components."""

    top_k: int
    components: tuple[int, ...]
    same_top_tag: bool
    top_tag: str
    target_probability: float
    probabilities: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Faithfulness:
    """How far to trust one target's ranking: drop-top-k, deletion/insertion curves (None when
    off), the bootstrap stability of the top-k set (how reproducible the ranking is, not whether
    the tagger relies on it) and the verdict against random k-sets."""

    drop: DropTopK
    deletion: Curve | None
    insertion: Curve | None
    stability: float
    verdict: Verdict


@dataclass(frozen=True)
class TargetExplanation:
    tag: str
    tag_index: int
    surrogate_r2: float
    intercept: float
    ranking: list[RankedComponent]  # every component, by descending weight
    keep: KeepTopK
    faithfulness: Faithfulness

    def top(self, k: int) -> list[RankedComponent]:
        return self.ranking[:k]


@dataclass(frozen=True)
class Checks:
    """The faithfulness checks after sampling, per target: keep and drop the top-k (always), the
    deletion/insertion curves (2 d'+2 masks) and the verdict's ``random_sets`` random k-sets, each
    kept alone and removed."""

    curves: bool
    random_sets: int

    @classmethod
    def of(cls, request: ValidRequest, d: int) -> Checks:
        """What the request asks for over ``d`` components."""
        return cls(request.curves_for(d), request.random_sets)

    def masks(self, d: int, targets: int) -> int:
        """Tagger windows the checks take at most (fewer when the sampling already ran some)."""
        return targets * (2 + (2 * d + 2 if self.curves else 0) + 2 * self.random_sets)

    def reduced_from(self, asked: Checks) -> str | None:
        """A warning for the document when these are fewer checks than ``asked`` (None: the same)."""
        if self == asked:
            return None
        what = []
        if asked.curves and not self.curves:
            what.append("no deletion/insertion curves")
        if self.random_sets < asked.random_sets:
            what.append(f"the verdict from {self.random_sets} random sets, not {asked.random_sets}")
        return "too little time was left for every faithfulness check (deadline or time budget): " + ", ".join(what)


def min_first_round(d: int) -> int:
    """The fewest masks a first round may have: d'+1 (a linear surrogate's unknowns), rounded up to an
    even count (paired masks come in pairs)."""
    return d + 1 + (d + 1) % 2


@dataclass(frozen=True)
class Deadline:
    """When the caller stops waiting (``at``, on ``clock``'s time) and how long must be left once
    sampling stops (``reserve_s``: whatever the door still does, e.g. publishing). After each
    adaptive round the engine predicts the next round's cost and the faithfulness checks' from the
    time its masks took so far, and stops sampling when they would not fit."""

    at: float
    reserve_s: float = 0.0
    clock: Callable[[], float] = time.monotonic
    reason: str = "deadline"  # the stopping reason when it binds: "deadline" (the caller's) or "budget" (the request's)
    # seconds per tagger window measured before sampling (the song scan's): sizes a first round
    # that would not fit (0: unknown, the first round is the usual one)
    window_s: float = 0.0

    @classmethod
    def within(cls, seconds: float, reserve_s: float = 0.0, clock: Callable[[], float] = time.monotonic,
               reason: str = "deadline") -> Deadline:
        return cls(clock() + seconds, reserve_s, clock, reason)

    @classmethod
    def for_answer(cls, seconds: float, reason: str = "deadline", clock: Callable[[], float] = time.monotonic
                   ) -> Deadline:
        """``seconds`` from now, keeping what writing the answer takes after sampling (its WAVs,
        report and manifest): :data:`ANSWER_RESERVE_S` plus a tenth of ``seconds``, at most
        :data:`ANSWER_RESERVE_MAX_S` more. The faithfulness checks are the engine's to predict."""
        return cls.within(seconds, ANSWER_RESERVE_S + min(0.1 * max(seconds, 0.0), ANSWER_RESERVE_MAX_S), clock,
                          reason)

    @staticmethod
    def earliest(*deadlines: Deadline | None) -> Deadline | None:
        """The one that binds first (None: no deadline at all)."""
        given = [d for d in deadlines if d is not None]
        return min(given, key=lambda d: d.at - d.reserve_s) if given else None

    def fits(self, seconds: float) -> bool:
        """Whether ``seconds`` more work, then the reserve, end before the deadline."""
        return self.clock() + seconds + self.reserve_s <= self.at

    def room(self) -> int:
        """Tagger windows that still fit, at :attr:`window_s` a window (a large number when unknown)."""
        if self.window_s <= 0:
            return 2 ** 62
        return int((self.at - self.reserve_s - self.clock()) / self.window_s)

    def first_rounds(self, sizes: list[int], d: int, checks: int) -> list[int]:
        """``sizes`` (cumulative masks per adaptive round) with a first round that fits, with the
        ``checks`` masks that follow sampling, in what is left at :attr:`window_s` a window; never
        fewer than :func:`min_first_round` masks."""
        room = self.room() - checks
        if room >= sizes[0]:
            return sizes
        first = max(min_first_round(d), room - room % 2)
        return [first, *[s for s in sizes if s > first]]

    def sized_checks(self, asked: Checks, first: int, d: int, targets: int, curves_required: bool) -> Checks:
        """The checks that fit beside a first round of ``first`` masks: ``asked`` when both fit; otherwise
        keep and drop stay, and what else the checks take is at most half of what is left after them
        (sampling keeps the other half, at least :func:`min_first_round`): first the curves go (unless
        ``curves_required``: the caller asked for them), then random sets, down to
        :data:`~audiolime.method.request.DEADLINE_MIN_RANDOM_SETS`."""
        room = self.room()
        if room >= first + asked.masks(d, targets):
            return asked
        essential = Checks(False, 0).masks(d, targets)
        optional = max(0, min((room - essential) // 2, room - essential - min_first_round(d)))
        curves = asked.curves and (curves_required or
                                   Checks(True, asked.random_sets).masks(d, targets) - essential <= optional)
        left = optional - (Checks(curves, 0).masks(d, targets) - essential)
        sets = min(asked.random_sets, max(DEADLINE_MIN_RANDOM_SETS, left // (2 * targets)))
        return Checks(curves, sets)


def descending(weights: np.ndarray) -> np.ndarray:
    """Component indices by descending weight; ties keep index order (every ranking's order)."""
    return np.argsort(-weights, kind="stable")


ANSWER_RESERVE_S = 1.0
ANSWER_RESERVE_MAX_S = 10.0


@dataclass(frozen=True)
class Stopping:
    """Why sampling stopped: ``fixed`` (N given), ``stable`` (every target's top-k set kept in
    ``stability`` of the bootstrap fits), ``max_samples``, ``exhaustive`` (all 2^d' masks) or
    ``deadline``/``budget`` (the next round would not have fitted before the caller's gRPC deadline
    or the request's ``time_budget_s``: :class:`Deadline`)."""

    rounds: int
    masks: int
    reason: str
    stability: float  # the least stable target's


@dataclass(frozen=True)
class WindowExplanation:
    """The engine's explanation of one analysed window: per target the ranking and its faithfulness."""

    prediction: np.ndarray  # tagger on the analysed window [tags]
    targets: list[TargetExplanation]
    masks: MaskSet
    mask_predictions: np.ndarray  # [unique, tags]
    timings_s: dict[str, float]
    stopping: Stopping
    metric_calls: int  # tagger windows spent on the faithfulness metrics (beyond the sampled masks)
    checks: Checks  # the faithfulness checks computed (fewer than asked when a deadline was short)
    asked: Checks  # those the request asked for

    @property
    def warnings(self) -> tuple[str, ...]:
        """For the document: the checks a deadline left out, if any."""
        note = self.checks.reduced_from(self.asked)
        return (note,) if note else ()

    @property
    def num_samples(self) -> int:
        return self.masks.num_samples

    @property
    def cut_short(self) -> bool:
        """Whether the caller's time (a deadline or budget) shaped this answer: sampling stopped for it,
        or it left out checks the request asked for. Such an answer is not the request's own."""
        return self.stopping.reason in ("deadline", "budget") or self.checks != self.asked

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


class Engine:
    """Runs explanations against one tagger ``predict`` with ``labels``.

    ``batch_size`` windows go to ``predict`` per call; up to ``max_in_flight`` calls run
    concurrently (threads), which is what lets a remote tagger fan batches out over replicas.
    ``first_round`` and ``round_growth``: adaptive sampling's round schedule
    (:func:`~audiolime.method.sampling.round_sizes`; None and :data:`ROUND_GROWTH`: the product's),
    for measuring other schedules (``bench/bench_first_round.py``).
    """

    def __init__(self, predict: Predict, labels: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE,
                 max_in_flight: int = 1, first_round: int | None = None, round_growth: float = ROUND_GROWTH) -> None:
        if batch_size < 1 or max_in_flight < 1:
            raise InvalidInput("batch_size and max_in_flight must be >= 1")
        if (first_round is not None and first_round < 2) or not round_growth > 1:
            raise InvalidInput("first_round must be >= 2 (None: the default) and round_growth > 1")
        self.predict = predict
        self.labels = list(labels)
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.first_round = first_round
        self.round_growth = round_growth

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
                request: ValidRequest, events: EventSink = ignore,
                memo: MaskPredictions | None = None, deadline: Deadline | None = None) -> WindowExplanation:
        """Explain ``targets`` (tag indices; None = top predicted tag) for the analysed ``window``.

        Emits ``predict`` (per round: masks evaluated / drawn so far; a round's refit and
        bootstrap belong to it), ``fit`` (sampling has stopped) and ``fidelity`` events. ``memo``:
        predictions already made for this factorization (evaluation only). ``deadline``: stop
        adaptive sampling early rather than miss it (see :class:`Deadline`). ``request`` is trusted:
        :meth:`~audiolime.method.request.ExplainRequest.validate` checked it."""
        if memo is not None and memo.factorization is not factorization:
            raise InvalidInput("memo belongs to another factorization")
        memo = memo or MaskPredictions(self, factorization)
        timings = {"sample": 0.0, "predict": 0.0, "fit": 0.0}
        t0 = time.perf_counter()
        prediction = self.evaluate(lambda _: window[None, :].astype(np.float32), np.ones((1, 1)))[0]
        target_idx = list(targets) if targets else [int(np.argmax(prediction))]
        timings["predict"] += time.perf_counter() - t0
        d = factorization.num_components
        asked = Checks.of(request, d)
        masks, unique_pred, fit, stability, stopping, checks = self._sample(factorization.info, target_idx, request,
                                                                            asked, memo, events, timings, deadline)
        events(Event("fidelity"))
        t3 = time.perf_counter()
        rankings = []
        for j, _ in enumerate(target_idx):
            order = descending(fit.coef[j])
            rankings.append([RankedComponent(r + 1, factorization.info[i], float(fit.coef[j, i]))
                             for r, i in enumerate(order)])
        results, metric_calls = self._faithfulness(factorization, masks, memo, prediction, target_idx, rankings,
                                                   fit, stability, request, checks)
        timings["fidelity"] = time.perf_counter() - t3
        return WindowExplanation(prediction, results, masks, unique_pred, timings, stopping, metric_calls, checks,
                                 asked)

    def _sample(self, info: Sequence[Any], target_idx: list[int], request: ValidRequest, asked: Checks,
                memo: MaskPredictions, events: EventSink, timings: dict[str, float], deadline: Deadline | None = None
                ) -> tuple[MaskSet, np.ndarray, SurrogateFit, np.ndarray, Stopping, Checks]:
        """Draw, evaluate and fit, round by round, until the stopping rule holds; each adaptive
        round ends with its :class:`~audiolime.method.events.Ranking`. Under a deadline, the checks
        that follow are sized first (:meth:`Deadline.sized_checks`), then the first round."""
        d = len(info)
        sizes = (round_sizes(d, request.max_samples, self.first_round, self.round_growth) if request.adaptive
                 else [request.num_samples])
        stream = MaskStream(d, request.seed, request.kernel, request.sampling == "paired")
        rows = np.empty((0, d), np.uint8)
        spent, evaluated = 0.0, 0  # on the deadline's clock: what the rounds' masks cost
        plan = asked
        if request.adaptive and deadline is not None:
            plan = deadline.sized_checks(asked, sizes[0], d, len(target_idx), request.curves == "on")
            sizes = deadline.first_rounds(sizes, d, plan.masks(d, len(target_idx)))
        checks = plan.masks(d, len(target_idx))
        for rnd, size in enumerate(sizes, 1):
            t = time.perf_counter()
            exhaustive = exhaustive_at(d, size)
            rows = enumerate_masks(d) if exhaustive else np.concatenate([rows, stream.take(size - len(rows))])
            masks = mask_set(rows, exhaustive)
            timings["sample"] += time.perf_counter() - t
            t, c = time.perf_counter(), deadline.clock() if deadline else 0.0
            unique_pred = memo(masks.unique, lambda done, n: events(Event("predict", done, n)))
            timings["predict"] += time.perf_counter() - t
            if deadline is not None:
                spent, evaluated = spent + deadline.clock() - c, masks.num_unique
            t = time.perf_counter()
            fit, stability = fit_round(masks, unique_pred[masks.inverse][:, target_idx], request, rnd)
            timings["fit"] += time.perf_counter() - t
            if request.adaptive:
                events(self._ranking(rnd, masks.num_samples, info, target_idx, fit, stability, request.top_k))
            reason = ("exhaustive" if exhaustive else "fixed" if not request.adaptive
                      else "stable" if stability.min() >= request.stability
                      else "max_samples" if rnd == len(sizes) else "")
            if not reason and deadline is not None:
                new = 2 ** d - masks.num_unique if exhaustive_at(d, sizes[rnd]) else sizes[rnd] - len(rows)
                if not deadline.fits(spent / max(evaluated, 1) * (new + checks)):
                    reason = deadline.reason
            if reason:
                events(Event("fit"))  # once: the stages stay in order (a round's refit belongs to predict)
                return masks, unique_pred, fit, stability, Stopping(rnd, masks.num_samples, reason,
                                                                    float(stability.min())), plan
        raise AssertionError("the last round always stops")  # pragma: no cover

    def _ranking(self, rnd: int, masks: int, info: Sequence[Any], target_idx: list[int], fit: SurrogateFit,
                 stability: np.ndarray, k: int) -> Ranking:
        targets = []
        for j, tag in enumerate(target_idx):
            order = descending(fit.coef[j])[:k]
            targets.append(RankedSoFar(self.labels[tag], float(stability[j]),
                                       tuple((info[i], float(fit.coef[j, i])) for i in order)))
        return Ranking(rnd, masks, tuple(targets))

    def _faithfulness(self, factorization: Factorization, masks: MaskSet, memo: MaskPredictions,
                      prediction: np.ndarray, target_idx: list[int], rankings: list[list[RankedComponent]],
                      fit: SurrogateFit, stability: np.ndarray, request: ValidRequest, checks: Checks
                      ) -> tuple[list[TargetExplanation], int]:
        """Keep-top-k, drop-top-k, the verdict's random k-sets (kept alone and removed) and (when on)
        deletion/insertion curves of every target, as one batched evaluation; masks the sampling
        already evaluated (or another target's) are not run again."""
        d, curves = factorization.num_components, checks.curves
        blocks, chosen = [], []
        for ranking in rankings:
            pos = tuple(rc.component.index for rc in ranking[:request.top_k] if rc.weight > 0)
            keep = np.zeros((1, d), np.uint8)
            keep[0, list(pos)] = 1
            rand = random_sets(d, len(pos), checks.random_sets, request.seed)
            block = [keep, 1 - keep, rand, 1 - rand]
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
            kept = KeepTopK(len(chosen[j]), chosen[j], bool(chosen[j]) and int(np.argmax(p_keep)) == top,
                                self.labels[int(np.argmax(p_keep))], float(p_keep[tag]), p_keep)
            drop = DropTopK(chosen[j], int(np.argmax(p_drop)) == top, self.labels[int(np.argmax(p_drop))],
                            float(p_drop[tag]))
            r = checks.random_sets
            keep_random, drop_random = preds[at + 2:at + 2 + r, tag], preds[at + 2 + r:at + 2 + 2 * r, tag]
            verdict_ = verdict(self.labels[tag], len(chosen[j]), int(np.argmax(p_keep)) == tag, float(p_keep[tag]),
                               keep_random, int(np.argmax(p_drop)) != tag, float(p_drop[tag]), drop_random,
                               AS_GOOD_SHARE)
            deletion = insertion = None
            if curves:
                c = at + 2 + 2 * r
                deletion = Curve(preds[c:c + d + 1, tag].astype(np.float64))
                insertion = Curve(preds[c + d + 1:c + 2 * d + 2, tag].astype(np.float64))
            at += len(blocks[j])
            results.append(TargetExplanation(self.labels[tag], tag, float(fit.r2[j]), float(fit.intercept[j]),
                                             rankings[j], kept,
                                             Faithfulness(drop, deletion, insertion, float(stability[j]), verdict_)))
        return results, metric_calls
