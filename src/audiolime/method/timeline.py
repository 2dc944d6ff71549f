"""A tag explained over a whole track (or a time range of it): the per-window song explanation.

musicnn and FCN tag a song by the mean of their window probabilities, so a song's explanation is
the mean of its windows' explanations:

1. the range ``[start_s, end_s)`` is tiled with the tagger's windows (:func:`tile_starts`: hop =
   window, the last one clamped inside the range so every second is heard, at most
   :data:`MAX_TIMELINE_WINDOWS` of them unless asked);
2. each window is separated and factorized (stems x segments) and explained by the engine for the
   one tag, with the request's sampling settings (``num_samples``/``max_samples`` are per window);
3. the song-level surrogate is the mean of the window surrogates, so component (window ``w``,
   stem ``s``, segment ``j``) has song-level weight ``weight_w[s * segments + j] / windows``;
   along each stem these weights, in time order, are its *timeline* (where in the song the stem
   carries the tag), and the top-k song-level components are the *top moments*;
4. song-level faithfulness, measured with the tagger (no surrogate involved): keep only the top
   moments (every other component of every window off), drop them (everything else on), and
   recompute the song aggregate -- the mean over windows of the tagger on each window's masked
   mix -- next to ``random_sets`` random k-sets of the song's components
   (:func:`~audiolime.method.faithfulness.random_sets` and
   :func:`~audiolime.method.faithfulness.verdict`, as for a window).

Cost: one tagger window per window (its prediction), the window's distinct masks, its own checks
(kept small: keep, drop and one random set each, curves off -- the verdict that matters is the
song's), and the song checks, each distinct mask of a window once (a window none of the top
moments touches sees the all-off or the all-on mask, evaluated once). :class:`TimelineCost`
counts them, next to windows x masks per window.

Events, in order: ``scan`` (only when the tag is not given: the tiled windows are tagged to pick
the song's top tag), then per window ``window`` (done = the window's index, total = windows),
``separate`` and the engine's ``predict``/``fit``/``fidelity``, and last ``song-fidelity``.
Importable with numpy and scikit-learn only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from audiolime.errors import InvalidInput
from audiolime.method.engine import Engine, MaskPredictions, Stopping
from audiolime.method.events import Event, EventSink, ignore
from audiolime.method.factorization import StemSegmentFactorization, segment_bounds
from audiolime.method.faithfulness import Verdict, random_sets, verdict
from audiolime.method.limits import DEFAULT, Limits
from audiolime.method.plan import Plan, Tagger, make_plan
from audiolime.method.request import AS_GOOD_SHARE, RANDOM_SETS, ValidRequest
from audiolime.method.stems import StemSource
from audiolime.method.waveform import Audio, AudioHeader, fit_length, resample, resample_mono, to_mono

# A timeline explains every window of its range, so its cost is windows x (masks + checks): by
# default at most 64 windows (3:12 of musicnn's 3 s windows -- a typical song --, the whole of any
# admitted song with FCN's 29 s), about 64 single-window explanations of tagger time; more only when
# asked (``max_windows``, up to a 10-minute song of musicnn windows), and always within the
# tagger-cost budget (Limits.check_timeline_cost), which caps adaptive sampling's max_samples per window.
MAX_TIMELINE_WINDOWS = 64
MAX_TIMELINE_WINDOWS_CAP = 256
# Each window's own checks: the engine always runs keep/drop and the verdict's random sets; one set
# and no curves keep them to 4 tagger windows, since the song-level checks are the timeline's verdict.
WINDOW_RANDOM_SETS = 1
TOP_MOMENTS = 5


@dataclass(frozen=True)
class TimelineRequest:
    """The song-level part of a timeline: the range (``end_s`` None: the end of the audio), how many
    windows it may take, how many top moments and random sets the song-level checks use."""

    start_s: float = 0.0
    end_s: float | None = None
    max_windows: int = MAX_TIMELINE_WINDOWS
    top_k: int = TOP_MOMENTS
    random_sets: int = RANDOM_SETS

    def validate(self) -> TimelineRequest:
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise InvalidInput(f"start_s must be >= 0, got {self.start_s:g}", field="start_s")
        if self.end_s is not None and not (math.isfinite(self.end_s) and self.end_s > self.start_s):
            raise InvalidInput(f"end_s must be after start_s {self.start_s:g} s, got {self.end_s:g}", field="end_s")
        if not 1 <= self.max_windows <= MAX_TIMELINE_WINDOWS_CAP:
            raise InvalidInput(f"max_windows must be between 1 and {MAX_TIMELINE_WINDOWS_CAP}, "
                               f"got {self.max_windows}", field="max_windows")
        if self.top_k < 1:
            raise InvalidInput(f"top_k must be >= 1, got {self.top_k}", field="top_k")
        if not 1 <= self.random_sets <= 64:
            raise InvalidInput(f"random_sets must be between 1 and 64, got {self.random_sets}", field="random_sets")
        return self


def tile_starts(num_samples: int, window: int, start: int, end: int) -> np.ndarray:
    """Window starts (samples) tiling ``[start, end)`` of a ``num_samples`` signal: every ``window``
    samples from ``start``, the last one clamped so that it ends at ``end``; a range shorter than a
    window gets one window, moved back so that it ends inside the signal (from 0 when the signal is
    shorter than a window: zero-padded)."""
    end = min(end, num_samples)
    if end - start <= window:
        return np.array([max(0, min(start, num_samples - window))], np.int64)
    starts = np.arange(start, end - window + 1, window, dtype=np.int64)
    if starts[-1] + window < end:
        starts = np.append(starts, end - window)
    return starts


@dataclass(frozen=True)
class TimelinePlan:
    """What :func:`explain_timeline` runs: the window plan (the engine's request per window, sampling
    capped to the budget), the song-level settings and the window starts (tagger-rate samples)."""

    plan: Plan
    timeline: TimelineRequest
    starts: tuple[int, ...]
    window_request: ValidRequest
    warnings: tuple[str, ...] = ()

    @property
    def windows(self) -> int:
        return len(self.starts)

    @property
    def start_s(self) -> float:
        return self.starts[0] / self.plan.sample_rate

    @property
    def end_s(self) -> float:
        return (self.starts[-1] + self.plan.window_samples) / self.plan.sample_rate


def window_checks(d: int) -> int:
    """Tagger windows a window's own checks take at most (keep, drop, the random sets kept and dropped)."""
    return 2 + 2 * WINDOW_RANDOM_SETS


