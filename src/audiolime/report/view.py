"""What the listening report shows, computed from a :class:`~audiolime.explanation.document.Document`
alone (pure Python: the page template only lays it out, and this is tested without a browser).

A heat-map cell plays its component as a time range of its stem's WAV (``stem_<name>.wav``): one
file per stem instead of one per component keeps a report with d' in the hundreds small. Older
documents without stem files fall back to the top-k components' own WAVs (full-window files,
silent outside their segment, so the same time range works); other cells then have no audio.

The document is untrusted input (``audiolime report`` reads any JSON): text is escaped by the
template, and a file reference is used only when it is a relative artifact name or an http(s) URL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlparse

from audiolime.explanation.document import CurveRecord, Document, TargetRecord, slug

TOP_BARS = 10  # tags in the prediction chart (plus any explained tag outside them)
_NAME = re.compile(r"[A-Za-z0-9._/-]+")


def audio_ref(ref: str | None) -> str | None:
    """``ref`` if the page may load it: a relative name inside the report's folder or an http(s)
    URL (presigned); anything else (``javascript:``, ``file:``, absolute paths, ``..``) is dropped."""
    if not ref:
        return None
    u = urlparse(ref)
    if u.scheme in ("http", "https"):
        return ref if u.netloc else None
    if u.scheme or not _NAME.fullmatch(ref) or ref.startswith("/") or ".." in PurePosixPath(ref).parts:
        return None
    return ref


# -- faithfulness figures --------------------------------------------------
@dataclass(frozen=True)
class Curve:
    """The target's probability as ranked components are deleted (or inserted) one by one."""

    name: str
    probabilities: tuple[float, ...]
    auc: float | None
    points: str  # SVG polyline points in a 0..100 x 0..100 box (y up)


@dataclass(frozen=True)
class Faithfulness:
    drop_probability: float | None  # the target with the top-k components removed
    deletion: Curve | None
    insertion: Curve | None
    stability: float | None  # ranking stability: share of bootstrap resamples with the same top-k set
    stopping: str | None  # how adaptive sampling stopped, one line
    verdict: str | None = None  # the top-k against random k-sets, one line (None before the verdict)

    @property
    def curves(self) -> tuple[Curve, ...]:
        return tuple(c for c in (self.deletion, self.insertion) if c is not None)


def faithfulness(doc: Document, target: TargetRecord) -> Faithfulness | None:
    """The target's faithfulness figures (document version 2), or None for an older document.
    Values are read through :func:`_number` since a document is untrusted JSON."""
    f, stop = target.faithfulness, doc.stopping
    if f is None and stop is None:
        return None
    stopping = None
    if stop is not None:
        stopping = f"{stop.rounds} rounds, {stop.masks} masks: {stop.reason}" if stop.reason else \
            f"{stop.rounds} rounds, {stop.masks} masks"
    drop = _number(f.drop_top_k.target_probability) if f is not None and f.drop_top_k is not None else None
    stability = _number(f.stability) if f is not None else None
    if stability is None and stop is not None:
        stability = _number(stop.stability)
    summary = f.verdict.summary if f is not None and f.verdict is not None else None
    return Faithfulness(drop, _curve("deletion", f.deletion if f else None),
                        _curve("insertion", f.insertion if f else None), stability, stopping,
                        summary if isinstance(summary, str) and summary else None)


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _curve(name: str, record: CurveRecord | None) -> Curve | None:
    probs = record.probabilities if record is not None else None
    if record is None or not isinstance(probs, Sequence) or len(probs) < 2:
        return None
    ys = [min(max(_number(p) or 0.0, 0.0), 1.0) for p in probs]
    n = len(ys) - 1
    points = " ".join(f"{100 * i / n:.2f},{100 - 100 * y:.2f}" for i, y in enumerate(ys))
    return Curve(name, tuple(ys), _number(record.auc), points)


# -- the page's parts ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Player:
    id: str
    label: str
    src: str


@dataclass(frozen=True)
class Bar:
    tag: str
    probability: float
    explained: bool


@dataclass(frozen=True)
class Cell:
    """One component in the heat map: a button that plays ``audio`` from ``rel_start`` to ``rel_end``."""

    source: str
    segment: int
    rank: int
    weight: float
    start_s: float
    end_s: float
    rel_start: float  # seconds from the window start
    rel_end: float
    left: float  # % of the window
    width: float
    strength: float  # |weight| / the target's largest |weight|
    sign: str  # "pos", "neg" or "zero"
    top: bool
    audio: str | None  # id of the <audio> element

    @property
    def label(self) -> str:
        return (f"{self.source}, segment {self.segment}, {self.start_s:.2f} to {self.end_s:.2f} s, "
                f"rank {self.rank}, weight {self.weight:+.4f}")


