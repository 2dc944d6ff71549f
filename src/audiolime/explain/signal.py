"""Waveforms as the method sees them: float32 ``[channels, samples]`` at a sample rate.

numpy only; resampling between different rates uses soxr (band-limited, high quality), imported
on first use, so the method imports and runs on numpy and scikit-learn alone when rates match.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from audiolime.errors import InvalidInput


@dataclass(frozen=True)
class Audio:
    """Decoded audio: ``waveform`` float32 ``[channels, samples]`` at ``sample_rate``."""

    waveform: np.ndarray
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.waveform.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.waveform.shape[1])

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate

    def pcm_sha256(self) -> str:
        """Content hash of the decoded PCM (independent of container, tags and encoder padding)."""
        return pcm_sha256(self.waveform, self.sample_rate)


def pcm_sha256(waveform: np.ndarray, sample_rate: int) -> str:
    h = hashlib.sha256(f"float32le;sr={sample_rate};ch={waveform.shape[0]};".encode())
    h.update(np.ascontiguousarray(waveform, dtype="<f4"))  # the buffer itself: no copy of a long song
    return h.hexdigest()


def resample(waveform: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling (soxr, high quality) of ``[channels, samples]``."""
    if sr_in == sr_out:
        return np.ascontiguousarray(waveform, dtype=np.float32)
    import soxr

    x = np.ascontiguousarray(waveform.T, dtype=np.float32)
    if x.strides != (x.shape[1] * x.itemsize, x.itemsize):
        x = x.copy()  # numpy calls a length-1 axis contiguous whatever its stride; soxr does not
    out = soxr.resample(x, sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def to_mono(waveform: np.ndarray) -> np.ndarray:
    """Average channels: ``[channels, samples] -> [samples]``."""
    return np.ascontiguousarray(waveform.mean(axis=0), dtype=np.float32)


def to_channels(waveform: np.ndarray, channels: int) -> np.ndarray:
    """Mono -> N channels by duplication, N -> mono by averaging, N -> N unchanged."""
    if waveform.shape[0] == channels:
        return waveform
    if waveform.shape[0] == 1:
        return np.repeat(waveform, channels, axis=0)
    if channels == 1:
        return to_mono(waveform)[None, :]
    raise InvalidInput(f"cannot map {waveform.shape[0]} channels to {channels}")


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """``x [..., m]`` cut or zero-padded at the end to ``[..., n]``."""
    if x.shape[-1] >= n:
        return np.ascontiguousarray(x[..., :n])
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])