def make_timeline_plan(request: ValidRequest, timeline: TimelineRequest, tagger: Tagger, header: AudioHeader,
                       limits: Limits = DEFAULT) -> TimelinePlan:
    """Check a timeline before any work: the window request (:func:`make_plan`; one tag at most),
    the range against the audio, the window count against ``max_windows`` and the tagger-cost budget
    (adaptive sampling's ``max_samples`` per window lowered to fit it)."""
    timeline = timeline.validate()
    if len(request.tags) > 1:
        raise InvalidInput(f"tags: a timeline explains one tag, got {len(request.tags)}", field="tags")
    if request.time_budget_s:
        raise InvalidInput("time_budget_s: a timeline has no time budget yet (its cost is bounded by "
                           "max_windows and the tagger-cost budget)", field="time_budget_s")
    plan = make_plan(ValidRequest(replace(request, window_start_s=None, top_n=1)), tagger, header, limits)
    d = request.num_components
    rate, w = plan.sample_rate, plan.window_samples
    if not timeline.start_s < header.duration_s:
        raise InvalidInput(f"start_s {timeline.start_s:g} s is outside the audio (duration {header.duration_s:.2f} s)",
                           field="start_s")
    if timeline.end_s is not None and timeline.end_s > header.duration_s + 1e-6:
        raise InvalidInput(f"end_s {timeline.end_s:g} s is past the end of the audio (duration "
                           f"{header.duration_s:.2f} s)", field="end_s")
    n = math.ceil(header.duration_s * rate)
    a = int(round(timeline.start_s * rate))
    b = n if timeline.end_s is None else min(n, int(round(timeline.end_s * rate)))
    starts = tile_starts(n, w, a, b)
    if len(starts) > timeline.max_windows:
        raise InvalidInput(f"max_windows: {(b - a) / rate:.1f} s from {a / rate:g} s needs {len(starts)} windows of "
                           f"{w / rate:g} s, more than max_windows {timeline.max_windows}; explain a shorter range "
                           f"(start_s, end_s) or raise max_windows (at most {MAX_TIMELINE_WINDOWS_CAP})",
                           field="max_windows")
    nw = len(starts)
    if timeline.top_k > nw * d:
        raise InvalidInput(f"top_k must be <= the range's components ({nw} windows x {d}), got {timeline.top_k}",
                           field="top_k")
    song_checks = 2 + 2 * timeline.random_sets
    overhead = 1 + window_checks(d) + song_checks
    wreq = replace(plan.request, curves="off", random_sets=WINDOW_RANDOM_SETS)
    warnings = []
    if plan.request.adaptive:
        limits.check_timeline_cost(nw, d + 1 + overhead, plan.window_s, tagger.name)
        most = limits.most_samples(plan.window_s) // nw - overhead
        if wreq.max_samples > most:
            warnings.append(f"adaptive sampling capped at {most} masks per window (max_samples {wreq.max_samples}): "
                            f"{nw} windows share the tagger-cost budget (--max-tagger-seconds)")
            wreq = replace(wreq, max_samples=most)
    else:
        limits.check_timeline_cost(nw, wreq.num_samples + overhead, plan.window_s, tagger.name)
    if timeline.end_s is None or b - a >= w:
        pass
    else:
        warnings.append(f"the range {timeline.start_s:g}-{timeline.end_s:g} s is shorter than one {w / rate:g} s "
                        f"window: explained the window {starts[0] / rate:g}-{(starts[0] + w) / rate:g} s")
    return TimelinePlan(plan, timeline, tuple(int(s) for s in starts), ValidRequest(wreq), tuple(warnings))