@dataclass(frozen=True)
class Wave:
    """A mirrored peak envelope as an SVG path in a ``columns`` x 100 box."""

    path: str
    columns: int


@dataclass(frozen=True)
class Row:
    stem: str
    wave: Wave
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class TopComponent:
    rank: int
    source: str
    segment: int
    start_s: float
    end_s: float
    weight: float
    player: Player | None


@dataclass(frozen=True)
class TargetView:
    id: str
    tag: str
    kept: bool
    verdict: str
    surrogate_r2: float
    players: tuple[Player, ...]
    rows: tuple[Row, ...]
    top: tuple[TopComponent, ...]
    max_weight: float
    faithfulness: Faithfulness | None


@dataclass(frozen=True)
class ReportView:
    title: str
    song: str
    facts: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...]
    bars: tuple[Bar, ...]
    top_bars: int  # how many of the bars are the most probable tags
    bars_of: int
    window_start_s: float
    window_duration_s: float
    window_wave: Wave
    ticks: tuple[tuple[float, str], ...]  # (% of the window, label)
    players: tuple[Player, ...]  # the window and each stem
    targets: tuple[TargetView, ...]
    sha256: str


def build(doc: Document) -> ReportView:
    """Everything the page shows, from the document alone."""
    a = doc.audio
    song = PurePosixPath(a.path.replace("\\", "/")).name or a.path
    ws, wd = a.window_start_s, a.window_duration_s
    scale = max([*a.window_peaks, *(p for s in doc.stems for p in s.peaks), 1e-9])
    window_src = audio_ref(a.window_file)
    stem_players = {s.name: Player(f"a-stem-{i}", f"{s.name} (stem)", src)
                    for i, s in enumerate(doc.stems) if (src := audio_ref(s.file))}
    players = ((Player("a-window", "the window", window_src),) if window_src else ()) + tuple(stem_players.values())
    explained = {t.tag for t in doc.targets}
    ranked = sorted(doc.prediction.items(), key=lambda kv: -kv[1])
    bars = [Bar(t, p, t in explained) for t, p in ranked[:TOP_BARS]]
    bars += [Bar(t, p, True) for t, p in ranked[TOP_BARS:] if t in explained]
    window_top = ranked[0][0] if ranked else ""
    targets = tuple(_target(doc, j, t, window_top, stem_players, scale) for j, t in enumerate(doc.targets))
    stems = ", ".join(doc.separator.stems)
    samples = f"{doc.num_samples} masks, {doc.unique_samples} unique" + (" (all 2^d')" if doc.exhaustive else "")
    facts = (
        ("Song", f"{a.path} ({a.duration_s:.1f} s, {a.sample_rate} Hz, {a.channels} ch)"),
        ("Window", f"{ws:.2f}\u2013{ws + wd:.2f} s ({wd:g} s)"),
        ("Tagger", f"{doc.model.name} version {doc.model.version}"),
        ("Separator", f"{doc.separator.model} ({stems})"),
        ("Explained", ", ".join(t.tag for t in doc.targets) or "nothing"),
        ("Components", f"d' = {doc.num_components}: {len(doc.separator.stems)} stems \u00d7 {doc.segments} segments"),
        ("Samples", samples),
        ("Seed", str(doc.seed)),
        ("Top-k", f"{doc.top_k}; kernel width {doc.kernel_width:g}"),
    )
    return ReportView(
        title=f"What {doc.model.name} heard in {song}", song=song, facts=facts, warnings=doc.warnings,
        bars=tuple(bars), top_bars=min(TOP_BARS, len(ranked)), bars_of=len(ranked), window_start_s=ws, window_duration_s=wd,
        window_wave=_wave(a.window_peaks, scale), ticks=_ticks(ws, wd), players=players, targets=targets,
        sha256=a.sha256)


