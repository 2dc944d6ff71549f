"""Audio files in and out (libsndfile through soundfile): decoding to :class:`Audio`, WAV encoding.

The waveform type and its numpy helpers live with the method in :mod:`audiolime.method.waveform`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

from audiolime.errors import InvalidInput
from audiolime.method.limits import DEFAULT, SF_COUNT_MAX, Limits, audio_error, decoded_channels
from audiolime.method.waveform import Audio, AudioHeader

SILENCE_RMS = 1e-5  # about -100 dBFS: below this the recording carries nothing to explain
BLOCK_FRAMES = 1 << 16  # frames decoded per step: the decoder's working memory beyond the song itself
_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OverflowError, MemoryError)

# Downmix of 3-8 channels to stereo (rows: left, right), in the channel order WAV and FLAC define
# for each count, with ITU-R BS.775's coefficients: centre and surrounds at -3 dB, LFE dropped.
_G = 0.7071
DOWNMIX: dict[int, np.ndarray] = {n: np.asarray(m, dtype=np.float32) for n, m in {
    3: [[1, 0, _G], [0, 1, _G]],  # FL FR FC
    4: [[1, 0, _G, 0], [0, 1, 0, _G]],  # FL FR BL BR
    5: [[1, 0, _G, _G, 0], [0, 1, _G, 0, _G]],  # FL FR FC BL BR
    6: [[1, 0, _G, 0, _G, 0], [0, 1, _G, 0, 0, _G]],  # FL FR FC LFE BL BR
    7: [[1, 0, _G, 0, 0.5, _G, 0], [0, 1, _G, 0, 0.5, 0, _G]],  # FL FR FC LFE BC SL SR
    8: [[1, 0, _G, 0, _G, 0, _G, 0], [0, 1, _G, 0, 0, _G, 0, _G]],  # FL FR FC LFE BL BR SL SR
}.items()}


def _label(source: str | Path | bytes, name: str | None) -> str:
    return name or (str(source) if not isinstance(source, bytes) else "audio bytes")


# The containers the product takes (libsndfile's names; WAVEX is WAV with a channel mask).
ACCEPTED_FORMATS = frozenset({"WAV", "WAVEX", "FLAC", "OGG", "MP3"})


@contextmanager
def _open(source: str | Path | bytes, label: str, limits: Limits) -> Iterator[tuple[sf.SoundFile, AudioHeader]]:
    """The open file and its header, after the encoded size and the header passed ``limits``."""
    if isinstance(source, bytes):
        if not source:
            raise audio_error(f"{label}: empty input")
        limits.check_size(len(source), label)
        opened: io.BytesIO | str = io.BytesIO(source)  # shares the bytes, no copy
    else:
        path = Path(source)
        if not path.is_file():
            raise audio_error(f"{label}: no such file")
        limits.check_size(path.stat().st_size, label)
        opened = str(path)
    try:
        f = sf.SoundFile(opened)
    except _ERRORS as exc:
        raise audio_error(f"{label}: not a readable audio file ({_short(exc)})") from None
    with f:
        if f.format not in ACCEPTED_FORMATS:  # libsndfile reads 26 containers; each is attack surface
            raise InvalidInput(f"{label}: {f.format} files are not accepted (wav, flac, ogg or mp3)")
        if f.frames >= SF_COUNT_MAX:  # libsndfile cannot read such a stream in parts either
            raise audio_error(f"{label}: the header does not give the length (a streamed file?); "
                               f"re-encode it with its length")
        header = AudioHeader(int(f.samplerate), int(f.channels), int(f.frames))
        limits.check_header(header, label)
        yield f, header


def probe(source: str | Path | bytes, name: str | None = None, limits: Limits = DEFAULT) -> AudioHeader:
    """Rate, channels and length from the header alone (no decoding), checked against ``limits``."""
    with _open(source, _label(source, name), limits) as (_, header):
        return header


def decode(source: str | Path | bytes, name: str | None = None, limits: Limits = DEFAULT) -> Audio:
    """Decode wav/flac/ogg/mp3 (:data:`ACCEPTED_FORMATS`; libsndfile's other containers are
    refused from the header) from a path or encoded bytes.

    The encoded size and the header are checked against ``limits`` before anything is decoded;
    the samples are then decoded block by block into one preallocated float32 ``[channels,
    samples]`` buffer (peak memory: the decoded song plus one block), with the NaN and silence
    checks computed per block. Raises ``InvalidInput`` for oversized, unreadable, non-audio,
    empty, non-finite or silent input, and for a header that does not give the length."""
    label = _label(source, name)
    with _open(source, label, limits) as (f, header):
        try:
            waveform, sumsq = _read(f, header.channels, header.frames, label)
        except InvalidInput:
            raise
        except _ERRORS as exc:
            raise audio_error(f"{label}: not a readable audio file ({_short(exc)})") from None
    if waveform.shape[1] < header.frames:  # a stream shorter than its header: the limits again
        limits.check_header(AudioHeader(header.sample_rate, header.channels, waveform.shape[1]), label)
    if float(np.sqrt(sumsq / waveform.size)) < SILENCE_RMS:
        raise audio_error(f"{label}: is silent (RMS below {SILENCE_RMS:g}); nothing to explain")
    mixed = header.channels if header.channels != waveform.shape[0] else 0
    return Audio(waveform, header.sample_rate, source_channels=mixed)


def _read(f: sf.SoundFile, channels: int, frames: int, label: str) -> tuple[np.ndarray, float]:
    """At most ``frames`` frames into one ``[channels, frames]`` buffer (3-8 channels mixed down to
    stereo block by block, so the buffer never holds more than two); (waveform, sum of squares)."""
    mix = DOWNMIX.get(channels)
    out = np.empty((decoded_channels(channels), frames), dtype=np.float32)
    block = np.empty((min(BLOCK_FRAMES, max(frames, 1)), channels), dtype=np.float32)
    n, sumsq = 0, 0.0
    while n < frames:
        part = f.read(out=block[:min(len(block), frames - n)])
        got = len(part)
        if got == 0:
            break  # shorter than its header said (a truncated file)
        if not np.isfinite(part).all():
            raise audio_error(f"{label}: contains NaN or infinite samples")
        decoded = part.T if mix is None else mix @ part.T
        sumsq += float(np.square(decoded, dtype=np.float64).sum())
        out[:, n:n + got] = decoded
        n += got
    return _shrink(out, n), sumsq


def _shrink(out: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` samples of every channel of ``out`` as a contiguous ``[channels, n]`` array,
    moved within the same buffer (no second copy of the song)."""
    channels, frames = out.shape
    if n == frames:
        return out
    flat = out.reshape(-1)
    for c in range(1, channels):  # channel 0 is already in place; the other one moves down
        flat[c * n:(c + 1) * n] = flat[c * frames:c * frames + n]  # numpy buffers overlapping moves
    return flat[:channels * n].reshape(channels, n)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    # libsndfile names an in-memory input by its Python repr ("Error opening <_io.BytesIO ...>: ")
    return re.sub(r"^Error opening <[^>]*>: ", "", text[-1]) if text else type(exc).__name__


def wav_bytes(waveform: np.ndarray, sample_rate: int) -> bytes:
    """Encode as 16-bit PCM WAV in memory."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.atleast_2d(waveform).T, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def flac_bytes(waveform: np.ndarray, sample_rate: int) -> bytes:
    """Encode as 16-bit FLAC in memory: the same samples as :func:`wav_bytes`, about half the size
    (a song-long stem)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.atleast_2d(waveform).T, -1.0, 1.0), sample_rate, subtype="PCM_16", format="FLAC")
    return buf.getvalue()