# -- the result ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimelineWindow:
    """One window of the timeline: its times, the tagger's probability of the tag on it (the song's
    is their mean), its surrogate's fit and intercept, why its sampling stopped and what it cost."""

    index: int
    start_s: float
    end_s: float
    probability: float
    surrogate_r2: float
    intercept: float
    stopping: Stopping
    unique_masks: int
    tagger_calls: int  # its prediction, its distinct masks and its own checks


@dataclass(frozen=True)
class StemTimeline:
    """One stem along the song: a song-level weight per (window, segment), in time order
    (window-major), with each one's times."""

    stem: str
    starts_s: np.ndarray
    ends_s: np.ndarray
    weights: np.ndarray


@dataclass(frozen=True)
class Moment:
    """A song-level component: ``index`` = window x d' + stem index x segments + segment."""

    rank: int
    index: int
    window: int
    stem: str
    segment: int
    start_s: float
    end_s: float
    weight: float  # song level: the window's weight / windows


@dataclass(frozen=True)
class SongFaithfulness:
    """The top moments at song level: the song aggregate (mean over windows) with only them kept
    and with them removed, next to random k-sets of the song's components (the verdict)."""

    top_k: int
    components: tuple[int, ...]  # song component indices (positive weights only)
    original_probability: float  # the song aggregate of the tag on the unmasked windows
    keep_probability: float
    keep_top_tag: str
    drop_probability: float
    drop_top_tag: str
    keep_random: np.ndarray = field(repr=False)
    drop_random: np.ndarray = field(repr=False)
    verdict: Verdict


@dataclass(frozen=True)
class TimelineCost:
    """Tagger windows the timeline ran: the scan (picking the tag), per window its prediction,
    distinct masks and checks, and the song-level checks; ``masks_x_windows`` is what sampling alone
    would cost (the issue's reference: the total should be within 1.5 x of it)."""

    tagger_calls: int
    scan: int
    predictions: int
    masks: int
    window_checks: int
    song_checks: int
    masks_x_windows: int  # the masks the windows' sampling drew, summed

    @property
    def ratio(self) -> float:
        return self.tagger_calls / max(self.masks_x_windows, 1)


@dataclass
class SongTimeline:
    """The method's explanation of one tag over a song range (see the module docstring)."""

    plan: TimelinePlan
    audio_name: str
    audio: Audio
    tagger: Tagger
    tag: str
    tag_index: int
    song_probability: float  # mean of the windows' probabilities of the tag
    song_prediction: np.ndarray  # mean over windows, every tag
    song_intercept: float  # the song surrogate's: mean of the window intercepts
    windows: list[TimelineWindow]
    stems: list[StemTimeline]
    moments: list[Moment]
    faithfulness: SongFaithfulness
    cost: TimelineCost
    separator: str
    residual_rel_rms: float  # the largest of the windows'
    timings_s: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    song_weights: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)  # [windows, d']


@dataclass
class _Window:
    """What the song checks need of an explained window: its model-rate stems (the components are
    rebuilt from them, so no window holds its components after its explanation) and its sampled
    predictions (masks the checks need again are not run again)."""

    stems: dict[str, np.ndarray]
    rate: int
    start_s: float
    known: dict[bytes, np.ndarray]


