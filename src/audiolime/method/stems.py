"""Where an explanation's stems come from: one :class:`StemSource` protocol, one separation plan.

Every door (the CLI, the explainer service, the evaluation) gets the stems of an analysis window
the same way, so the same request gives the same stems and the same ranking wherever it runs:

1. the song is resampled to the separator's rate (:data:`STEM_RATE`);
2. the separator runs over a fixed grid of chunks of the song (:class:`ChunkPlan`, whole Spleeter
   segments overlapping by one, linearly cross-faded), independent of the window: the separator
   service runs every chunk of a song once and caches the stems; :class:`LocalSeparation` runs
   only the chunks that cover the window;
3. :func:`window_stems` resamples a margin around the window back to the song's rate (starting on
   a sample both rates share) and crops it.

Step 2 is identical in both places (:func:`separate_chunked`), step 3 is one function, so the
only difference between the service's stems and local ones is the 24-bit FLAC of the cache.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from audiolime.method.waveform import Audio, fit_length, resample, to_channels

STEM_RATE = 44100  # every Spleeter model's rate
SPLEETER_SEGMENT = 512 * 1024  # T frames x frame_step samples at 44.1 kHz (every published config)
DEFAULT_CHUNK_S = 30.0
RESAMPLE_MARGIN = 4096  # stem-rate samples either side of a window when resampling it back

# [channels, n] at STEM_RATE -> {stem: [channels, n]} at STEM_RATE
Separate = Callable[[np.ndarray], Mapping[str, np.ndarray]]
# the stems of samples [a, b) of the song being separated
SeparateSpan = Callable[[int, int], Mapping[str, np.ndarray]]
# (offset at STEM_RATE, mixture part, {stem: part}), in order, consecutive
Sink = Callable[[int, np.ndarray, Mapping[str, np.ndarray]], None]


@dataclass(frozen=True)
class Stems:
    """Separated stems of one excerpt at ``sample_rate``: float32 ``[channels, samples]`` each."""

    stems: dict[str, np.ndarray]
    sample_rate: int
    model: str
    residual_rel_rms: float
    cache_hit: bool = False  # the separator service served them from its cache


class Residual:
    """||mixture - sum(stems)|| / ||mixture||, accumulated part by part (a :data:`Sink`)."""

    def __init__(self) -> None:
        self._err = 0.0
        self._mix = 0.0

    def __call__(self, _: int, mix: np.ndarray, stems: Mapping[str, np.ndarray]) -> None:
        total = np.zeros(mix.shape, dtype=np.float64)
        for part in stems.values():
            total += part
        self._err += float(np.sum(np.square(mix - total)))
        self._mix += float(np.sum(np.square(mix, dtype=np.float64)))

    @property
    def rel_rms(self) -> float:
        return float(np.sqrt(self._err / self._mix)) if self._mix > 0 else 0.0


class StemSource(Protocol):
    """The stems of exactly ``audio[:, start:end]``, at the audio's rate and channel count."""

    def window(self, audio: Audio, start: int, end: int) -> Stems: ...


@dataclass(frozen=True)
class ChunkPlan:
    """Chunks of ``chunk`` samples at :data:`STEM_RATE` overlapping by ``overlap``; 0 = one pass."""

    chunk: int
    overlap: int

    @classmethod
    def for_seconds(cls, chunk_s: float = DEFAULT_CHUNK_S) -> ChunkPlan:
        """Chunks of whole Spleeter segments (about ``chunk_s`` apart) overlapping by one segment.

        Spleeter itself cuts the spectrogram into independent segments of 512 frames (11.9 s);
        chunks start on that grid, so chunked output equals the one-pass output except within a
        few STFT frames of chunk ends, which the cross-fade weights down."""
        if chunk_s <= 0:
            return cls(0, 0)
        hop_segments = max(1, round(chunk_s * STEM_RATE / SPLEETER_SEGMENT))
        return cls((hop_segments + 1) * SPLEETER_SEGMENT, SPLEETER_SEGMENT)


