"""SLIME (Mishra, Sturm & Dixon, ISMIR 2017): LIME over rectangles of the tagger's own input
spectrogram -- tau temporal segments x F frequency bands -- as the comparison method of the
audioLIME paper.

A :class:`SpectrogramRectangles` factorization plugs into the audioLIME
:class:`~audiolime.explainer.engine.Engine` unchanged (the engine only uses ``compose``,
``num_components`` and ``info``): drive it with ``predict=tagger.predict_spectrogram`` and the
window's spectrogram as the analysed "window". A switched-off rectangle is replaced by a
baseline value (``zero``, or the window spectrogram's ``min`` or ``mean``).

SLIME needs a tagger whose spectrogram front end can be bypassed (a ``from_spectrogram``
signature); a waveform-only model (e.g. SampleCNN) raises :class:`NotApplicable` -- which is
the audioLIME paper's point: source-separation components need only ``predict(waveform)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from audiolime.errors import AudiolimeError, InvalidInput

BASELINES = ("zero", "min", "mean")


class NotApplicable(AudiolimeError):
    """The method cannot be applied to this tagger (no spectrogram input)."""


class Factorization(Protocol):
    """What the engine needs of a factorization."""

    info: list

    @property
    def num_components(self) -> int: ...

    def compose(self, masks: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Rectangle:
    """One SLIME component: mel bands ``[mel_lo, mel_hi)`` x frames ``[frame_lo, frame_hi)``."""

    index: int
    band: int
    segment: int
    mel_lo: int
    mel_hi: int
    frame_lo: int
    frame_hi: int
    start_s: float
    end_s: float

    @property
    def source(self) -> str:  # the engine/report vocabulary: what "plays" in this component
        return f"freq[{self.band}]"

    @property
    def name(self) -> str:
        return f"freq[{self.band}] x time[{self.segment}]"


def _bounds(n: int, parts: int, what: str) -> np.ndarray:
    if parts < 1:
        raise InvalidInput(f"{what} must be >= 1, got {parts}")
    if parts > n:
        raise InvalidInput(f"{parts} {what} do not fit into {n} spectrogram bins")
    return np.round(np.linspace(0, n, parts + 1)).astype(np.int64)


class SpectrogramRectangles:
    """``bands`` (F) x ``segments`` (tau) rectangles over one spectrogram ``[frames, mels]``.

    Components are ordered band-major: ``index = band * segments + segment``. The rectangles
    partition the spectrogram: every bin belongs to exactly one component.
    """

    def __init__(self, spectrogram: np.ndarray, segments: int = 6, bands: int = 4, baseline: str = "min",
                 frame_rate: float | None = None, window_start_s: float = 0.0) -> None:
        spec = np.asarray(spectrogram, dtype=np.float32)
        if spec.ndim != 2:
            raise InvalidInput(f"spectrogram must be [frames, mels], got shape {list(spec.shape)}")
        if baseline not in BASELINES:
            raise InvalidInput(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
        frames, mels = spec.shape
        self.spectrogram = spec
        self.segments, self.bands, self.baseline_name = segments, bands, baseline
        self.frame_bounds = _bounds(frames, segments, "segments")
        self.mel_bounds = _bounds(mels, bands, "bands")
        self.baseline = float({"zero": 0.0, "min": spec.min(), "mean": spec.mean()}[baseline])
        fr = frame_rate or 1.0
        self.info = [Rectangle(b * segments + s, b, s, int(self.mel_bounds[b]), int(self.mel_bounds[b + 1]),
                               int(self.frame_bounds[s]), int(self.frame_bounds[s + 1]),
                               window_start_s + self.frame_bounds[s] / fr, window_start_s + self.frame_bounds[s + 1] / fr)
                     for b in range(bands) for s in range(segments)]
        # indicator [d, frames * mels]: 1 where a bin belongs to the component
        seg_of_frame = np.searchsorted(self.frame_bounds, np.arange(frames), side="right") - 1
        band_of_mel = np.searchsorted(self.mel_bounds, np.arange(mels), side="right") - 1
        comp_of_bin = (band_of_mel[None, :] * segments + seg_of_frame[:, None]).reshape(-1)  # [frames * mels]
        self.indicator = (comp_of_bin[None, :] == np.arange(self.num_components)[:, None]).astype(np.float32)

    @property
    def num_components(self) -> int:
        return len(self.info)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.spectrogram.shape)  # type: ignore[return-value]

    def component_mask(self, masks: np.ndarray) -> np.ndarray:
        """``masks [b, d]`` -> 0/1 bin masks ``[b, frames, mels]``."""
        m = np.asarray(masks, dtype=np.float32).reshape(-1, self.num_components)
        return (m @ self.indicator).reshape(len(m), *self.shape)

    def compose(self, masks: np.ndarray) -> np.ndarray:
        """``masks [b, d]`` (0/1) -> spectrograms ``[b, frames, mels]``: one matrix product and a
        select between the spectrogram and the baseline (exact: all on = the spectrogram); no
        per-sample loop."""
        m = np.asarray(masks, dtype=np.float32).reshape(-1, self.num_components)
        on = m @ self.indicator  # [b, frames * mels], 0/1 since the rectangles are disjoint
        flat = self.spectrogram.reshape(1, -1)
        return np.where(on > 0.5, flat, np.float32(self.baseline)).reshape(len(m), *self.shape)


def check_spectrogram_tagger(tagger: object) -> None:
    """Raise :class:`NotApplicable` unless ``tagger`` exposes its spectrogram front end."""
    name = getattr(tagger, "name", type(tagger).__name__)
    ok = all(callable(getattr(tagger, attr, None)) for attr in ("spectrogram", "predict_spectrogram"))
    if not ok or getattr(tagger, "spectrogram_shape", None) is None:
        raise NotApplicable(f"{name} has no from_spectrogram signature: waveform-only model: SLIME is not "
                            f"applicable \u2014 the paper's point")


def for_tagger(tagger, window: np.ndarray, segments: int = 6, bands: int = 4, baseline: str = "min",
               window_start_s: float = 0.0) -> SpectrogramRectangles:
    """Rectangles over ``tagger``'s model-input spectrogram of one waveform ``window``."""
    check_spectrogram_tagger(tagger)
    spec = np.asarray(tagger.spectrogram(np.asarray(window, np.float32)[None, :]))[0]
    frame_rate = spec.shape[0] / (len(window) / tagger.sample_rate)
    return SpectrogramRectangles(spec, segments, bands, baseline, frame_rate, window_start_s)
