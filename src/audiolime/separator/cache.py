"""Content-addressed stem cache in the object store.

Layout: ``stems/<model>/<audio_sha256>/<stem>.flac`` (FLAC, 24-bit, 44.1 kHz, the input's channel
count) plus ``stems/<model>/<audio_sha256>/manifest.json``; the stems of one window only (a Separate
call with a window, when the whole recording is not cached) are an entry of their own under
``stems/<model>/<audio_sha256>/window-<start>-<end>/`` (the window in the input's sample frames),
each stem recording where it begins (``start_sample``). The manifest is written LAST: an entry
exists only when its manifest does, so a crash between stems never leaves a half entry visible
(a later miss simply rewrites the stems). The manifest also records which weights made the stems
(``weights``, a fingerprint of the checkpoint): after a model is replaced under its name (e.g. a
4stems installed from another archive), its old entries are misses and are rewritten.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import soundfile as sf
from botocore.exceptions import BotoCoreError

from audiolime.errors import NotFound, Unavailable
from audiolime.store import ObjectStore

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STEM_FORMAT = "FLAC"
STEM_SUBTYPE = "PCM_24"


@dataclass(frozen=True)
class StemEntry:
    name: str
    key: str
    sample_rate: int
    channels: int
    num_samples: int
    start_sample: int = 0  # where the stored stem begins in the recording (> 0: a window's stems)


@dataclass(frozen=True)
class Manifest:
    """A complete cache entry: the stems of one decoded recording under one model."""

    model: str
    audio_sha256: str
    stems: list[StemEntry]
    residual_rel_rms: float
    duration_s: float
    timings_s: dict[str, float] = field(default_factory=dict)
    weights: str = ""  # fingerprint of the separator's checkpoint ("" for entries written before it)

    def to_json(self) -> bytes:
        return json.dumps({"version": 1, **asdict(self)}, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        d = json.loads(data)
        return cls(model=d["model"], audio_sha256=d["audio_sha256"],
                   stems=[StemEntry(**s) for s in d["stems"]], residual_rel_rms=float(d["residual_rel_rms"]),
                   duration_s=float(d["duration_s"]), timings_s=dict(d.get("timings_s", {})),
                   weights=str(d.get("weights", "")))


Window = tuple[int, int]  # [start, end) in sample frames of the decoded input


def entry_prefix(model: str, audio_sha256: str, window: Window | None = None) -> str:
    """Where an entry lives: the whole recording's, or (``window``) the stems of one window."""
    base = f"stems/{model}/{audio_sha256}"
    return base if window is None else f"{base}/window-{window[0]}-{window[1]}"


class StemWriter:
    """Streams one stem into an in-memory FLAC (24-bit) chunk by chunk, so the float stem
    never has to exist whole in memory."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.num_samples = 0
        self._buf = io.BytesIO()
        self._file = sf.SoundFile(self._buf, "w", samplerate=sample_rate, channels=channels,
                                  subtype=STEM_SUBTYPE, format=STEM_FORMAT)

    def write(self, chunk: np.ndarray) -> None:
        """``chunk`` float ``[channels, samples]``; clipped to the 24-bit range."""
        self._file.write(np.clip(chunk.T, -1.0, 1.0))
        self.num_samples += int(chunk.shape[1])

    def finish(self) -> bytes:
        self._file.close()
        return self._buf.getvalue()


@contextmanager
def reachable_store() -> Iterator[None]:
    """An object store that cannot be reached is UNAVAILABLE (retryable), not an internal error."""
    try:
        yield
    except BotoCoreError as exc:  # connection refused/timed out, not an S3 error response
        raise Unavailable(f"object store unreachable: {exc}") from None


class StemCache:
    """Looks up and stores separations in an :class:`ObjectStore`."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def lookup(self, model: str, audio_sha256: str, weights: str = "", window: Window | None = None
               ) -> Manifest | None:
        """The complete entry made with ``weights``, or None: a missing or unreadable manifest, one
        made with other weights, or a stem that is gone (e.g. expired by a bucket lifecycle rule),
        counts as a miss and is simply rewritten."""
        key = f"{entry_prefix(model, audio_sha256, window)}/{MANIFEST}"
        try:
            with reachable_store():
                data = self.store.get(key)
        except NotFound:
            return None
        try:
            manifest = Manifest.from_json(data)
        except (ValueError, KeyError, TypeError):
            log.warning("corrupt cache manifest, treating as a miss", extra={"key": key})
            return None
        if manifest.weights != weights:
            log.info("cache entry made with other weights, treating as a miss",
                     extra={"key": key, "weights": weights, "entry_weights": manifest.weights})
            return None
        with reachable_store():
            complete = all(self.store.exists(s.key) for s in manifest.stems)
        if not complete:
            log.warning("cache entry lost a stem, treating as a miss", extra={"key": key})
            return None
        return manifest

    def stem_key(self, model: str, audio_sha256: str, stem: str, window: Window | None = None) -> str:
        return f"{entry_prefix(model, audio_sha256, window)}/{stem}.flac"

    def commit(self, model: str, audio_sha256: str, stems: dict[str, StemWriter], residual_rel_rms: float,
               duration_s: float, timings_s: dict[str, float], weights: str = "", window: Window | None = None,
               start_sample: int = 0) -> Manifest:
        """Upload every stem, then the manifest (which makes the entry visible). ``window``: the
        entry holds that window's stems, beginning at ``start_sample`` of the recording."""
        entries = []
        with reachable_store():
            for name, writer in stems.items():
                key = self.stem_key(model, audio_sha256, name, window)
                self.store.put(key, writer.finish(), "audio/flac")
                entries.append(StemEntry(name, key, writer.sample_rate, writer.channels, writer.num_samples,
                                         start_sample))
            manifest = Manifest(model, audio_sha256, entries, residual_rel_rms, duration_s, timings_s, weights)
            self.store.put(f"{entry_prefix(model, audio_sha256, window)}/{MANIFEST}", manifest.to_json(),
                           "application/json")
        return manifest

    def uri(self, key: str) -> str:
        return self.store.uri(key)
