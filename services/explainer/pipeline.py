"""From a decoded song to a listenable explanation: choose the window, separate it, factorize,
explain, and describe the result as a JSON document plus WAV artifacts.

Transport-free: the CLI runs it with an in-process separator and SavedModel; the explainer
service runs the same code with gRPC clients behind the same two protocols.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from audiolime.audio import Audio, resample, to_mono
from audiolime.errors import InvalidInput
from audiolime.explainer.engine import Engine, Explanation, ExplainParams, Progress, resolve_tags, top_tags
from audiolime.explainer.factorization import StemSegmentFactorization, segment_bounds

SEPARATION_CONTEXT_S = 0.5  # audio either side of the window given to the separator, then cropped
DOCUMENT_VERSION = 1


class Tagger(Protocol):
    """What the pipeline needs of a tagger (in-process SavedModel or remote TF Serving)."""

    name: str
    version: int
    labels: list[str]
    sample_rate: int
    window_samples: int

    def predict(self, waveforms: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Stems:
    """Separated stems of one excerpt at ``sample_rate``: float32 ``[channels, samples]`` each."""

    stems: dict[str, np.ndarray]
    sample_rate: int
    model: str
    residual_rel_rms: float


# (audio, start_sample, end_sample) -> stems of exactly audio[:, start:end]
StemSource = Callable[[Audio, int, int], Stems]


def separate_with_context(separate: Callable[..., object], model: str) -> StemSource:
    """Adapt ``SpleeterSeparator.separate`` to a StemSource: separate the excerpt with some
    context either side (fewer edge artefacts), then crop to the excerpt."""

    def source(audio: Audio, start: int, end: int) -> Stems:
        ctx = int(SEPARATION_CONTEXT_S * audio.sample_rate)
        a, b = max(0, start - ctx), min(audio.num_samples, end + ctx)
        sep = separate(audio.waveform[:, a:b], audio.sample_rate)
        stems = {k: _fit_length(v[:, start - a:end - a], end - start) for k, v in sep.stems.items()}
        return Stems(stems, audio.sample_rate, model, float(sep.residual_rel_rms))

    return source


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[-1] >= n:
        return np.ascontiguousarray(x[..., :n])
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


@dataclass(frozen=True)
class ExplainRequest:
    """One explanation request. ``tags`` None: explain the ``top_n`` predicted tags."""

    audio: Audio
    audio_name: str
    tags: Sequence[str] | None = None
    top_n: int = 1
    start_s: float | None = None
    segments: int = 6
    params: ExplainParams = ExplainParams()


@dataclass
class ExplainResult:
    request: ExplainRequest
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
    padded = _fit_length(mono[None, :], max(n, w))[0]
    probs = [tagger.predict(np.stack([padded[s:s + w] for s in starts[i:i + batch_size]]))
             for i in range(0, len(starts), batch_size)]
    return starts, np.concatenate(probs).astype(np.float32)


def validate_request(req: ExplainRequest, tagger: Tagger) -> list[int] | None:
    """Check a request against the tagger before any expensive work; returns target tag indices
    (None: the top predicted tags, decided after tagging the song)."""
    if req.top_n < 1:
        raise InvalidInput(f"top_n must be >= 1, got {req.top_n}")
    req.params.validate()
    segment_bounds(tagger.window_samples, req.segments, tagger.sample_rate)
    if req.start_s is not None and not 0 <= req.start_s < req.audio.duration_s:
        raise InvalidInput(f"start {req.start_s:g} s is outside the audio (duration {req.audio.duration_s:.2f} s)")
    return resolve_tags(tagger.labels, req.tags) if req.tags else None


def explain_song(req: ExplainRequest, tagger: Tagger, stem_source: StemSource, engine: Engine,
                 progress: Progress | None = None) -> ExplainResult:
    """The whole method on one song (see module docstring)."""
    timings: dict[str, float] = {}
    warnings: list[str] = []
    audio, sr_m, w = req.audio, tagger.sample_rate, tagger.window_samples
    target_idx = validate_request(req, tagger)
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
        target_idx = [int(i) for i in np.argsort(-song_pred, kind="stable")[:req.top_n]]
    if req.start_s is None:
        start_m = int(starts[int(np.argmax(probs[:, target_idx[0]]))])
    else:
        start_m = int(round(req.start_s * sr_m))
        if start_m + w > len(mono):
            warnings.append(f"window {req.start_s:g}\u2013{req.start_s + w / sr_m:g} s runs past the end "
                            f"of the audio: zero-padded")
    timings["scan"] = time.perf_counter() - t
    window_start_s = start_m / sr_m
    # The excerpt in the input's own rate, covering exactly the model window.
    a = int(round(window_start_s * audio.sample_rate))
    b = a + int(round(w / sr_m * audio.sample_rate))
    t = time.perf_counter()
    stems = stem_source(audio, a, min(b, audio.num_samples))
    timings["separate"] = time.perf_counter() - t
    listen = {k: _fit_length(v, b - a) for k, v in stems.stems.items()}
    model_stems = {k: _fit_length(resample(to_mono(v)[None, :], audio.sample_rate, sr_m)[0], w)
                   for k, v in listen.items()}
    fact = StemSegmentFactorization(model_stems, sr_m, req.segments, window_start_s,
                                    listen_stems=listen, listen_rate=audio.sample_rate)
    window = _fit_length(mono[None, start_m:start_m + w], w)[0]
    exp = engine.explain(fact, window, target_idx, req.params, progress)
    timings.update(exp.timings_s)
    window_listen = _fit_length(audio.waveform[:, a:b], b - a)
    return ExplainResult(req, tagger, window_start_s, w / sr_m, song_pred, stems, fact, exp, window_listen,
                         timings, warnings)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "tag"


def artifacts(result: ExplainResult) -> Iterator[tuple[str, np.ndarray]]:
    """Relative file name and ``[channels, samples]`` audio of every listenable artifact.

    The first target's files sit at the top level (``rank1_vocals-2.wav``, ``topk_mix.wav``);
    further targets go in a sub-directory named after the tag."""
    fact = result.factorization
    yield "window.wav", result.window_listen
    k = result.request.params.top_k
    for j, target in enumerate(result.explanation.targets):
        prefix = "" if j == 0 else f"{slug(target.tag)}/"
        for rc in target.top(k):
            mask = np.zeros(fact.num_components, np.float32)
            mask[rc.component.index] = 1
            yield f"{prefix}{_component_file(rc.rank, rc.component)}", fact.compose_listen(mask)
        mask = np.zeros(fact.num_components, np.float32)
        mask[list(target.fidelity.components)] = 1
        yield f"{prefix}topk_mix.wav", fact.compose_listen(mask)


def _component_file(rank: int, comp) -> str:
    return f"rank{rank}_{slug(comp.source)}-{comp.segment}.wav"


def document(result: ExplainResult, audio_path: str, files: dict[str, str] | None = None) -> dict:
    """The explanation as a JSON-serialisable document (``explanation.json``).

    ``files`` maps artifact names (from :func:`artifacts`) to what a reader should use to fetch
    them (a relative path, or a presigned URL)."""
    files = files or {}
    req, exp, tagger = result.request, result.explanation, result.tagger
    k = req.params.top_k

    def ref(name: str) -> str | None:
        return files.get(name, name if not files else None)

    targets = []
    for j, t in enumerate(exp.targets):
        prefix = "" if j == 0 else f"{slug(t.tag)}/"
        targets.append({
            "tag": t.tag,
            "surrogate_r2": round(t.surrogate_r2, 6),
            "intercept": round(t.intercept, 6),
            "components": [{
                "rank": rc.rank, "name": rc.component.name, "source": rc.component.source,
                "segment": rc.component.segment, "start_s": round(rc.component.start_s, 4),
                "end_s": round(rc.component.end_s, 4), "weight": round(rc.weight, 6),
                "file": ref(prefix + _component_file(rc.rank, rc.component)) if rc.rank <= k else None,
            } for rc in t.ranking],
            "fidelity": {
                "top_k": t.fidelity.top_k,
                "components": [result.factorization.info[i].name for i in t.fidelity.components],
                "same_top_tag": t.fidelity.same_top_tag,
                "top_tag": t.fidelity.top_tag,
                "target_probability": round(t.fidelity.target_probability, 6),
                "original_target_probability": round(float(exp.prediction[t.tag_index]), 6),
                "file": ref(prefix + "topk_mix.wav"),
            },
        })
    return {
        "version": DOCUMENT_VERSION,
        "audio": {
            "path": audio_path,
            "sha256": req.audio.pcm_sha256(),
            "sample_rate": req.audio.sample_rate,
            "channels": req.audio.channels,
            "duration_s": round(req.audio.duration_s, 4),
            "window": {"start_s": round(result.window_start_s, 4), "duration_s": round(result.window_duration_s, 4)},
            "window_file": ref("window.wav"),
        },
        "model": {"name": tagger.name, "version": tagger.version, "sample_rate": tagger.sample_rate,
                  "window_samples": tagger.window_samples},
        "separator": {"model": result.stems.model, "stems": list(result.stems.stems),
                      "residual_rel_rms": float(f"{result.stems.residual_rel_rms:.3g}")},
        "prediction": {lab: round(float(p), 6) for lab, p in zip(tagger.labels, exp.prediction)},
        "song_top_tags": [{"tag": tag, "probability": round(p, 6)}
                          for tag, p in top_tags(result.song_prediction, tagger.labels, 5)],
        "targets": targets,
        "segments": req.segments,
        "num_components": result.factorization.num_components,
        "num_samples": exp.num_samples,
        "unique_samples": exp.unique_samples,
        "exhaustive": exp.masks.exhaustive,
        "seed": req.params.seed,
        "top_k": k,
        "kernel_width": req.params.kernel_width,
        "timings_s": {key: round(v, 4) for key, v in result.timings_s.items()},
        "warnings": list(result.warnings),
    }
