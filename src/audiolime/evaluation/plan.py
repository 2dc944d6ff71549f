"""Which items an evaluation run has to compute: the songs of the audio directory, how many
analysis windows each (song, tagger) gets and where they lie, each item's seed, and how many
windows go into one tagger call. Reads file headers and model metadata only (no decoding, no
TensorFlow).

Windows are placed with *evenly spaced centres* (centre i at (i + 1/2) / W of the song, the window
clamped inside the song): independent of the tagger's confidence (top-probability windows would
bias the check towards easy windows), and windows of different taggers share centres, so a short
(musicnn, 3 s) window usually lies inside a long (FCN, 29 s) one.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

from audiolime.errors import InvalidInput
from audiolime.evaluation.config import EvalConfig

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
# Windows per tagger call are capped at this many samples in total: 64 FCN windows (29 s) need
# ~7 GB in the FCN graph (OOM-killed on an evaluation machine); 16 need ~2 GB. musicnn (3 s)
# keeps the full --batch-size.
MAX_BATCH_SAMPLES = 16 * 464_000

Key = tuple[str, str, int]  # (song file name, tagger, window index)


def find_songs(audio_dir: Path) -> list[Path]:
    if not audio_dir.is_dir():
        raise InvalidInput(f"--audio {audio_dir} is not a directory")
    songs = sorted(p for p in audio_dir.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not songs:
        raise InvalidInput(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {audio_dir}")
    return songs


def song_seconds(path: Path) -> float:
    """Duration from the file header (no decoding)."""
    import soundfile as sf

    try:
        return float(sf.info(str(path)).duration)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise InvalidInput(f"{path.name}: not a readable audio file ({str(exc).strip().splitlines()[-1:]})") from None


def tagger_window_seconds(serving_dir: Path, name: str) -> float | None:
    """The tagger's analysis window in seconds, from its export metadata (None if unknown)."""
    versions = sorted((v for v in (serving_dir / name).glob("*") if v.name.isdigit()), key=lambda v: int(v.name))
    for v in reversed(versions):
        meta = v / "assets" / "audiolime.json"
        if meta.is_file():
            d = json.loads(meta.read_text())
            return d["window_samples"] / d["sample_rate"]
    return None


def windows_for(requested: int, song_s: float, window_s: float | None) -> int:
    """At most ``requested`` windows, and no more than ``ceil(song / window)``: more windows
    than that on a short song would repeat (nearly or exactly, for songs shorter than the
    window) the same audio and inflate n without adding evidence."""
    if not window_s:
        return requested
    return max(1, min(requested, math.ceil(song_s / window_s - 1e-6)))


def window_starts(num_samples: int, window: int, count: int) -> list[int]:
    """``count`` windows with evenly spaced centres, clamped inside ``[0, num_samples)``."""
    out = []
    for i in range(count):
        centre = (i + 0.5) * num_samples / count
        out.append(int(min(max(round(centre - window / 2), 0), max(num_samples - window, 0))))
    return out


def window_spans(tagger_samples: int, window_samples: int, tagger_rate: int, count: int, file_rate: int,
                 file_samples: int) -> list[tuple[int, int, int]]:
    """The ``count`` windows of one song for one tagger: ``(start, a, b)`` with ``start`` in the
    tagger's resampled mono signal (``tagger_samples`` long) and ``[a, b)`` the same window in
    the decoded file (at ``file_rate``, ``file_samples`` long)."""
    spans = []
    for start in window_starts(tagger_samples, window_samples, count):
        a = int(round(start / tagger_rate * file_rate))
        b = min(a + int(round(window_samples / tagger_rate * file_rate)), file_samples)
        spans.append((start, a, b))
    return spans


def tagger_batch(batch_size: int, window_samples: int) -> int:
    """Windows per tagger call: ``batch_size``, capped by :data:`MAX_BATCH_SAMPLES`."""
    return max(1, min(batch_size, MAX_BATCH_SAMPLES // max(window_samples, 1)))


def item_seed(seed: int, song: str, tagger: str, window: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(f"{song}|{tagger}|{window}".encode())) % (2 ** 31)


@dataclass(frozen=True)
class Plan:
    """Every item of a run, in output order: songs x taggers x that pair's windows."""

    songs: list[Path]
    taggers: tuple[str, ...]
    windows: dict[tuple[str, str], int]  # (song name, tagger) -> number of windows

    @property
    def keys(self) -> list[Key]:
        return [(s.name, t, w) for s in self.songs for t in self.taggers for w in range(self.windows[(s.name, t)])]

    def pending(self, done: dict, methods: tuple[str, ...]) -> list[tuple[Path, list[tuple[str, int, list[str]]]]]:
        """Per song with work left: its (tagger, window, methods not yet in ``done``)."""
        out = []
        for s in self.songs:
            todo = []
            for t in self.taggers:
                for w in range(self.windows[(s.name, t)]):
                    missing = [m for m in methods if (s.name, t, w, m) not in done]
                    if missing:
                        todo.append((t, w, missing))
            if todo:
                out.append((s, todo))
        return out


def plan(cfg: EvalConfig, songs: list[Path], serving_dir: Path) -> Plan:
    """The window counts of ``songs`` (from file headers and tagger metadata)."""
    win_s = {t: tagger_window_seconds(serving_dir, t) for t in cfg.taggers}
    windows = {(s.name, t): windows_for(cfg.windows(t), song_seconds(s), win_s[t]) for s in songs for t in cfg.taggers}
    return Plan(songs, cfg.taggers, windows)
