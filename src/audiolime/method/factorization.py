"""Interpretable components: source-separation stems x fixed-length temporal segments.

Segment edges are ``hard`` (a component is its stem gated on/off at the boundaries) or ``fade``:
complementary raised-cosine cross-fades centred on every inner boundary, ``fade`` x the segment
length long, so a kept segment fades in and out instead of clicking, and the segment weights
still sum to exactly one at every sample (the components still sum to the stems).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from audiolime.errors import InvalidInput
from audiolime.method.request import EDGES

MIN_SEGMENT_S = 0.05


@dataclass(frozen=True)
class Component:
    """One interpretable component: ``source`` restricted to temporal ``segment``."""

    index: int
    source: str
    segment: int
    start_s: float
    end_s: float

    @property
    def name(self) -> str:
        return f"{self.source}[{self.segment}] {self.start_s:.2f}\u2013{self.end_s:.2f} s"


def segment_bounds(num_samples: int, segments: int, sample_rate: int) -> np.ndarray:
    """Sample indices of ``segments`` equal-length segments: ``[segments + 1]`` boundaries."""
    if segments < 1:
        raise InvalidInput(f"segments must be >= 1, got {segments}")
    seg_s = num_samples / sample_rate / segments
    if seg_s < MIN_SEGMENT_S:
        raise InvalidInput(f"{segments} segments of a {num_samples / sample_rate:.2f} s window are "
                           f"{seg_s * 1000:.1f} ms long; the minimum is {MIN_SEGMENT_S * 1000:.0f} ms")
    return np.round(np.linspace(0, num_samples, segments + 1)).astype(np.int64)


def segment_weights(num_samples: int, bounds: np.ndarray, edges: str = "hard", fade: float = 0.0) -> np.ndarray:
    """``[segments, num_samples]`` weights of each segment at each sample; columns sum to 1.

    ``hard``: 1 inside the segment, 0 outside. ``fade``: at every inner boundary the two segments
    cross-fade over ``fade`` x the shortest segment length (``0 < fade <= 1``, so fades never
    overlap), centred on the boundary: ``sin^2`` in, ``1 - sin^2`` out. The window's own start
    and end are not faded (nothing lies beyond them)."""
    segments = len(bounds) - 1
    seg_id = np.searchsorted(bounds, np.arange(num_samples), side="right") - 1
    w = (seg_id[None, :] == np.arange(segments)[:, None]).astype(np.float64)
    length = fade_length(bounds, edges, fade)
    if not length:
        return w.astype(np.float32)
    up = np.sin(0.5 * np.pi * (np.arange(length) + 0.5) / length) ** 2  # 0 -> 1, raised cosine
    for j in range(1, segments):
        a = int(bounds[j]) - length // 2
        w[j - 1, a:a + length] = 1.0 - up
        w[j, a:a + length] = up
    return w.astype(np.float32)


def fade_length(bounds: np.ndarray, edges: str, fade: float) -> int:
    """Samples of one cross-fade between the segments of ``bounds`` (0: hard edges)."""
    if edges not in EDGES:
        raise InvalidInput(f"edges must be one of {', '.join(EDGES)}, got {edges!r}")
    if edges == "hard" or len(bounds) < 3:
        return 0
    if not 0 < fade <= 1:
        raise InvalidInput(f"fade must be in (0, 1] (a fraction of the segment length), got {fade:g}")
    n = int(fade * int(np.min(np.diff(bounds))))
    return n if n >= 2 else 0


class StemSegmentFactorization:
    """C stems x tau segments = d' components over one analysis window.

    ``stems`` are the model-domain signals (mono, tagger rate) that the tagger sees;
    ``listen_stems`` (optional, e.g. 44.1 kHz stereo) are what a person hears. Both are cut at the
    same times, so a mask means the same thing in both domains. Components are ordered
    source-major: index = source_index * segments + segment. ``edges``/``fade``: see
    :func:`segment_weights` (the same fades, in seconds, in both domains).
    """

    def __init__(self, stems: Mapping[str, np.ndarray], sample_rate: int, segments: int,
                 window_start_s: float = 0.0, listen_stems: Mapping[str, np.ndarray] | None = None,
                 listen_rate: int | None = None, edges: str = "hard", fade: float = 0.0) -> None:
        if not stems:
            raise InvalidInput("no stems to factorize")
        self.sources = list(stems)
        lengths = {np.asarray(v).shape[-1] for v in stems.values()}
        if len(lengths) != 1:
            raise InvalidInput(f"stems differ in length: {sorted(lengths)}")
        n = lengths.pop()
        self.sample_rate = sample_rate
        self.segments = segments
        self.num_samples = n
        self.window_start_s = window_start_s
        self.edges, self.fade = edges, fade if edges == "fade" else 0.0
        bounds = segment_bounds(n, segments, sample_rate)
        self.fade_s = fade_length(bounds, edges, fade) / sample_rate  # one cross-fade, in seconds
        self.components = _cut(np.stack([np.asarray(stems[s], np.float32).reshape(n) for s in self.sources]),
                               segment_weights(n, bounds, edges, fade))  # [d', n]
        self.info = [Component(i * segments + j, src, j, window_start_s + bounds[j] / sample_rate,
                               window_start_s + bounds[j + 1] / sample_rate)
                     for i, src in enumerate(self.sources) for j in range(segments)]
        self.listen_rate = listen_rate
        self.listen_components: np.ndarray | None = None  # [d', channels, n_listen]
        if listen_stems is not None:
            if listen_rate is None or list(listen_stems) != self.sources:
                raise InvalidInput("listen_stems need listen_rate and the same sources as stems")
            ls = np.stack([np.atleast_2d(np.asarray(listen_stems[s], np.float32)) for s in self.sources])
            n_l = ls.shape[-1]
            lb = np.round(bounds * (n_l / n)).astype(np.int64)
            c, ch = ls.shape[0], ls.shape[1]
            flat = _cut(ls.reshape(c * ch, n_l), segment_weights(n_l, lb, edges, fade)).reshape(c, ch, segments, n_l)
            self.listen_components = np.ascontiguousarray(flat.transpose(0, 2, 1, 3).reshape(c * segments, ch, n_l))

    @property
    def num_components(self) -> int:
        return len(self.info)

    @staticmethod
    def memory_bytes(num_components: int, samples: int, listen_samples: int = 0, listen_channels: int = 0) -> int:
        """Bytes of the float32 component signals a factorization holds: ``[d', samples]`` for the
        tagger plus ``[d', channels, listen_samples]`` to listen to (building them takes about as
        much again, transiently)."""
        return 4 * num_components * (samples + listen_channels * listen_samples)

    def compose(self, masks: np.ndarray) -> np.ndarray:
        """``masks [b, d']`` (0/1) -> model inputs ``[b, samples]``: one matrix product."""
        return np.asarray(masks, dtype=np.float32) @ self.components

    def listen_stem(self, source: str) -> np.ndarray:
        """One stem over the whole window as heard, ``[channels, samples]``: the sum of its
        segments, so each of its components is exactly a time range of it."""
        if self.listen_components is None:
            raise InvalidInput("this factorization has no listenable stems")
        i = self.sources.index(source)
        return self.listen_components[i * self.segments:(i + 1) * self.segments].sum(axis=0)

    def compose_listen(self, mask: np.ndarray) -> np.ndarray:
        """One mask ``[d']`` -> listenable audio ``[channels, samples]``."""
        if self.listen_components is None:
            raise InvalidInput("this factorization has no listenable stems")
        return np.tensordot(np.asarray(mask, np.float32), self.listen_components, axes=1)


def _cut(signals: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``signals [k, n]`` x segment ``weights [segments, n]`` -> ``[k * segments, n]``."""
    k, n = signals.shape
    return (signals[:, None, :] * weights[None, :, :]).reshape(k * weights.shape[0], n)
