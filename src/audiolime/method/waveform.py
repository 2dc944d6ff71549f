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
class AudioHeader:
    """What an audio file's header says, read without decoding (or what decoded audio has)."""

    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate > 0 else 0.0


@dataclass(frozen=True)
class Audio:
    """Decoded audio: ``waveform`` float32 ``[channels, samples]`` at ``sample_rate``;
    ``source_channels``: the input's channel count when decoding mixed it down (3-8 channels to
    stereo), 0 when the waveform has the input's channels."""

    waveform: np.ndarray
    sample_rate: int
    source_channels: int = 0

    @property
    def input_channels(self) -> int:
        """The channel count of the input file (what the explanation document reports)."""
        return self.source_channels or self.channels

    @property
    def channels(self) -> int:
        return int(self.waveform.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.waveform.shape[1])

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate

    @property
    def header(self) -> AudioHeader:
        return AudioHeader(self.sample_rate, self.channels, self.num_samples)

    def pcm_sha256(self) -> str:
        """Content hash of the decoded PCM (independent of container, tags and encoder padding)."""
        return pcm_sha256(self.waveform, self.sample_rate)


def pcm_sha256(waveform: np.ndarray, sample_rate: int) -> str:
    h = hashlib.sha256(f"float32le;sr={sample_rate};ch={waveform.shape[0]};".encode())
    h.update(np.ascontiguousarray(waveform, dtype="<f4").data)  # the buffer itself: no copy of a long song
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


def resample_mono(waveform: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """``[channels, samples]`` -> mono ``[samples']`` at ``sr_out``: one mono copy, handed to soxr
    as it is (no transposed or padded copy of the whole song, as ``resample(to_mono(x)[None])`` made)."""
    mono = to_mono(waveform)
    if sr_in == sr_out:
        return mono
    import soxr

    return np.ascontiguousarray(soxr.resample(mono, sr_in, sr_out, quality="HQ"), dtype=np.float32)


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
