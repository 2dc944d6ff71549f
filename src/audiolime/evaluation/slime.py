"""SLIME (Mishra, Sturm & Dixon, ISMIR 2017): LIME over tau temporal segments x F frequency bands
of a spectrogram -- the comparison method of the audioLIME paper -- in two domains:

``audio`` (:class:`StftRectangles`, the paper's own variant, audioLIME's ``SoundLIMEFactorization``):
rectangles of the window's linear-frequency STFT magnitude (``n_fft`` 2048); a switched-off
rectangle gets the magnitude's minimum, the original phase is kept and the result is
resynthesised with ``istft`` to a *waveform* for the tagger's normal ``predict``. Works for any
tagger, waveform-only ones included. Unlike the paper's code (which needs F | 1025 and drops the
frames beyond a multiple of tau), non-divisible sizes are split ``np.array_split``-style so
every STFT bin belongs to exactly one rectangle, and all rectangles on reproduce the window.

``spectrogram`` (:class:`SpectrogramRectangles`): rectangles of the tagger's own model-input
spectrogram.

A :class:`SpectrogramRectangles` factorization plugs into the audioLIME
:class:`~audiolime.method.engine.Engine` unchanged (it is an ``engine.Factorization``: ``compose``,
``num_components`` and ``info``): drive it with ``predict=tagger.predict_spectrogram`` and the
window's spectrogram as the analysed "window". A switched-off rectangle is replaced by a
baseline value (``zero``, or the window spectrogram's ``min`` or ``mean``).

The spectrogram domain needs a tagger whose spectrogram front end can be bypassed (a ``from_spectrogram``
signature); a waveform-only model (e.g. SampleCNN) raises :class:`NotApplicable` -- which is
the audioLIME paper's point: source-separation components need only ``predict(waveform)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audiolime.errors import AudiolimeError, InvalidInput

BASELINES = ("zero", "min", "mean")
DOMAINS = ("audio", "spectrogram")
N_FFT = 2048  # librosa.stft's default, as in the paper's code (hop n_fft // 4)


class NotApplicable(AudiolimeError):
    """The method cannot be applied to this tagger (no spectrogram input)."""


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


@dataclass(frozen=True)
class StftRectangle:
    """One audio-domain SLIME component: STFT bins ``[bin_lo, bin_hi)`` x frames ``[frame_lo, frame_hi)``."""

    index: int
    band: int
    segment: int
    bin_lo: int
    bin_hi: int
    frame_lo: int
    frame_hi: int
    hz_lo: float
    hz_hi: float
    start_s: float
    end_s: float

    @property
    def source(self) -> str:
        return f"freq[{self.band}]"

    @property
    def name(self) -> str:
        return f"freq[{self.band}] ({self.hz_lo:.0f}-{self.hz_hi:.0f} Hz) x time[{self.segment}]"


def split_bounds(n: int, parts: int, what: str) -> np.ndarray:
    """``np.array_split`` boundaries of ``n`` bins into ``parts`` non-empty runs (the first
    ``n % parts`` one bin longer)."""
    if parts < 1:
        raise InvalidInput(f"{what} must be >= 1, got {parts}")
    if parts > n:
        raise InvalidInput(f"{parts} {what} do not fit into {n} STFT bins")
    q, r = divmod(n, parts)
    sizes = np.full(parts, q, dtype=np.int64)
    sizes[:r] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


class StftRectangles:
    """``bands`` (F) x ``segments`` (tau) rectangles over the STFT of one waveform ``window``;
    :meth:`compose` returns *waveforms* ``[b, len(window)]`` (the paper's SLIME).

    Components are ordered band-major (``index = band * segments + segment``), as in
    :class:`SpectrogramRectangles`. A switched-off rectangle's magnitude is the ``baseline``
    (default ``min`` of the window's STFT magnitude, the paper's choice), its phase the original one.
    """

    def __init__(self, window: np.ndarray, sample_rate: int, segments: int = 6, bands: int = 4,
                 baseline: str = "min", n_fft: int = N_FFT, window_start_s: float = 0.0, chunk: int = 16) -> None:
        import librosa

        if baseline not in BASELINES:
            raise InvalidInput(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
        y = np.asarray(window, dtype=np.float32)
        if y.ndim != 1 or len(y) < n_fft:
            raise InvalidInput(f"window must be one waveform of at least {n_fft} samples, got shape {list(y.shape)}")
        self.window, self.sample_rate, self.n_fft, self.chunk = y, int(sample_rate), int(n_fft), max(1, chunk)
        self.hop = self.n_fft // 4
        stft = librosa.stft(y, n_fft=self.n_fft, hop_length=self.hop)  # [bins, frames] complex64
        mag, phase = librosa.magphase(stft)
        self.magnitude, self.phase = mag.astype(np.float32), phase.astype(np.complex64)
        bins, frames = mag.shape
        self.segments, self.bands = segments, bands
        self.bin_bounds = split_bounds(bins, bands, "bands")
        self.frame_bounds = split_bounds(frames, segments, "segments")
        self.baseline_name = baseline
        self.baseline = float({"zero": 0.0, "min": mag.min(), "mean": mag.mean()}[baseline])
        self._cache: tuple[np.ndarray, np.ndarray] | None = None  # (all-off waveform, [d, samples] basis)
        self.band_of_bin = np.repeat(np.arange(bands), np.diff(self.bin_bounds))  # [bins]
        self.segment_of_frame = np.repeat(np.arange(segments), np.diff(self.frame_bounds))  # [frames]
        hz = self.sample_rate / self.n_fft
        # a frame's centre is at frame * hop (librosa centres frames); segment edges at those centres
        t = lambda f: window_start_s + min(f * self.hop, len(y)) / self.sample_rate  # noqa: E731
        self.info = [StftRectangle(b * segments + s, b, s, int(self.bin_bounds[b]), int(self.bin_bounds[b + 1]),
                                   int(self.frame_bounds[s]), int(self.frame_bounds[s + 1]),
                                   self.bin_bounds[b] * hz, min(self.bin_bounds[b + 1] * hz, self.sample_rate / 2),
                                   t(self.frame_bounds[s]), t(self.frame_bounds[s + 1]))
                     for b in range(bands) for s in range(segments)]

    @property
    def num_components(self) -> int:
        return len(self.info)

    @property
    def shape(self) -> tuple[int, int]:
        """``[bins, frames]`` of the STFT."""
        return tuple(self.magnitude.shape)  # type: ignore[return-value]

    def component_mask(self, masks: np.ndarray) -> np.ndarray:
        """``masks [b, d]`` -> boolean STFT masks ``[b, bins, frames]`` (True = kept), by indexing
        the ``[b, bands, segments]`` grid with each bin's band and each frame's segment."""
        m = np.asarray(masks).reshape(-1, self.bands, self.segments) > 0.5
        return m[:, self.band_of_bin][:, :, self.segment_of_frame]

    def compose(self, masks: np.ndarray) -> np.ndarray:
        """``masks [b, d]`` (0/1) -> waveforms ``float32 [b, len(window)]``: one matrix product.

        ``istft`` is linear, so ``istft(where(keep, mag, min) * phase)`` equals the resynthesis
        of the all-off STFT plus, for every kept rectangle, the resynthesis of its
        ``(mag - min) * phase`` alone. Those ``d + 1`` waveforms are computed once (batched
        ``istft``, :attr:`chunk` rectangles at a time); a batch of masks is then ``y_off +
        masks @ basis`` -- no per-mask istft, no per-rectangle loop."""
        m = np.asarray(masks, dtype=np.float32).reshape(-1, self.num_components)
        off, basis = self._basis()
        return (off[None, :] + m @ basis).astype(np.float32, copy=False)

    def _basis(self) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is None:
            import librosa

            n, d = len(self.window), self.num_components
            istft = lambda spec: librosa.istft(spec, hop_length=self.hop, n_fft=self.n_fft, length=n)  # noqa: E731
            off = istft(np.float32(self.baseline) * self.phase)
            excess = (self.magnitude - np.float32(self.baseline)) * self.phase  # >= 0 magnitude, original phase
            basis = np.empty((d, n), dtype=np.float32)
            eye = np.eye(d, dtype=np.float32)
            for a in range(0, d, self.chunk):
                keep = self.component_mask(eye[a:a + self.chunk])
                basis[a:a + len(keep)] = istft(np.where(keep, excess, np.complex64(0)))
            self._cache = (off.astype(np.float32), basis)
        return self._cache


def audio_for_tagger(tagger, window: np.ndarray, segments: int = 6, bands: int = 4, baseline: str = "min",
                     window_start_s: float = 0.0) -> StftRectangles:
    """Audio-domain SLIME rectangles of one waveform ``window`` at ``tagger``'s sample rate
    (needs only ``tagger.predict``)."""
    return StftRectangles(window, tagger.sample_rate, segments, bands, baseline, N_FFT, window_start_s)