# (start, end, {stem: [channels, end - start]}): a window's stems at the audio's rate, as separated
StemSink = Callable[[int, int, dict[str, np.ndarray]], None]


def explain_timeline(tplan: TimelinePlan, audio: Audio, audio_name: str, tagger: Tagger, stem_source: StemSource,
                     engine: Engine, events: EventSink = ignore, stem_sink: StemSink | None = None) -> SongTimeline:
    """The timeline of ``tplan`` over ``audio`` (see the module docstring). ``stem_sink`` receives
    each window's stems at the audio's rate (samples ``[start, end)`` of ``audio``) before they are
    dropped: what the clips are cut from (:func:`audiolime.explanation.timeline.RangeStems`)."""
    plan, request, timeline = tplan.plan, tplan.window_request, tplan.timeline
    sr_m, w = plan.sample_rate, plan.window_samples
    timings = {"decode": 0.0, "scan": 0.0, "separate": 0.0, "sample": 0.0, "predict": 0.0, "fit": 0.0,
               "fidelity": 0.0, "song_fidelity": 0.0}
    warnings = list(tplan.warnings)
    t = time.perf_counter()
    mono = resample_mono(audio.waveform, audio.sample_rate, sr_m)
    mono = fit_length(mono[None, :], max(len(mono), tplan.starts[-1] + w))[0]
    timings["decode"] = time.perf_counter() - t
    nw, d = tplan.windows, request.num_components
    scan_calls = 0
    if plan.targets is not None:
        tag = plan.targets[0]
    else:
        events(Event("scan"))
        t = time.perf_counter()
        probs = engine.evaluate(lambda idx: np.stack([mono[tplan.starts[int(i)]:tplan.starts[int(i)] + w]
                                                      for i in idx[:, 0]]), np.arange(nw)[:, None])
        tag = int(np.argmax(probs.mean(axis=0)))
        scan_calls = nw
        timings["scan"] = time.perf_counter() - t
    tag_name = engine.labels[tag]
    windows: list[TimelineWindow] = []
    kept: list[_Window] = []
    coefs = np.zeros((nw, d))
    predictions = np.zeros((nw, len(engine.labels)), np.float32)
    intercepts = np.zeros(nw)
    residual = 0.0
    separator = ""
    masks_total = checks_total = 0
    for i, start_m in enumerate(tplan.starts):
        events(Event("window", i, nw))
        start_s = start_m / sr_m
        a = int(round(start_s * audio.sample_rate))
        b = a + int(round(w / sr_m * audio.sample_rate))
        events(Event("separate"))
        t = time.perf_counter()
        stems = stem_source.window(audio, a, min(b, audio.num_samples))
        timings["separate"] += time.perf_counter() - t
        separator, residual = stems.model, max(residual, stems.residual_rel_rms)
        if stem_sink is not None:
            stem_sink(a, min(b, audio.num_samples), stems.stems)
        model_stems = {k: fit_length(resample(to_mono(fit_length(v, b - a))[None, :], audio.sample_rate, sr_m)[0], w)
                       for k, v in stems.stems.items()}
        del stems
        fact = StemSegmentFactorization(model_stems, sr_m, request.segments, start_s, edges=request.edges,
                                        fade=request.fade)
        memo = MaskPredictions(engine, fact)
        exp = engine.explain(fact, mono[start_m:start_m + w], [tag], request, events, memo=memo)
        for key in ("sample", "predict", "fit", "fidelity"):
            timings[key] += exp.timings_s.get(key, 0.0)
        target = exp.targets[0]
        coefs[i] = [rc.weight for rc in sorted(target.ranking, key=lambda rc: rc.component.index)]
        predictions[i] = exp.prediction
        intercepts[i] = target.intercept
        masks_total += exp.unique_samples
        checks_total += exp.metric_calls
        windows.append(TimelineWindow(i, round(start_s, 4), round(start_s + w / sr_m, 4), float(exp.prediction[tag]),
                                      target.surrogate_r2, target.intercept, exp.stopping, exp.unique_samples,
                                      1 + memo.evaluated))
        kept.append(_Window(model_stems, sr_m, start_s, {row.tobytes(): p for row, p in
                                                   zip(exp.masks.unique, exp.mask_predictions)}))
        warnings.extend(exp.warnings)
    song = coefs / nw  # [windows, d]: the song surrogate is the mean of the window surrogates
    sources = list(kept[0].stems)
    segs = request.segments
    edges = segment_bounds(w, segs, sr_m) / sr_m  # segment times within a window
    starts_s = np.array([k.start_s + edges[:-1] for k in kept]).reshape(-1)
    ends_s = np.array([k.start_s + edges[1:] for k in kept]).reshape(-1)
    stems_out = []
    for si, src in enumerate(sources):
        stems_out.append(StemTimeline(src, starts_s, ends_s, song[:, si * segs:(si + 1) * segs].reshape(-1)))
    flat = song.reshape(-1)
    order = np.argsort(-flat, kind="stable")
    top = [int(g) for g in order[:timeline.top_k] if flat[g] > 0]
    moments = []
    for r, g in enumerate(order[:timeline.top_k]):
        win, c = divmod(int(g), d)
        si, seg = divmod(c, segs)
        moments.append(Moment(r + 1, int(g), win, sources[si], seg, round(float(starts_s[win * segs + seg]), 4),
                              round(float(ends_s[win * segs + seg]), 4), float(flat[g])))
    events(Event("song-fidelity"))
    t = time.perf_counter()
    faith, song_calls = _song_checks(kept, engine, request, tag, top, timeline.random_sets, d, predictions)
    timings["song_fidelity"] = time.perf_counter() - t
    cost = TimelineCost(scan_calls + nw + masks_total + checks_total + song_calls, scan_calls, nw, masks_total,
                        checks_total, song_calls, sum(x.stopping.masks for x in windows))
    song_pred = predictions.mean(axis=0)
    return SongTimeline(tplan, audio_name, audio, tagger, tag_name, tag, float(song_pred[tag]), song_pred,
                        float(intercepts.mean()), windows, stems_out, moments, faith, cost, separator, residual,
                        timings, warnings, song)


