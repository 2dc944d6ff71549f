"""What the song timeline's listening report (``timeline.html``) shows, computed from a
:class:`~audiolime.explanation.timeline.TimelineDocument` alone (pure Python, tested without a browser).

One lane per stem: the explained range drawn as one SVG of at most :data:`MAX_COLUMNS` columns,
each coloured by the stem's song-level weight for the tag there (warm: raises it, cool: lowers it).
Up to :data:`MAX_COLUMNS` window segments a column is one segment; past that (a 10-minute song of
3 s windows x 6 segments is 1200) the range is cut into :data:`MAX_COLUMNS` equal columns and a
column is the *sum* of the song-level weights of the segments whose middle falls in it (song-level
weights add up: the sum is what that stretch of the stem contributes), so the page stays a bounded
number of elements whatever the song's length. The top moments are marked in their stem's lane and
listed with their clips; each lane plays its stem (the range's audio, aligned with the lane), a
column plays that stretch of it.

The document is untrusted input: file references go through :func:`~audiolime.report.view.audio_ref`
and numbers through :func:`_number`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import PurePosixPath

from audiolime.explanation.timeline import StemTimelineRecord, TimelineDocument
from audiolime.report.view import Player, _ticks, audio_ref

MAX_COLUMNS = 240  # per lane: 200 windows x 6 segments aggregate to this many SVG rects
WIDTH = 1000.0  # the lanes' SVG viewBox width


def _number(value: object, default: float = 0.0) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


@dataclass(frozen=True)
class Column:
    """One drawn column of a lane: ``[start_s, end_s)`` of the song, its (summed) weight."""

    start_s: float
    end_s: float
    weight: float
    segments: int  # window segments it sums
    x: float  # viewBox units
    width: float
    strength: float  # |weight| / the largest |weight| of any lane's column
    sign: str  # "pos", "neg" or "zero"


@dataclass(frozen=True)
class Marker:
    rank: int
    x: float
    width: float


@dataclass(frozen=True)
class Lane:
    id: str
    stem: str
    share: float  # of the positive song-level weight
    peak: str  # where it peaks, one line
    columns: tuple[Column, ...]
    markers: tuple[Marker, ...]
    player: Player | None


@dataclass(frozen=True)
class MomentView:
    rank: int
    stem: str
    window: int
    segment: int
    start_s: float
    end_s: float
    weight: float
    player: Player | None
    lane: str | None = None  # the id of its stem's lane
    column: int = 0  # the lane's column holding it


@dataclass(frozen=True)
class TimelineView:
    title: str
    song: str
    tag: str
    facts: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...]
    verdict: str
    start_s: float
    end_s: float
    aggregated: bool  # columns sum several window segments
    segments_per_column: float
    max_weight: float
    lanes: tuple[Lane, ...]
    moments: tuple[MomentView, ...]
    mix: Player | None
    ticks: tuple[tuple[float, str], ...]  # (% of the range, label)
    sha256: str

    @property
    def players(self) -> tuple[Player, ...]:
        return ((self.mix,) if self.mix else ()) + tuple(x.player for x in self.lanes if x.player) + \
            tuple(m.player for m in self.moments if m.player)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def _columns(stem: StemTimelineRecord, start: float, end: float, bins: int | None) -> list[tuple[float, float, float, int]]:
    """(start, end, weight, segments) per column: the stem's points, or ``bins`` equal columns of
    summed weights (empty ones left out)."""
    points = [(_number(p.start_s), _number(p.end_s), _number(p.weight)) for p in stem.timeline]
    if bins is None:
        return [(a, b, w, 1) for a, b, w in points]
    span = (end - start) / bins
    sums, counts = [0.0] * bins, [0] * bins
    for a, b, w in points:
        i = min(max(int(((a + b) / 2 - start) / span), 0), bins - 1)
        sums[i] += w
        counts[i] += 1
    return [(start + i * span, start + (i + 1) * span, sums[i], counts[i]) for i in range(bins) if counts[i]]


def build_timeline(doc: TimelineDocument) -> TimelineView:
    """Everything ``timeline.html`` shows, from the document alone."""
    a = doc.audio
    song = PurePosixPath(a.path.replace("\\", "/")).name or a.path
    start, end = _number(a.start_s), _number(a.end_s)
    end = end if end > start else start + 1.0
    dur = end - start
    most = max((len(s.timeline) for s in doc.stems), default=0)
    bins = MAX_COLUMNS if most > MAX_COLUMNS else None
    raw = [_columns(s, start, end, bins) for s in doc.stems]
    max_w = max((abs(w) for cols in raw for _, _, w, _ in cols), default=0.0) or 1.0

    def x_of(t: float) -> float:
        return round(WIDTH * min(max((t - start) / dur, 0.0), 1.0), 2)

    lanes = []
    for i, (s, cols) in enumerate(zip(doc.stems, raw)):
        columns = tuple(Column(round(c0, 4), round(c1, 4), w, n, x_of(c0), max(round(x_of(c1) - x_of(c0), 2), 0.5),
                               round(min(abs(w) / max_w, 1.0), 3), "pos" if w > 0 else "neg" if w < 0 else "zero")
                        for c0, c1, w, n in cols)
        markers = tuple(Marker(m.rank, x_of(_number(m.start_s)),
                               max(round(x_of(_number(m.end_s)) - x_of(_number(m.start_s)), 2), 2.0))
                        for m in doc.top_moments if m.stem == s.name)
        src = audio_ref(s.file)
        lanes.append(Lane(f"lane-{i}", s.name, _number(s.positive_share),
                          f"most at {_number(s.peak_start_s):.2f}\u2013{_number(s.peak_end_s):.2f} s", columns, markers,
                          Player(f"a-stem-{i}", f"{s.name} over {start:.2f}\u2013{end:.2f} s", src) if src else None))
    moments = []
    for m in doc.top_moments:
        src = audio_ref(m.file)
        label = f"moment {m.rank}: {m.stem} {_number(m.start_s):.2f}\u2013{_number(m.end_s):.2f} s"
        lane = next((x for x in lanes if x.stem == m.stem), None)
        mid = (_number(m.start_s) + _number(m.end_s)) / 2
        column = next((j for j, c in enumerate(lane.columns) if c.start_s <= mid < c.end_s), 0) if lane else 0
        moments.append(MomentView(m.rank, m.stem, m.window, m.segment, _number(m.start_s), _number(m.end_s),
                                  _number(m.weight), Player(f"a-moment-{m.rank}", label, src) if src else None,
                                  lane.id if lane else None, column))
    mix_src = audio_ref(a.mix_file)
    n_windows = len(doc.windows)
    window_s = doc.model.window_samples / doc.model.sample_rate if doc.model.sample_rate else 0.0
    f = doc.faithfulness
    facts = (
        ("Song", f"{a.path} ({_number(a.duration_s):.1f} s, {a.sample_rate} Hz, {a.channels} ch)"),
        ("Range", f"{start:.2f}\u2013{end:.2f} s ({dur:.1f} s)"),
        ("Windows", f"{n_windows} of {window_s:g} s, {doc.segments} segments each"),
        ("Tagger", f"{doc.model.name} version {doc.model.version}"),
        ("Separator", f"{doc.separator.model} ({', '.join(doc.separator.stems)})"),
        ("Song probability", f"p({doc.tag}) {_number(doc.song.probability):.3f} (the mean of the windows')"),
        ("Components", f"{doc.num_components}: {n_windows} windows \u00d7 {len(doc.stems)} stems \u00d7 "
                       f"{doc.segments} segments"),
        ("Cost", f"{doc.cost.tagger_calls} tagger windows ({_number(doc.cost.ratio):.2f} \u00d7 the masks)"),
        ("Seed", str(doc.seed)),
    )
    verdict = (f"{f.verdict.summary.rstrip('.')}. With only the top {f.top_k} moments p({doc.tag}) is "
               f"{_number(f.keep_probability):.3f}, without them {_number(f.drop_probability):.3f}, with everything "
               f"{_number(f.original_probability):.3f}.")
    per = most / MAX_COLUMNS if bins else 1.0
    return TimelineView(
        title=f"Where {doc.model.name} hears \u201c{doc.tag}\u201d in {song}", song=song, tag=doc.tag, facts=facts,
        warnings=doc.warnings, verdict=verdict, start_s=start, end_s=end, aggregated=bins is not None,
        segments_per_column=round(per, 2), max_weight=max_w, lanes=tuple(lanes), moments=tuple(moments),
        mix=Player("a-mix", f"the mix over {start:.2f}\u2013{end:.2f} s", mix_src) if mix_src else None,
        ticks=_ticks(start, dur), sha256=a.sha256)
