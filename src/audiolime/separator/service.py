"""Separation service core (no gRPC): decode, cache lookup, admission control, chunked Spleeter.

* Input: encoded audio bytes or an object-store URI (``s3://bucket/key`` in an allowed input
  location, or a URI of the configured store), within the same :class:`~audiolime.method.limits.Limits`
  as the explainer's (size, then the header, before anything is decoded), else ``InvalidInput``
  (``PermissionDenied`` for a URI outside the allowed locations).
* Cache key: sha256 of the decoded PCM + model name, and the entry must have been made with the
  loaded weights (their fingerprint); entries live in the object store (see
  :mod:`audiolime.separator.cache`). A hit skips Spleeter.
* Bounded concurrency: at most ``max_concurrent`` separations run at once and at most
  ``max_queued`` requests wait (decoding, looking up the cache, or waiting for a slot); a request
  beyond that fails at once with ``ResourceExhausted`` (gRPC RESOURCE_EXHAUSTED) instead of
  queueing unboundedly, so memory stays bounded on full songs. Cache hits never take a
  separation slot.
* Windows first: with a window (``[start, end)`` in the input's sample frames), only the chunks
  covering it run and the entry holds that window's stems (with a resampling margin), unless the
  whole recording is cached already, which serves every window. Chunks lie on one grid whatever is
  asked, so a window's stems equal the whole recording's there.
* Full songs: Spleeter runs on chunks of about ``chunk_s`` seconds with a linear cross-fade over
  their overlap, and stems are streamed into FLAC encoders chunk by chunk, so model memory does
  not grow with the song length. Spleeter itself cuts the spectrogram into independent segments
  of 512 frames (11.9 s); chunks start on that grid and overlap by one segment, so chunked output
  equals the unchunked one except within a few STFT frames of chunk ends, which the cross-fade
  weights down (about 0.2% of the mixture RMS).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from audiolime import audio as audiolib
from audiolime.errors import InvalidInput, ModelNotFound
from audiolime.inputs import AudioSource, InputReader
from audiolime.method.limits import Limits, check_name
from audiolime.method.stems import STEM_RATE, ChunkPlan, Residual, separate_chunked, stem_rate_region
from audiolime.method.waveform import Audio, resample
from audiolime.separator.cache import Manifest, StemCache, StemWriter, Window
from audiolime.server import metrics
from audiolime.server.admission import Admission

__all__ = ["Admission", "SeparationService", "SeparatorConfig"]

log = logging.getLogger(__name__)



class Separator(Protocol):
    name: str
    stems_names: list[str]
    weights: str  # fingerprint of the checkpoint: part of the cache key

    def separate(self, waveform: np.ndarray, sample_rate: int, out_rate: int | None = None): ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SeparatorConfig:
    limits: Limits = field(default_factory=Limits)
    max_concurrent: int = 1
    max_queued: int = 8
    chunk_s: float = 30.0  # rounded to whole Spleeter segments; 0 = never chunk
    default_model: str = "2stems"


@dataclass(frozen=True)
class StemResult:
    name: str
    uri: str
    sample_rate: int
    channels: int
    num_samples: int
    start_sample: int = 0


@dataclass(frozen=True)
class SeparateResult:
    audio_sha256: str
    model: str
    stems: list[StemResult]
    cache_hit: bool
    residual_rel_rms: float
    duration_s: float
    timings_s: dict[str, float] = field(default_factory=dict)


class SeparationService:
    """Separate recordings with cached results; thread-safe."""

    def __init__(self, separators: Mapping[str, Separator], cache: StemCache, config: SeparatorConfig,
                 read_uri: Callable[[str], bytes] | None = None) -> None:
        self.separators = dict(separators)
        self.cache = cache
        self.config = config
        self.read_uri = read_uri or InputReader(cache.store, limits=config.limits)
        self.admission = Admission(config.max_concurrent, config.max_queued, metrics.SEPARATIONS, "separator",
                                   "separations")

    def model(self, name: str) -> Separator:
        check_name("model", name)
        name = name or self.config.default_model
        try:
            return self.separators[name]
        except KeyError:
            raise ModelNotFound(f"separator model {name!r} is not loaded "
                                f"(loaded: {', '.join(sorted(self.separators)) or 'none'}; the separator loads "
                                f"those named by --models / $AUDIOLIME_SEPARATOR_MODELS)") from None

    def load_audio(self, source: AudioSource) -> Audio:
        """Decode the input within the configured limits (size and header before decoding)."""
        source.check()
        if source.uri is not None:
            content = self.read_uri(source.uri)
            label = source.filename or source.uri
        else:
            content = source.content or b""
            label = source.filename or "audio content"
        if not content:
            raise InvalidInput("no audio given: set audio.content or audio.uri")
        return audiolib.decode(content, label, self.config.limits)

    def separate(self, source: AudioSource, model: str = "", window: Window | None = None) -> SeparateResult:
        """The stems of the recording (``window`` None or (0, 0)) or of one window of it."""
        separator = self.model(model)
        window = check_window(window)
        with self.admission.place() as place:
            t0 = time.perf_counter()
            audio = self.load_audio(source)
            if window is not None and window[1] > audio.num_samples:
                raise InvalidInput(f"window_end {window[1]} is past the end of the recording "
                                   f"({audio.num_samples} sample frames)")
            sha = audio.pcm_sha256()
            decode_s = time.perf_counter() - t0
            manifest = self._lookup(separator, sha, window)
            if manifest is not None:
                metrics.SEPARATOR_CACHE.labels(separator.name, "hit").inc()
                return self._result(manifest, True, {"decode": decode_s})
            metrics.SEPARATOR_CACHE.labels(separator.name, "miss").inc()
            with place.run():
                manifest = self._lookup(separator, sha, window)  # a concurrent one may have won
                if manifest is not None:
                    return self._result(manifest, True, {"decode": decode_s})
                manifest = self._separate_and_store(separator, audio, sha, window)
        return self._result(manifest, False, {"decode": decode_s, **manifest.timings_s})

    def _lookup(self, separator: Separator, sha: str, window: Window | None) -> Manifest | None:
        """The whole recording's entry (it serves every window), else the window's own."""
        whole = self.cache.lookup(separator.name, sha, separator.weights)
        if whole is not None or window is None:
            return whole
        return self.cache.lookup(separator.name, sha, separator.weights, window)

    def _separate_and_store(self, separator: Separator, audio: Audio, sha: str, window: Window | None = None
                            ) -> Manifest:
        t0 = time.perf_counter()
        mixture = resample(audio.waveform, audio.sample_rate, STEM_RATE)
        start, end = 0, mixture.shape[1]
        if window is not None:
            start, end = stem_rate_region(audio.sample_rate, window[0], window[1], mixture.shape[1])
        writers = {name: StemWriter(STEM_RATE, audio.channels) for name in separator.stems_names}
        residual_of = Residual()

        def sink(at: int, mix: np.ndarray, stems: Mapping[str, np.ndarray]) -> None:
            for name, part in stems.items():
                writers[name].write(part)
            residual_of(at, mix, stems)

        def span(a: int, b: int, mixture: np.ndarray = mixture) -> Mapping[str, np.ndarray]:
            return separator.separate(mixture[:, a:b], STEM_RATE).stems

        separate_chunked(span, mixture, ChunkPlan.for_seconds(self.config.chunk_s), sink, start, end)
        del mixture, span  # the resampled song is not needed while the stems are stored
        t1 = time.perf_counter()
        metrics.SEPARATION_DURATION.labels(separator.name).observe(t1 - t0)
        residual = residual_of.rel_rms
        manifest = self.cache.commit(separator.name, sha, writers, residual, audio.duration_s,
                                     {"separate": t1 - t0}, separator.weights, window, start)
        manifest.timings_s["store"] = time.perf_counter() - t1
        log.info("separated", extra={"model": separator.name, "audio_sha256": sha,
                                     "duration_s": audio.duration_s, "separate_s": t1 - t0,
                                     "residual_rel_rms": residual,
                                     "stem_samples": [start, end] if window is not None else None})
        return manifest

    def _result(self, m: Manifest, hit: bool, timings: dict[str, float]) -> SeparateResult:
        stems = [StemResult(s.name, self.cache.uri(s.key), s.sample_rate, s.channels, s.num_samples, s.start_sample)
                 for s in m.stems]
        return SeparateResult(m.audio_sha256, m.model, stems, hit, m.residual_rel_rms, m.duration_s, timings)


def check_window(window: Window | None) -> Window | None:
    """A request's window: None for the whole recording ((0, 0) too); otherwise 0 <= start < end."""
    if window is None or window == (0, 0):
        return None
    start, end = int(window[0]), int(window[1])
    if start < 0:
        raise InvalidInput(f"window_start must be >= 0, got {start}")
    if end <= start:
        raise InvalidInput(f"window_end must be greater than window_start ({start}), got {end}")
    return start, end
