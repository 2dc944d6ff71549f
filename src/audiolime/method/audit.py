"""Catalog audits: many explanations of a tag aggregated into a *reliance profile*, and the diff of
two profiles (two taggers, or two versions of one) -- pure aggregation, no model.

An audit explains a tag on ``W`` windows of each of ``N`` songs (the door runs them:
:mod:`audiolime.commands.audit`); each explanation is one :class:`AuditRecord` (the song, the window,
the tag and the surrogate weight of every component, stem-major: component ``s * segments + j`` is
stem ``s`` in segment ``j``). From the records of one tagger and one tag, :func:`profile`:

* per stem (and per segment position in the window): the share of explanations whose **top-1
  component** is on that stem (that position), with a Wilson interval (explanations are the trials);
* per stem (position): the mean **share of positive weight** it holds (an explanation with no
  positive weight holds none and is left out of these means), with the Wilson interval of that mean
  taken as a rate over the explanations (as the evaluation's random rates, an approximation);
* the **majority stem**: the one most often top-1 (ties: the larger positive share);
* per song: the mean of its explanations' positive shares and its dominant stem; **outliers** are the
  songs whose dominant stem is not the majority stem, most deviant first (deviation: the total
  variation distance between the song's stem shares and the profile's).

The windows of one song are not independent trials; the profile counts songs apart (``songs``) and
the per-song table lets a reader weigh them.

:func:`diff` compares two profiles of the same tags: per tag, the **shift** is the total variation
distance between the two taggers' positive-weight shares per stem (0: the same reliance, 1: entirely
different stems); per song, the **change** is that distance between the song's shares under each.
:func:`regressions` lists the tags whose shift exceeds a threshold (a release's explanation
regression test). numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from audiolime.errors import InvalidInput
from audiolime.method import stats

OUTLIERS = 10  # songs listed as outliers per tag (the most deviant)
CHANGED = 10  # songs listed per tag in a diff (the most changed)


def wilson(successes: float, n: int) -> tuple[float, float]:
    """The 95 % Wilson interval (:func:`audiolime.method.stats.wilson`), to 4 places as the documents hold it."""
    lo, hi = stats.wilson(successes, n)
    return (round(lo, 4), round(hi, 4))


@dataclass(frozen=True)
class AuditRecord:
    """One explanation of one tag on one window of one song by one tagger. ``weights``: every
    component's surrogate weight, stem-major (``stems`` x ``segments``). ``clip``: where the top-1
    component was written to listen to (relative to the audit's directory; empty: not written)."""

    tagger: str
    song: str
    window: int
    start_s: float
    end_s: float
    tag: str
    probability: float  # the tagger's, of the tag, on the window
    song_probability: float  # the song's (mean over its scanned windows)
    stems: tuple[str, ...]
    segments: int
    weights: tuple[float, ...]
    surrogate_r2: float = 0.0
    clip: str = ""

    def __post_init__(self) -> None:
        if self.segments < 1 or len(self.weights) != len(self.stems) * self.segments or not self.stems:
            raise InvalidInput(f"audit record of {self.song!r}: {len(self.weights)} weights for {len(self.stems)} "
                               f"stems x {self.segments} segments")

    @property
    def matrix(self) -> np.ndarray:
        """``[stems, segments]`` weights."""
        return np.asarray(self.weights, np.float64).reshape(len(self.stems), self.segments)

    @property
    def top(self) -> tuple[int, int] | None:
        """(stem index, segment) of the top-1 component; None when no weight is positive."""
        m = self.matrix
        flat = int(np.argmax(m))
        if m.reshape(-1)[flat] <= 0:
            return None
        s, j = divmod(flat, self.segments)
        return s, j

    def positive_share(self) -> np.ndarray | None:
        """``[stems, segments]`` shares of the positive weight (sum 1); None without positive weight."""
        pos = np.clip(self.matrix, 0, None)
        total = pos.sum()
        return pos / total if total > 0 else None

    @property
    def top_component(self) -> str:
        """The top-1 component as a listener finds it: ``vocals[2] 31.00-31.50 s``."""
        if self.top is None:
            return "none (no positive weight)"
        s, j = self.top
        seg = (self.end_s - self.start_s) / self.segments
        a = self.start_s + j * seg
        return f"{self.stems[s]}[{j}] {a:.2f}\u2013{a + seg:.2f} s"


# -- the profile -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reliance:
    """One stem (or segment position): how often it holds the top-1 component (``top1``/``n``, the
    share and its Wilson interval) and its mean share of positive weight (with an interval)."""

    name: str
    top1: int
    top1_share: float
    top1_ci: tuple[float, float]
    weight_share: float
    weight_ci: tuple[float, float]


@dataclass(frozen=True)
class Listen:
    """Where to listen: a song's window and its top-1 component (and its clip, if written)."""

    song: str
    window: int
    start_s: float
    end_s: float
    probability: float
    top_component: str
    clip: str


@dataclass(frozen=True)
class SongReliance:
    """One song under one tag: its explanations' mean positive share per stem, its dominant stem,
    and its deviation from the profile (total variation distance of the stem shares)."""

    song: str
    explanations: int
    song_probability: float
    dominant: str  # "" when no explanation of the song has positive weight
    shares: dict[str, float]
    deviation: float
    windows: tuple[Listen, ...]


@dataclass(frozen=True)
class TagProfile:
    """The reliance profile of one tag under one tagger (see the module docstring). ``n``:
    explanations; ``positive``: those with some positive weight (the weight shares' trials)."""

    tagger: str
    tag: str
    n: int
    positive: int
    songs: int
    stems: tuple[Reliance, ...]
    positions: tuple[Reliance, ...]  # segment positions in the window, 0 = its first segment
    grid: dict[str, tuple[float, ...]]  # stem -> mean positive share per position
    majority: str
    song_table: tuple[SongReliance, ...]
    outliers: tuple[str, ...]  # songs whose dominant stem is not the majority, most deviant first

    def share(self, stem: str) -> float:
        return next(r.weight_share for r in self.stems if r.name == stem)


def _reliance(name: str, top1: int, n: int, shares: np.ndarray) -> Reliance:
    m = float(shares.mean()) if len(shares) else 0.0
    return Reliance(name, top1, round(top1 / n, 4), wilson(top1, n), round(m, 4),
                    wilson(m * len(shares), len(shares)) if len(shares) else (0.0, 1.0))


def tv(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation distance of two share vectors."""
    return float(0.5 * np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).sum())


def profile(records: Sequence[AuditRecord], outliers: int = OUTLIERS) -> TagProfile:
    """The reliance profile of ``records`` (one tagger, one tag, the same stems and segments)."""
    if not records:
        raise InvalidInput("no explanations to aggregate")
    first = records[0]
    stems, segs = first.stems, first.segments
    for r in records:
        if (r.tagger, r.tag, r.stems, r.segments) != (first.tagger, first.tag, stems, segs):
            raise InvalidInput(f"a profile aggregates one tagger, tag, stems and segments: {r.song!r} window "
                               f"{r.window} is {r.tagger}/{r.tag}/{'+'.join(r.stems)}x{r.segments}, not "
                               f"{first.tagger}/{first.tag}/{'+'.join(stems)}x{segs}")
    n = len(records)
    tops = [r.top for r in records]
    shares = [s for s in (r.positive_share() for r in records) if s is not None]
    grid = np.mean(shares, axis=0) if shares else np.zeros((len(stems), segs))
    by_stem = np.array([s.sum(axis=1) for s in shares]).reshape(len(shares), len(stems))
    by_pos = np.array([s.sum(axis=0) for s in shares]).reshape(len(shares), segs)
    stem_rel = tuple(_reliance(name, sum(t is not None and t[0] == i for t in tops), n, by_stem[:, i])
                     for i, name in enumerate(stems))
    pos_rel = tuple(_reliance(str(j), sum(t is not None and t[1] == j for t in tops), n, by_pos[:, j])
                    for j in range(segs))
    majority = max(stem_rel, key=lambda r: (r.top1, r.weight_share)).name
    mean_stems = by_stem.mean(axis=0) if len(shares) else np.zeros(len(stems))
    table = []
    for song, recs in _by_song(records).items():
        song_shares = [s.sum(axis=1) for s in (r.positive_share() for r in recs) if s is not None]
        v = np.mean(song_shares, axis=0) if song_shares else np.zeros(len(stems))
        dominant = stems[int(np.argmax(v))] if song_shares else ""
        listen = tuple(Listen(r.song, r.window, r.start_s, r.end_s, round(r.probability, 6), r.top_component, r.clip)
                       for r in recs)
        table.append(SongReliance(song, len(recs), round(recs[0].song_probability, 6), dominant,
                                  {s: round(float(x), 4) for s, x in zip(stems, v)},
                                  round(tv(v, mean_stems), 4) if song_shares else 1.0, listen))
    table.sort(key=lambda s: (-s.deviation, s.song))
    odd = tuple(s.song for s in table if s.dominant != majority)[:outliers]
    return TagProfile(first.tagger, first.tag, n, len(shares), len(table), stem_rel, pos_rel,
                      {s: tuple(round(float(x), 4) for x in grid[i]) for i, s in enumerate(stems)}, majority,
                      tuple(table), odd)


def _by_song(records: Iterable[AuditRecord]) -> dict[str, list[AuditRecord]]:
    out: dict[str, list[AuditRecord]] = {}
    for r in sorted(records, key=lambda r: (r.song, r.window)):
        out.setdefault(r.song, []).append(r)
    return out


def profiles(records: Iterable[AuditRecord]) -> dict[tuple[str, str], TagProfile]:
    """One profile per (tagger, tag) among ``records``, in first-seen order."""
    groups: dict[tuple[str, str], list[AuditRecord]] = {}
    for r in records:
        groups.setdefault((r.tagger, r.tag), []).append(r)
    return {k: profile(v) for k, v in groups.items()}


# -- the diff --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StemShift:
    stem: str
    weight_share_a: float
    weight_share_b: float
    top1_share_a: float
    top1_share_b: float
    separated: bool  # the two top-1 intervals do not overlap


@dataclass(frozen=True)
class SongChange:
    """One song under both taggers: its stem shares in each, their distance, where to listen."""

    song: str
    change: float
    dominant_a: str
    dominant_b: str
    shares_a: dict[str, float]
    shares_b: dict[str, float]
    windows_a: tuple[Listen, ...]
    windows_b: tuple[Listen, ...]


@dataclass(frozen=True)
class TagShift:
    """One tag under taggers ``a`` and ``b``: ``shift`` is the distance between their stem shares,
    ``majority_a``/``_b`` their majority stems, ``songs`` the songs both explained, most changed first."""

    tag: str
    n_a: int
    n_b: int
    shift: float
    majority_a: str
    majority_b: str
    stems: tuple[StemShift, ...]
    changed: tuple[SongChange, ...]
    songs: int
    mean_change: float


def diff_profiles(a: TagProfile, b: TagProfile, changed: int = CHANGED) -> TagShift:
    """How the tag's reliance moved from ``a`` to ``b`` (the same tag and stems)."""
    if a.tag != b.tag:
        raise InvalidInput(f"a diff compares one tag: {a.tag!r} and {b.tag!r}")
    if [r.name for r in a.stems] != [r.name for r in b.stems]:
        raise InvalidInput(f"{a.tag!r}: the two audits separate into different stems "
                           f"({'+'.join(r.name for r in a.stems)} and {'+'.join(r.name for r in b.stems)})")
    va = np.array([r.weight_share for r in a.stems])
    vb = np.array([r.weight_share for r in b.stems])
    stems = tuple(StemShift(ra.name, ra.weight_share, rb.weight_share, ra.top1_share, rb.top1_share,
                            ra.top1_ci[1] < rb.top1_ci[0] or rb.top1_ci[1] < ra.top1_ci[0])
                  for ra, rb in zip(a.stems, b.stems))
    sa, sb = {s.song: s for s in a.song_table}, {s.song: s for s in b.song_table}
    both = []
    for song in sorted(set(sa) & set(sb)):
        x, y = sa[song], sb[song]
        d = tv(np.array(list(x.shares.values())), np.array(list(y.shares.values()))) \
            if x.dominant and y.dominant else 1.0 if (x.dominant or y.dominant) else 0.0
        both.append(SongChange(song, round(d, 4), x.dominant, y.dominant, x.shares, y.shares, x.windows, y.windows))
    both.sort(key=lambda c: (-c.change, c.song))
    mean = round(float(np.mean([c.change for c in both])), 4) if both else 0.0
    return TagShift(a.tag, a.n, b.n, round(tv(va, vb), 4), a.majority, b.majority, stems, tuple(both[:changed]),
                    len(both), mean)


def diff(a: dict[str, TagProfile], b: dict[str, TagProfile]) -> tuple[TagShift, ...]:
    """Per tag both audits profile (by tag name), most shifted first."""
    shifts = [diff_profiles(a[t], b[t]) for t in a if t in b]
    return tuple(sorted(shifts, key=lambda s: (-s.shift, s.tag)))


def regressions(shifts: Iterable[TagShift], max_shift: float) -> list[TagShift]:
    """The tags whose reliance shifted by more than ``max_shift`` (0..1)."""
    if not (math.isfinite(max_shift) and 0 <= max_shift <= 1):
        raise InvalidInput(f"max_shift must be between 0 and 1, got {max_shift:g}", field="max_shift")
    return [s for s in shifts if s.shift > max_shift]


# -- which windows -----------------------------------------------------------------------------------
def pick_windows(starts: np.ndarray, scores: np.ndarray, window: int, count: int) -> list[int]:
    """Up to ``count`` window starts (samples) among the scanned ``starts``, highest ``scores`` first
    (the audited tags' probability there), none overlapping another; returned in time order. With
    ``count`` 1 this is the window ``audiolime explain`` picks."""
    chosen: list[int] = []
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        s = int(starts[i])
        if all(abs(s - c) >= window for c in chosen):
            chosen.append(s)
            if len(chosen) == count:
                break
    return sorted(chosen)
