"""Audio decoding, resampling and hashing. Waveforms are float32 ``[channels, samples]``."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from audiolime.errors import InvalidInput

SILENCE_RMS = 1e-5  # about -100 dBFS: below this the recording carries nothing to explain


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


def decode(source: str | Path | bytes, name: str | None = None) -> Audio:
    """Decode wav/flac/ogg/mp3 (anything libsndfile reads) from a path or encoded bytes.

    Raises ``InvalidInput`` for unreadable, non-audio, empty or silent input."""
    label = name or (str(source) if not isinstance(source, bytes) else "audio bytes")
    try:
        if isinstance(source, bytes):
            if not source:
                raise InvalidInput(f"{label}: empty input")
            data, sr = sf.read(io.BytesIO(source), dtype="float32", always_2d=True)
        else:
            path = Path(source)
            if not path.is_file():
                raise InvalidInput(f"{label}: no such file")
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except InvalidInput:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise InvalidInput(f"{label}: not a readable audio file ({_short(exc)})") from None
    waveform = np.ascontiguousarray(data.T)
    if waveform.shape[1] == 0:
        raise InvalidInput(f"{label}: contains no samples")
    if not np.isfinite(waveform).all():
        raise InvalidInput(f"{label}: contains NaN or infinite samples")
    if float(np.sqrt(np.mean(np.square(waveform, dtype=np.float64)))) < SILENCE_RMS:
        raise InvalidInput(f"{label}: is silent (RMS below {SILENCE_RMS:g}); nothing to explain")
    return Audio(waveform, int(sr))


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    # libsndfile names an in-memory input by its Python repr ("Error opening <_io.BytesIO ...>: ")
    return re.sub(r"^Error opening <[^>]*>: ", "", text[-1]) if text else type(exc).__name__


def resample(waveform: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling (soxr, high quality) of ``[channels, samples]``."""
    if sr_in == sr_out:
        return np.ascontiguousarray(waveform, dtype=np.float32)
    out = soxr.resample(np.ascontiguousarray(waveform.T, dtype=np.float32), sr_in, sr_out, quality="HQ")
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


def write_wav(path: Path, waveform: np.ndarray, sample_rate: int) -> None:
    """Write ``[channels, samples]`` (or ``[samples]``) as 16-bit PCM WAV, clipping to [-1, 1]."""
    data = np.atleast_2d(waveform).T
    sf.write(str(path), np.clip(data, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")


def wav_bytes(waveform: np.ndarray, sample_rate: int) -> bytes:
    """Encode as 16-bit PCM WAV in memory."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.atleast_2d(waveform).T, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()