def _target(doc: Document, j: int, t: TargetRecord, window_top: str, stem_players: dict[str, Player],
            scale: float) -> TargetView:
    ws, wd = doc.audio.window_start_s, doc.audio.window_duration_s or 1.0
    f = t.keep_top_k
    tid = f"t{j}"
    top_players = {c.rank: Player(f"a-{tid}-r{c.rank}", f"rank {c.rank}: {c.source} {c.start_s:.2f}\u2013{c.end_s:.2f} s",
                                  src) for c in t.components if (src := audio_ref(c.file))}
    max_w = max((abs(c.weight) for c in t.components), default=0.0) or 1.0
    rows = []
    for s in doc.separator.stems:
        cells = []
        for c in sorted((c for c in t.components if c.source == s), key=lambda c: c.segment):
            player = stem_players.get(s) or top_players.get(c.rank)
            rel0 = min(max(0.0, c.start_s - ws), wd)
            rel1 = min(max(rel0, c.end_s - ws), wd)  # inside the window, even for a hostile document
            cells.append(Cell(
                c.source, c.segment, c.rank, c.weight, c.start_s, c.end_s, round(rel0, 4), round(rel1, 4),
                round(100 * rel0 / wd, 3), round(100 * (rel1 - rel0) / wd, 3), round(min(abs(c.weight) / max_w, 1.0), 3),
                "pos" if c.weight > 0 else "neg" if c.weight < 0 else "zero", c.file is not None and c.rank <= doc.top_k,
                player.id if player else None))
        stem = next((x for x in doc.stems if x.name == s), None)
        rows.append(Row(s, _wave(stem.peaks if stem else (), scale), tuple(cells)))
    players = []
    for pid, label, ref in ((f"a-{tid}-window", "the window", doc.audio.window_file),
                            (f"a-{tid}-topk", f"only the top-{f.top_k} components", f.file),
                            (f"a-{tid}-rest", f"everything but the top-{f.top_k}", f.rest_file)):
        if src := audio_ref(ref):
            players.append(Player(pid, label, src))
    top = tuple(TopComponent(c.rank, c.source, c.segment, c.start_s, c.end_s, c.weight, top_players.get(c.rank))
                for c in t.components if c.rank <= doc.top_k)
    kept, verdict = _verdict(t, window_top)
    return TargetView(f"tag-{slug(t.tag)}-{j}", t.tag, kept, verdict, t.surrogate_r2, tuple(players),
                      tuple(rows), top, max_w, faithfulness(doc, t))


def _verdict(t: TargetRecord, window_top: str) -> tuple[bool, str]:
    """The fidelity check in one line. For the window's top tag it is the paper's: is the mix of
    only the top-k components still tagged with it first? For another explained tag: does that
    mix keep the tag's probability (the window's top tag is then a different one anyway)?"""
    f = t.keep_top_k
    mix = f"the mix of only the top-{f.top_k} components"
    change = f"p({t.tag}) {f.original_target_probability:.3f} \u2192 {f.target_probability:.3f}"
    if f.top_k == 0:
        return False, f"No component raised \u201c{t.tag}\u201d: there is no top-k mix to check."
    if t.tag == window_top:
        if f.same_top_tag:
            return True, f"Kept: {mix} is still tagged \u201c{t.tag}\u201d first, like the whole window; {change}."
        return False, f"Lost: {mix} is tagged \u201c{f.top_tag}\u201d first, not \u201c{t.tag}\u201d; {change}."
    kept = f.target_probability >= f.original_target_probability
    return kept, (f"{'Kept' if kept else 'Lost'}: {mix} {'keeps' if kept else 'lowers'} {change}; it is tagged "
                  f"\u201c{f.top_tag}\u201d first, the whole window \u201c{window_top}\u201d.")


def _wave(peaks: Sequence[float], scale: float) -> Wave:
    """One vertical stroke per column, all envelopes on one scale (a quiet stem looks quiet)."""
    path = " ".join(f"M{i + 0.5:g} {50 - h:.1f}V{50 + h:.1f}"
                    for i, p in enumerate(peaks) if (h := max(0.5, 48 * min(max(p, 0.0) / scale, 1.0))))
    return Wave(path, max(len(peaks), 1))


def _ticks(start: float, duration: float) -> tuple[tuple[float, str], ...]:
    """Time-axis ticks at a round step (absolute song time), about 6 to 12 of them."""
    if duration <= 0:
        return ()
    step = next(s for s in (0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300) if duration / s <= 12) \
        if duration <= 3600 else duration / 10
    first = math.ceil(start / step - 1e-9) * step
    n = int((start + duration - first) / step + 1e-9) + 1
    return tuple((round(100 * (first + i * step - start) / duration, 3), f"{first + i * step:g}") for i in range(n))
