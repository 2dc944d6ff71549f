"""From a decoded song and its checked :class:`~audiolime.method.plan.Plan` to an explanation:
choose the window, get its stems, factorize, explain.

Transport-free: the CLI runs it with an in-process tagger and separator, the explainer service
with gRPC clients behind the same two protocols (:class:`~audiolime.method.plan.Tagger`,
:class:`~audiolime.method.stems.StemSource`). It trusts the plan (nothing here checks the
request again). Stages are announced as events (``scan``, ``separate``, then the engine's
``predict``, ``fit``, ``fidelity``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from audiolime.method.engine import Deadline, Engine, WindowExplanation
from audiolime.method.events import Event, EventSink, ignore
from audiolime.method.factorization import StemSegmentFactorization
from audiolime.method.plan import Plan, Tagger
from audiolime.method.request import DEFAULT_BATCH_SIZE
from audiolime.method.stems import Stems, StemSource
from audiolime.method.waveform import Audio, fit_length, resample, resample_mono, to_mono


@dataclass
class SongExplanation:
    """The method's result for one song: the window it chose, the stems, the factorization and
    the engine's explanation of the window."""

    plan: Plan
    audio: Audio
    audio_name: str
    tagger: Tagger
    window_start_s: float
    song_prediction: np.ndarray  # mean over scanned windows
    stems: Stems
    factorization: StemSegmentFactorization
    explanation: WindowExplanation
    window_listen: np.ndarray  # the analysed original excerpt at the input rate
    timings_s: dict[str, float]
    warnings: list[str] = field(default_factory=list)

    @property
    def window_duration_s(self) -> float:
        return self.plan.window_s


@dataclass(frozen=True)
class Scan:
    """The tagger on the windows of the song (the song scan, :func:`scan_starts`): window ``starts`` (samples at the
    tagger rate), ``probs [windows, tags]`` and what a window cost (``window_s``, seconds)."""

    starts: np.ndarray
    probs: np.ndarray
    window_s: float


class ScanMemo(Protocol):
    """Where a door keeps the scan of one song by one tagger (e.g. the explainer's object store),
    so that explaining the song again (another tag, seed or window) skips it."""

    def load(self) -> Scan | None: ...

    def save(self, scan: Scan) -> None: ...


# The song scan tags at most this many windows, spread evenly over the song, so that its cost stops
# growing with the song's length: musicnn's 3 s windows at half-window hops reach 64 at 99 s, and a
# 10-minute song is scanned every 9.4 s instead of 800 times (a cold explanation of it waited ~35 s
# for its scan on a 2-core machine, 10 s for a 3-minute song: docs/performance.md "Cold latency").
SCAN_MAX_WINDOWS = 64


def scan_hop(tagger: Tagger) -> int:
    """The song scan's hop: half the tagger's window (every window of the song is seen twice), until
    there would be more than :data:`SCAN_MAX_WINDOWS`."""
    return tagger.window_samples // 2


def scan_starts(num_samples: int, window: int, hop: int, max_windows: int = SCAN_MAX_WINDOWS,
                quantum: int = 1) -> np.ndarray:
    """Where the scan's windows start: every ``hop`` and the song's last window, or, when that is more
    than ``max_windows``, that many spread evenly from the first window to the last, on multiples of
    ``quantum`` samples (the song scan's: 10 ms, so that a window's start in seconds is exact and a
    whole number of samples at any input rate)."""
    last = max(num_samples - window, 0)
    starts = np.arange(0, last + 1, hop)
    if last and starts[-1] != last:
        starts = np.append(starts, last)
    if len(starts) > max_windows:
        spread = np.round(np.linspace(0, last, max_windows) / quantum) * quantum
        starts = np.unique(np.minimum(spread.astype(np.int64), last))
    return starts.astype(np.int64)