def separate_chunked(separate: SeparateSpan, waveform: np.ndarray, plan: ChunkPlan, sink: Sink,
                     start: int = 0, end: int | None = None) -> None:
    """Separate ``waveform [ch, n]`` (at :data:`STEM_RATE`) chunk by chunk on ``plan``'s grid and
    call ``sink`` with consecutive parts covering exactly ``[start, end)`` (default: everything).
    ``separate(a, b)`` returns the stems of ``waveform[:, a:b]``.

    Chunk ``i`` spans ``[i*hop, i*hop + chunk)`` and contributes ``[i*hop, (i+1)*hop)`` (the last
    one: up to ``n``), its first ``overlap`` samples cross-faded with chunk ``i-1``'s tail. Only
    the chunks that contribute to ``[start, end)`` (and the one before, for a cross-fade) run, and
    their output is the same as in a run over the whole song."""
    n = waveform.shape[1]
    end = n if end is None else min(end, n)
    if start >= end:
        return
    chunk, overlap = plan.chunk, max(0, min(plan.overlap, plan.chunk // 2))
    if chunk <= 0 or n <= chunk:
        stems = separate(0, n)
        sink(start, waveform[:, start:end], {k: v[:, start:end] for k, v in stems.items()})
        return
    hop = chunk - overlap
    last = max(0, math.ceil((n - chunk) / hop))
    first_needed = min(start // hop, last)
    final = min((end - 1) // hop, last)
    i = first_needed - 1 if first_needed > 0 and overlap and start - first_needed * hop < overlap else first_needed
    ramp = np.linspace(0.0, 1.0, overlap, dtype=np.float32)[None, :] if overlap else None
    tail: Mapping[str, np.ndarray] | None = None
    while i <= final:
        a = i * hop
        b = min(a + chunk, n)
        stems = separate(a, b)
        if tail is not None and ramp is not None:
            stems = {k: v.copy() for k, v in stems.items()}
            for k, v in stems.items():
                v[:, :overlap] = tail[k] * (1.0 - ramp) + v[:, :overlap] * ramp
        emit_to = b if i == last else b - overlap  # = (i + 1) * hop
        lo, hi = max(a, start), min(emit_to, end)
        if i >= first_needed and lo < hi:
            sink(lo, waveform[:, lo:hi], {k: v[:, lo - a:hi - a] for k, v in stems.items()})
        tail = {k: v[:, emit_to - a:] for k, v in stems.items()}
        i += 1


def stem_rate_region(audio_rate: int, start: int, end: int, stem_samples: int) -> tuple[int, int]:
    """The region ``[a, b)`` at :data:`STEM_RATE` whose stems give the window ``[start, end)`` at
    ``audio_rate``: a resampling margin either side, ``a`` on a sample both rates share."""
    if audio_rate == STEM_RATE:
        return start, min(end, stem_samples)
    step = STEM_RATE // math.gcd(STEM_RATE, audio_rate)
    a = max(0, (start * STEM_RATE // audio_rate - RESAMPLE_MARGIN) // step * step)
    b = min(stem_samples, -(-end * STEM_RATE // audio_rate) + RESAMPLE_MARGIN)
    return a, b


def window_stems(region: Mapping[str, np.ndarray], region_start: int, audio: Audio, start: int,
                 end: int) -> dict[str, np.ndarray]:
    """Stems of a :func:`stem_rate_region` (at :data:`STEM_RATE`, starting at ``region_start``) as
    the window ``[start, end)`` of ``audio``: its rate, its channel count, exactly ``end - start``."""
    offset = region_start * audio.sample_rate // STEM_RATE
    out = {}
    for name, wave in region.items():
        at_rate = resample(wave, STEM_RATE, audio.sample_rate)
        out[name] = to_channels(fit_length(at_rate[:, start - offset:end - offset], end - start), audio.channels)
    return out


class LocalSeparation:
    """A :class:`StemSource` over an in-process separator: runs the plan's chunks that cover the
    window. ``cache_chunks`` > 0 keeps that many chunk separations of the last song (the
    evaluation explains several windows of a song)."""

    def __init__(self, separate: Separate, model: str, plan: ChunkPlan = ChunkPlan.for_seconds(),
                 cache_chunks: int = 0) -> None:
        self._separate = separate
        self.model = model
        self.plan = plan
        self.cache_chunks = cache_chunks
        self._song: tuple[Audio, np.ndarray] | None = None
        self._chunks: OrderedDict[tuple[int, int], Mapping[str, np.ndarray]] = OrderedDict()

    def _mixture(self, audio: Audio) -> np.ndarray:
        if self._song is None or self._song[0] is not audio:
            self._song = (audio, resample(audio.waveform, audio.sample_rate, STEM_RATE))
            self._chunks.clear()
        return self._song[1]

    def _span(self, mixture: np.ndarray, a: int, b: int) -> Mapping[str, np.ndarray]:
        if not self.cache_chunks:
            return self._separate(mixture[:, a:b])
        key = (a, b)
        if key not in self._chunks:
            self._chunks[key] = self._separate(mixture[:, a:b])
            while len(self._chunks) > self.cache_chunks:
                self._chunks.popitem(last=False)
        return self._chunks[key]

    def window(self, audio: Audio, start: int, end: int) -> Stems:
        mixture = self._mixture(audio)
        a, b = stem_rate_region(audio.sample_rate, start, end, mixture.shape[1])
        parts: dict[str, list[np.ndarray]] = {}
        residual = Residual()

        def sink(at: int, mix: np.ndarray, stems: Mapping[str, np.ndarray]) -> None:
            for name, part in stems.items():
                parts.setdefault(name, []).append(part)
            residual(at, mix, stems)

        separate_chunked(lambda a_, b_: self._span(mixture, a_, b_), mixture, self.plan, sink, a, b)
        region = {k: np.concatenate(v, axis=1) for k, v in parts.items()}
        return Stems(window_stems(region, a, audio, start, end), audio.sample_rate, self.model, residual.rel_rms)
