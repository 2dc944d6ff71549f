"""From a decoded song to an explanation: check the request, choose the window, get its stems,
factorize, explain.

Transport-free: the CLI runs it with an in-process tagger and separator, the explainer service
with gRPC clients behind the same two protocols (:class:`Tagger`, :class:`~audiolime.explain.stems.StemSource`).
Stages are announced as events (``scan``, ``separate``, then the engine's ``predict``, ``fit``,
``fidelity``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from audiolime.errors import InvalidInput
from audiolime.explain.engine import Engine, Explanation, resolve_tags
from audiolime.explain.events import Event, EventSink, ignore
from audiolime.explain.factorization import StemSegmentFactorization, segment_bounds
from audiolime.explain.limits import DEFAULT, AudioHeader, Limits
from audiolime.explain.request import ExplainRequest
from audiolime.explain.signal import Audio, fit_length, resample, to_mono
from audiolime.explain.stems import Stems, StemSource


class Tagger(Protocol):
    """What the pipeline needs of a tagger (in-process SavedModel or remote TF Serving)."""

    name: str
    version: int
    labels: list[str]
    sample_rate: int
    window_samples: int

    def predict(self, waveforms: np.ndarray) -> np.ndarray: ...


@dataclass
class ExplainResult:
    request: ExplainRequest
    audio: Audio
    audio_name: str
    tagger: Tagger
    window_start_s: float
    window_duration_s: float
    song_prediction: np.ndarray  # mean over scanned windows
    stems: Stems
    factorization: StemSegmentFactorization
    explanation: Explanation
    window_listen: np.ndarray  # the analysed original excerpt at the input rate
    timings_s: dict[str, float]
    warnings: list[str] = field(default_factory=list)


def scan_windows(tagger: Tagger, mono: np.ndarray, hop: int, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Tag every window of ``mono`` (tagger rate) with ``hop``: returns (starts, probabilities)."""
    n, w = len(mono), tagger.window_samples
    starts = np.arange(0, max(n - w, 0) + 1, hop)
    if n > w and starts[-1] != n - w:
        starts = np.append(starts, n - w)
    padded = fit_length(mono[None, :], max(n, w))[0]
    probs = [tagger.predict(np.stack([padded[s:s + w] for s in starts[i:i + batch_size]]))
             for i in range(0, len(starts), batch_size)]
    return starts, np.concatenate(probs).astype(np.float32)


def check(request: ExplainRequest, tagger: Tagger, audio: Audio | AudioHeader | None = None,
          limits: Limits = DEFAULT) -> list[int] | None:
    """Check a request against the tagger (and the audio, or just its header) before any expensive
    work; returns the target tag indices, each once (None: the top predicted tags, decided after
    tagging the song)."""
    request.validate(limits)
    window_s = tagger.window_samples / tagger.sample_rate
    if request.window_duration_s and abs(request.window_duration_s - window_s) > 1e-3:
        raise InvalidInput(f"window_duration_s must be 0 or the model's input length {window_s:g} s "
                           f"for {tagger.name!r}, got {request.window_duration_s:g}")
    segment_bounds(tagger.window_samples, request.segments, tagger.sample_rate)
    # adaptive sampling stops at the budget (within_budget), but needs at least d'+1 masks
    limits.check_cost(request.num_components + 1 if request.adaptive else request.num_samples, window_s, tagger.name)
    if audio is not None:
        if request.window_start_s is not None and not request.window_start_s < audio.duration_s:
            raise InvalidInput(f"window_start_s {request.window_start_s:g} s is outside the audio "
                               f"(duration {audio.duration_s:.2f} s)")
        listen = round(window_s * audio.sample_rate)
        need = StemSegmentFactorization.memory_bytes(request.num_components, tagger.window_samples, listen,
                                                     audio.channels)
        limits.check_component_bytes(need, request.segments, f"{request.num_components} components of a "
                                     f"{window_s:g} s window at {audio.sample_rate} Hz x {audio.channels} channels")
    return list(dict.fromkeys(resolve_tags(tagger.labels, request.tags))) if request.tags else None


def within_budget(request: ExplainRequest, tagger: Tagger, limits: Limits = DEFAULT) -> ExplainRequest:
    """Adaptive sampling's cap lowered to the tagger-cost budget (``--max-window-seconds``) for this
    model: ``max_samples`` is a ceiling, so the server's own ceiling applies (the document records
    the effective one); a fixed ``num_samples`` over the budget is refused by :func:`check`."""
    most = limits.most_samples(tagger.window_samples / tagger.sample_rate)
    if not request.adaptive or request.max_samples <= most:
        return request
    return replace(request, max_samples=most).validate(limits)


def explain_song(audio: Audio, audio_name: str, request: ExplainRequest, tagger: Tagger, stem_source: StemSource,
                 engine: Engine, events: EventSink = ignore, limits: Limits = DEFAULT) -> ExplainResult:
    """The whole method on one song (see module docstring)."""
    timings: dict[str, float] = {}
    warnings: list[str] = []
    sr_m, w = tagger.sample_rate, tagger.window_samples
    target_idx = check(request, tagger, audio, limits)
    request = within_budget(request, tagger, limits)
    events(Event("scan"))
    t = time.perf_counter()
    mono = resample(to_mono(audio.waveform)[None, :], audio.sample_rate, sr_m)[0]
    if len(mono) < w:
        warnings.append(f"audio is {audio.duration_s:.2f} s, shorter than the model window "
                        f"{w / sr_m:.2f} s: zero-padded at the end")
    timings["decode"] = time.perf_counter() - t
    t = time.perf_counter()
    starts, probs = scan_windows(tagger, mono, hop=w // 2, batch_size=engine.batch_size)
    song_pred = probs.mean(axis=0)
    if target_idx is None:
        target_idx = [int(i) for i in np.argsort(-song_pred, kind="stable")[:request.top_n]]
    if request.window_start_s is None:
        start_m = int(starts[int(np.argmax(probs[:, target_idx[0]]))])
    else:
        start_m = int(round(request.window_start_s * sr_m))
        if start_m + w > len(mono):
            warnings.append(f"window {request.window_start_s:g}\u2013{request.window_start_s + w / sr_m:g} s runs "
                            f"past the end of the audio: zero-padded")
    timings["scan"] = time.perf_counter() - t
    window_start_s = start_m / sr_m
    # The excerpt in the input's own rate, covering exactly the model window.
    a = int(round(window_start_s * audio.sample_rate))
    b = a + int(round(w / sr_m * audio.sample_rate))
    events(Event("separate"))
    t = time.perf_counter()
    stems = stem_source.window(audio, a, min(b, audio.num_samples))
    timings["separate"] = time.perf_counter() - t
    listen = {k: fit_length(v, b - a) for k, v in stems.stems.items()}
    model_stems = {k: fit_length(resample(to_mono(v)[None, :], audio.sample_rate, sr_m)[0], w)
                   for k, v in listen.items()}
    fact = StemSegmentFactorization(model_stems, sr_m, request.segments, window_start_s,
                                    listen_stems=listen, listen_rate=audio.sample_rate, edges=request.edges,
                                    fade=request.fade)
    window = fit_length(mono[None, start_m:start_m + w], w)[0]
    exp = engine.explain(fact, window, target_idx, request, events)
    timings.update(exp.timings_s)
    window_listen = fit_length(audio.waveform[:, a:b], b - a)
    return ExplainResult(request, audio, audio_name, tagger, window_start_s, w / sr_m, song_pred, stems, fact, exp,
                         window_listen, timings, warnings)
