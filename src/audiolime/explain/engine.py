"""The audioLIME engine: sample masks, evaluate them through a black-box ``predict``, fit a
surrogate per target, rank components, and check fidelity on the top-k mix.

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
from audiolime.explain.request import ExplainRequest
from audiolime.explain.sampling import MaskSet, sample_masks
from audiolime.explain.surrogate import fit_surrogate, kernel_weights

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
class TargetExplanation:
    tag: str
    tag_index: int
    surrogate_r2: float
    intercept: float
    ranking: list[RankedComponent]  # every component, by descending weight
    fidelity: Fidelity

    def top(self, k: int) -> list[RankedComponent]:
        return self.ranking[:k]


@dataclass(frozen=True)
class Explanation:
    prediction: np.ndarray  # tagger on the analysed window [tags]
    targets: list[TargetExplanation]
    masks: MaskSet
    mask_predictions: np.ndarray  # [unique, tags]
    timings_s: dict[str, float]

    @property
    def num_samples(self) -> int:
        return self.masks.num_samples

    @property
    def unique_samples(self) -> int:
        return self.masks.num_unique


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
                request: ExplainRequest = ExplainRequest(), events: EventSink = ignore) -> Explanation:
        """Explain ``targets`` (tag indices; None = top predicted tag) for the analysed ``window``.

        Emits ``predict`` (masks evaluated / total), ``fit`` and ``fidelity`` events."""
        if request.top_k < 1:
            raise InvalidInput(f"top_k must be >= 1, got {request.top_k}")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        prediction = self.evaluate(lambda _: window[None, :].astype(np.float32), np.ones((1, 1)))[0]
        target_idx = list(targets) if targets else [int(np.argmax(prediction))]
        masks = sample_masks(factorization.num_components, request.num_samples, request.seed)
        timings["sample"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        total = masks.num_unique
        events(Event("predict", 0, total))
        unique_pred = self.evaluate(factorization.compose, masks.unique,
                                    lambda done, n: events(Event("predict", done, n)))
        timings["predict"] = time.perf_counter() - t1
        events(Event("fit"))
        t2 = time.perf_counter()
        weights = kernel_weights(masks.masks, request.kernel_width)
        fit = fit_surrogate(masks.masks, unique_pred[masks.inverse][:, target_idx], weights, request.ridge_alpha)
        timings["fit"] = time.perf_counter() - t2
        events(Event("fidelity"))
        t3 = time.perf_counter()
        rankings = []
        for j, _ in enumerate(target_idx):
            order = np.argsort(-fit.coef[j], kind="stable")
            rankings.append([RankedComponent(r + 1, factorization.info[i], float(fit.coef[j, i]))
                             for r, i in enumerate(order)])
        fid_masks = np.zeros((len(target_idx), factorization.num_components), dtype=np.uint8)
        chosen = []
        for j, ranking in enumerate(rankings):
            pos = tuple(rc.component.index for rc in ranking[:request.top_k] if rc.weight > 0)
            fid_masks[j, list(pos)] = 1
            chosen.append(pos)
        fid_pred = self.evaluate(factorization.compose, fid_masks)
        timings["fidelity"] = time.perf_counter() - t3
        top = int(np.argmax(prediction))
        results = []
        for j, tag in enumerate(target_idx):
            p = fid_pred[j]
            fidelity = Fidelity(len(chosen[j]), chosen[j], bool(chosen[j]) and int(np.argmax(p)) == top,
                                self.labels[int(np.argmax(p))], float(p[tag]), p)
            results.append(TargetExplanation(self.labels[tag], tag, float(fit.r2[j]), float(fit.intercept[j]),
                                             rankings[j], fidelity))
        return Explanation(prediction, results, masks, unique_pred, timings)
