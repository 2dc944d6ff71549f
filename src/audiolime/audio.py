"""Audio files in and out (libsndfile through soundfile): decoding to :class:`Audio`, WAV encoding.

The waveform type and its numpy helpers live with the method in :mod:`audiolime.explain.signal`.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from audiolime.errors import InvalidInput
from audiolime.explain.signal import Audio

SILENCE_RMS = 1e-5  # about -100 dBFS: below this the recording carries nothing to explain


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


def write_wav(path: Path, waveform: np.ndarray, sample_rate: int) -> None:
    """Write ``[channels, samples]`` (or ``[samples]``) as 16-bit PCM WAV, clipping to [-1, 1]."""
    data = np.atleast_2d(waveform).T
    sf.write(str(path), np.clip(data, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")


def wav_bytes(waveform: np.ndarray, sample_rate: int) -> bytes:
    """Encode as 16-bit PCM WAV in memory."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.atleast_2d(waveform).T, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()