def scan_windows(tagger: Tagger, mono: np.ndarray, hop: int,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Tag the windows of ``mono`` (tagger rate) at :func:`scan_starts`: returns (starts, probabilities)."""
    n, w = len(mono), tagger.window_samples
    starts = scan_starts(n, w, hop, quantum=max(1, tagger.sample_rate // 100))
    padded = fit_length(mono[None, :], max(n, w))[0]
    probs = [tagger.predict(np.stack([padded[s:s + w] for s in starts[i:i + batch_size]]))
             for i in range(0, len(starts), batch_size)]
    return starts, np.concatenate(probs).astype(np.float32)


def explain_song(plan: Plan, audio: Audio, audio_name: str, tagger: Tagger, stem_source: StemSource,
                 engine: Engine, events: EventSink = ignore,
                 timings: Mapping[str, float] | None = None, deadline: Deadline | None = None,
                 scans: ScanMemo | None = None, window_cost_s: float = 0.0) -> SongExplanation:
    """The whole method on one song (see module docstring). ``timings``: stages the door already
    ran (reading and decoding the file: ``decode``), to which the pipeline adds its own.
    ``deadline``: when the caller stops waiting (the engine's sampling stops early to meet it);
    the request's ``time_budget_s`` is one more, counted from here (see :meth:`Deadline.for_answer`).
    ``scans``: where the song scan is kept between explanations of the song (None: scanned each time).
    ``window_cost_s``: what a tagger window cost this engine lately (seconds of wall time per window at
    its batch size and concurrency; 0: unknown), for sizing work to a deadline; without it, what the
    scan measured (which, for a kept scan, is when the song was first scanned)."""
    request = plan.request
    if request.time_budget_s:
        deadline = Deadline.earliest(deadline, Deadline.for_answer(request.time_budget_s, reason="budget"))
    timings_s: dict[str, float] = dict(timings or {})
    warnings: list[str] = []
    if audio.source_channels > audio.channels:
        warnings.append(f"{audio.source_channels} channels mixed down to {audio.channels} (ITU-R BS.775: centre and "
                        f"surrounds at -3 dB, LFE dropped): the stems, components and WAVs are the downmix")
    sr_m, w = plan.sample_rate, plan.window_samples
    events(Event("scan"))
    t = time.perf_counter()
    mono = resample_mono(audio.waveform, audio.sample_rate, sr_m)
    if len(mono) < w:
        warnings.append(f"audio is {audio.duration_s:.2f} s, shorter than the model window "
                        f"{w / sr_m:.2f} s: zero-padded at the end")
    timings_s["decode"] = timings_s.get("decode", 0.0) + time.perf_counter() - t
    t = time.perf_counter()
    scan = scans.load() if scans is not None else None
    if scan is None:
        starts, probs = scan_windows(tagger, mono, hop=scan_hop(tagger), batch_size=engine.batch_size)
        scan = Scan(starts, probs, (time.perf_counter() - t) / max(len(starts), 1))
        if scans is not None:
            scans.save(scan)
    starts, probs = scan.starts, scan.probs
    song_pred = probs.mean(axis=0)
    targets = list(plan.targets) if plan.targets is not None else \
        [int(i) for i in np.argsort(-song_pred, kind="stable")[:request.top_n]]
    if request.window_start_s is None:
        start_m = int(starts[int(np.argmax(probs[:, targets[0]]))])
    else:
        start_m = int(round(request.window_start_s * sr_m))
        if start_m + w > len(mono):
            warnings.append(f"window {request.window_start_s:g}\u2013{request.window_start_s + w / sr_m:g} s runs "
                            f"past the end of the audio: zero-padded")
    timings_s["scan"] = time.perf_counter() - t
    if deadline is not None:  # what a window costs (as scanned), to size a first round that fits
        deadline = replace(deadline, window_s=window_cost_s or scan.window_s)
    window_start_s = start_m / sr_m
    # The excerpt in the input's own rate, covering exactly the model window.
    a = int(round(window_start_s * audio.sample_rate))
    b = a + int(round(w / sr_m * audio.sample_rate))
    events(Event("separate"))
    t = time.perf_counter()
    stems = stem_source.window(audio, a, min(b, audio.num_samples))
    timings_s["separate"] = time.perf_counter() - t
    listen = {k: fit_length(v, b - a) for k, v in stems.stems.items()}
    model_stems = {k: fit_length(resample(to_mono(v)[None, :], audio.sample_rate, sr_m)[0], w)
                   for k, v in listen.items()}
    fact = StemSegmentFactorization(model_stems, sr_m, request.segments, window_start_s,
                                    listen_stems=listen, listen_rate=audio.sample_rate, edges=request.edges,
                                    fade=request.fade)
    window = fit_length(mono[None, start_m:start_m + w], w)[0]
    exp = engine.explain(fact, window, targets, request, events, deadline=deadline)
    timings_s.update(exp.timings_s)
    warnings.extend(exp.warnings)
    window_listen = fit_length(audio.waveform[:, a:b], b - a)
    return SongExplanation(plan, audio, audio_name, tagger, window_start_s, song_pred, stems, fact, exp,
                           window_listen, timings_s, warnings)
