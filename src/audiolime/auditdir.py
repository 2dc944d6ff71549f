"""An audit's directory (``audiolime audit --out DIR``): the songs it audits (files, directories
searched), ``audit-config.json`` (the settings every record shares, :func:`~audiolime.method.catalog.config_key`:
an audit with other settings in the same directory is refused, records are never mixed),
``audit.jsonl`` (the resumable checkpoint: each finished window's records appended and fsynced; a
torn last line from a killed run is skipped), ``clips/`` (each explanation's top-1 component as WAV)
and, for an audit through the explainer service (``--server``), ``jobs.jsonl``: the job journal,
one line per job submitted (its id, written and fsynced before the audit waits for it) or failed,
so that a killed audit, run again, re-attaches to its jobs instead of submitting them again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from audiolime import jsonl
from audiolime.errors import InvalidInput
from audiolime.method.audit import AuditRecord
from audiolime.method.catalog import Key
from audiolime.method.limits import AUDIO_SUFFIXES, MAX_AUDIT_SONGS

CHECKPOINT = "audit.jsonl"
CONFIG = "audit-config.json"
JOURNAL = "jobs.jsonl"


def find_songs(paths: Sequence[Path], limit: int = MAX_AUDIT_SONGS) -> list[Path]:
    """The audio files among ``paths``: files as given, directories searched (recursively, sorted)
    for audio files; each once, in order. Stops counting past ``limit`` (a whole disk is not listed
    to refuse it): the result then has ``limit + 1`` entries."""
    out: dict[Path, None] = {}
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file():
                    out.setdefault(f.resolve())
                    if len(out) > limit:
                        return list(out)
        elif p.is_file():
            out.setdefault(p.resolve())
        else:
            raise InvalidInput(f"{p}: no such file or directory", field="songs")
        if len(out) > limit:
            break
    return list(out)


def check_config(out: Path, key: dict, write: bool = True) -> None:
    """Refuse an ``out`` whose ``audit-config.json`` holds other settings; write it into a new one
    (``write``: the door checks first, and writes once the request is known good, so that a refused
    request leaves nothing behind)."""
    path = out / CONFIG
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            raise InvalidInput(f"{path}: not an audit configuration; use another --out") from None
        diff = [f"{k} {old.get(k)!r} != {v!r}" for k, v in key.items() if old.get(k) != v]
        if diff:
            raise InvalidInput(f"{out} holds an audit with other settings ({'; '.join(diff)}); use another --out")
    elif write:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(key, indent=2) + "\n")


def record_from_json(d: dict) -> AuditRecord:
    return AuditRecord(str(d["tagger"]), str(d["song"]), int(d["window"]), float(d["start_s"]), float(d["end_s"]),
                       str(d["tag"]), float(d["probability"]), float(d["song_probability"]),
                       tuple(str(s) for s in d["stems"]), int(d["segments"]), tuple(float(w) for w in d["weights"]),
                       float(d.get("surrogate_r2", 0.0)), str(d.get("clip", "")))


def load_records(out: Path) -> dict[Key, AuditRecord]:
    """The checkpoint's records by (tagger, song, window, tag); a torn or unreadable line (an
    interrupted run) is skipped, a later record of the same key wins."""
    records: dict[Key, AuditRecord] = {}
    for d in jsonl.read(out / CHECKPOINT):
        try:
            r = record_from_json(d)
        except (ValueError, KeyError, TypeError, InvalidInput):
            continue
        records[(r.tagger, r.song, r.window, r.tag)] = r
    return records


def append_records(out: Path, records: Iterable[AuditRecord]) -> None:
    """Append (and fsync) one window's records, starting a fresh line after a torn one."""
    jsonl.append(out / CHECKPOINT, [asdict(r) for r in records])


# -- the job journal (--server) ------------------------------------------------------------------------
JobKey = tuple[str, str, int]  # (tagger as asked: NAME or NAME@VERSION, song, window)


@dataclass(frozen=True)
class JobEntry:
    """One job of a window: ``job_id`` on the explainer; ``error`` empty while it is submitted (or
    succeeded: its records are then in the checkpoint), else why it failed (a rerun submits the
    window again). ``start_s``: the window start asked for (None: the explainer's choice)."""

    tagger: str
    song: str
    window: int
    start_s: float | None
    job_id: str
    error: str = ""

    @property
    def key(self) -> JobKey:
        return (self.tagger, self.song, self.window)


def load_jobs(out: Path) -> dict[JobKey, JobEntry]:
    """The journal's latest entry per window; a torn or unreadable line (a killed run) is skipped."""
    jobs: dict[JobKey, JobEntry] = {}
    for d in jsonl.read(out / JOURNAL):
        try:
            start = d["start_s"]
            e = JobEntry(str(d["tagger"]), str(d["song"]), int(d["window"]),
                         None if start is None else float(start), str(d["job_id"]), str(d.get("error", "")))
        except (ValueError, KeyError, TypeError):
            continue
        if e.job_id:
            jobs[e.key] = e
    return jobs


def append_job(out: Path, entry: JobEntry) -> None:
    """Journal one job (fsynced before the audit waits for it)."""
    jsonl.append(out / JOURNAL, [asdict(entry)])


def clip_name(tagger: str, song: str, window: int, tag: str) -> str:
    """A clip's file name, unique per (tagger, song, window, tag) and safe on any file system."""
    def safe(s: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", s)[:60]

    h = hashlib.sha1(song.encode()).hexdigest()[:8]
    return f"clips/{safe(tagger)}/{safe(Path(song).stem)}-{h}-w{window}-{safe(tag)}.wav"


class Clips:
    """Names and writes clips under ``out`` (16-bit WAV at the input's rate)."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def write(self, name: str, wave: np.ndarray, rate: int) -> None:
        from audiolime.audio import wav_bytes

        path = self.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(wav_bytes(wave, rate))