def song_masks(num_components: int, top: Sequence[int], sets: int, seed: int) -> np.ndarray:
    """The song-level check masks over ``num_components`` song components: keep the ``top`` ones,
    drop them, then ``sets`` random k-sets kept alone and ``sets`` removed (the verdict's,
    :func:`~audiolime.method.faithfulness.random_sets`)."""
    keep = np.zeros((1, num_components), np.uint8)
    keep[0, list(top)] = 1
    rand = random_sets(num_components, len(top), sets, seed)
    return np.concatenate([keep, 1 - keep, rand, 1 - rand])


def _song_checks(kept: list[_Window], engine: Engine, request: ValidRequest, tag: int, top: list[int], sets: int,
                 d: int, predictions: np.ndarray) -> tuple[SongFaithfulness, int]:
    """Every song mask's aggregate: per window, the distinct slices of the masks not already known
    (sampled) evaluated once; the all-off slice (silence, the same in every window) once in all."""
    nw = len(kept)
    masks = song_masks(nw * d, top, sets, request.seed)
    probs = np.zeros((len(masks), len(engine.labels)))
    calls = 0
    silence: np.ndarray | None = None
    for i, k in enumerate(kept):
        part = np.ascontiguousarray(masks[:, i * d:(i + 1) * d])
        unique, inverse = np.unique(part, axis=0, return_inverse=True)
        rows = np.zeros((len(unique), len(engine.labels)), np.float32)
        todo = []
        for u, row in enumerate(unique):
            if row.tobytes() in k.known:
                rows[u] = k.known[row.tobytes()]
            elif not row.any() and silence is not None:
                rows[u] = silence
            else:
                todo.append(u)
        if todo:
            fact = StemSegmentFactorization(k.stems, k.rate, request.segments, k.start_s,
                                            edges=request.edges, fade=request.fade)
            rows[todo] = engine.evaluate(fact.compose, unique[todo])
            calls += len(todo)
            for u in todo:
                if not unique[u].any():
                    silence = rows[u]
        probs += rows[inverse.reshape(-1)]
    probs /= nw
    p_keep, p_drop = probs[0], probs[1]
    keep_top, drop_lost = int(np.argmax(p_keep)) == tag, int(np.argmax(p_drop)) != tag
    keep_random, drop_random = probs[2:2 + sets, tag], probs[2 + sets:2 + 2 * sets, tag]
    v = verdict(engine.labels[tag], len(top), keep_top, float(p_keep[tag]), keep_random, drop_lost,
                float(p_drop[tag]), drop_random, AS_GOOD_SHARE)
    return SongFaithfulness(len(top), tuple(top), float(predictions[:, tag].mean()), float(p_keep[tag]),
                            engine.labels[int(np.argmax(p_keep))], float(p_drop[tag]),
                            engine.labels[int(np.argmax(p_drop))], keep_random, drop_random, v), calls

