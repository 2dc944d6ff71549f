"""Separator variants built from the weights we have, and the one loader every door uses.

``2stems+hpss`` runs Spleeter's 2stems model and splits its ``accompaniment`` with librosa's
harmonic-percussive separation (median filtering, Fitzgerald 2010) into ``harmonic`` and
``percussive``: components become vocals / harmonic / percussive x segments. The split is exact:
``harmonic`` is the accompaniment's STFT under HPSS's soft harmonic mask (one mask for all
channels, from their mean magnitude), resynthesised with ``istft``; ``percussive`` is the
accompaniment minus ``harmonic`` (the residual trick), so the three stems sum to what the two
did, and so to the mixture. HPSS runs at Spleeter's rate (44.1 kHz), before any resampling.

:func:`load_separators` builds every requested model once, sharing Spleeter sessions between a
base model and its variants (a separator service loading ``2stems,2stems+hpss`` holds one
2stems graph).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from audiolime.errors import ModelNotFound
from audiolime.method.request import SEPARATOR_STEMS, stems_of
from audiolime.method.waveform import resample, to_channels
from audiolime.separator.spleeter_separator import Separation, SpleeterSeparator, missing_weights

# variant -> (Spleeter model it runs, the stem HPSS splits)
HPSS_VARIANTS: dict[str, tuple[str, str]] = {"2stems+hpss": ("2stems", "accompaniment")}
N_FFT = 2048
HOP = 512
KERNEL = 31  # librosa's default median-filter length (frames and bins)


def hpss_split(wave: np.ndarray, n_fft: int = N_FFT, hop: int = HOP, kernel: int = KERNEL) -> tuple[np.ndarray, np.ndarray]:
    """``wave [channels, n]`` -> (harmonic, percussive), each ``[channels, n]``, summing to ``wave``."""
    import librosa

    x = np.asarray(wave, dtype=np.float32)
    n = x.shape[-1]
    if n < n_fft:  # too short for one STFT frame: all harmonic (still sums exactly)
        return x.copy(), np.zeros_like(x)
    spec = librosa.stft(x, n_fft=n_fft, hop_length=hop)  # [channels, bins, frames]
    mask_h, _ = librosa.decompose.hpss(np.abs(spec).mean(axis=0), kernel_size=kernel, mask=True)
    harmonic = librosa.istft(spec * mask_h[None], hop_length=hop, n_fft=n_fft, length=n).astype(np.float32)
    return harmonic, (x - harmonic).astype(np.float32)


class HpssVariant:
    """A base separator whose ``split`` stem is replaced by its harmonic and percussive parts
    (same interface as :class:`SpleeterSeparator`)."""

    def __init__(self, name: str, base: SpleeterSeparator, split: str) -> None:
        if split not in base.stems_names:
            raise ModelNotFound(f"separator {base.name!r} has no stem {split!r} to split")
        self.name = name
        self.base = base
        self.split = split
        self.weights = base.weights
        self.sample_rate = base.sample_rate
        self.stems_names: list[str] = []
        for stem in base.stems_names:
            self.stems_names += ["harmonic", "percussive"] if stem == split else [stem]
        if tuple(self.stems_names) != SEPARATOR_STEMS.get(name):
            raise ModelNotFound(f"separator variant {name!r} does not match the catalog")
        self.device = base.device

    def close(self) -> None:
        """Closes the base session (closing a closed session again is a no-op: it may be shared)."""
        self.base.close()

    def separate(self, waveform: np.ndarray, sample_rate: int, out_rate: int | None = None) -> Separation:
        """As :meth:`SpleeterSeparator.separate`, with the split stem in two."""
        out_rate = out_rate or sample_rate
        sep = self.base.separate(waveform, sample_rate, out_rate=self.sample_rate)
        t0 = time.perf_counter()
        stems: dict[str, np.ndarray] = {}
        for name, wave in sep.stems.items():
            if name == self.split:
                stems["harmonic"], stems["percussive"] = hpss_split(wave)
            else:
                stems[name] = wave
        t1 = time.perf_counter()
        channels = np.atleast_2d(np.asarray(waveform)).shape[0]
        stems = {k: to_channels(resample(v, self.sample_rate, out_rate), channels) for k, v in stems.items()}
        t2 = time.perf_counter()
        timings = dict(sep.timings_s)
        timings["hpss"] = t1 - t0
        timings["resample"] = timings.get("resample", 0.0) + (t2 - t1)
        return Separation(stems=stems, sample_rate=out_rate, residual_rel_rms=sep.residual_rel_rms, model=self.name,
                          timings_s=timings)


def spleeter_model(name: str) -> str:
    """The Spleeter model whose weights separator ``name`` runs (itself, or a variant's base)."""
    return HPSS_VARIANTS.get(name, (name,))[0]


def check_installed(spleeter_root: Path, names: Iterable[str]) -> None:
    """Every named separator is known and its Spleeter weights are under ``spleeter_root``, else
    ``ModelNotFound`` saying how to install them: checked before any model is loaded."""
    for name in names:
        stems_of(name)
        base = spleeter_model(name)
        if not (Path(spleeter_root) / base / "checkpoint").is_file():
            raise missing_weights(spleeter_root, base)


def load_separators(spleeter_root: Path, names: Iterable[str], warmup: bool = True) -> dict:
    """Every named separator (Spleeter models and their variants), each Spleeter model loaded once."""
    names = list(names)
    check_installed(spleeter_root, names)  # before a first (slow) model is loaded
    bases: dict[str, SpleeterSeparator] = {}

    def base(model: str) -> SpleeterSeparator:
        if model not in bases:
            bases[model] = SpleeterSeparator(spleeter_root, model, warmup=warmup)
        return bases[model]

    out: dict = {}
    for name in names:
        if name in HPSS_VARIANTS:
            model, split = HPSS_VARIANTS[name]
            out[name] = HpssVariant(name, base(model), split)
        else:
            out[name] = base(name)
    return out


def load_separator(spleeter_root: Path, name: str, warmup: bool = True):
    """One separator by name (a Spleeter model or a variant of one)."""
    return load_separators(spleeter_root, [name], warmup)[name]
