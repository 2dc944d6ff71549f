"""A song timeline as a document (``timeline.json``): the records of one tag explained over a song
range (:mod:`audiolime.method.timeline`) and :func:`describe_timeline`, which makes one.

A document of its own kind (``kind: song-timeline``), versioned apart from the window explanation
(:data:`TIMELINE_VERSION`), written with the same schema machinery
(:mod:`audiolime.explanation.schema`), so it round-trips exactly like ``explanation.json``; it
reuses that document's model, separator, stopping, sampling and verdict records. Per stem it holds
its timeline (one song-level weight per window segment, in time order) and a summary of where the
stem carries the tag; then the windows, the top moments, the song-level faithfulness, the cost in
tagger windows and the timings.

Version 2 adds the listenable files (``audiolime timeline --out``, :func:`timeline_artifacts`):
each top moment's clip (``file``: its stem over its segment, WAV at the stems' rate, a short fade at
either edge), each stem over the explained range (``stems[].file``, FLAC: the viewer plays it
aligned with the timeline) and the mixture of the range (``audio.range.mix_file``). Version 1
documents (no files) still load: the fields are optional.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from audiolime.explanation import schema
from audiolime.explanation.document import (
    ModelRecord,
    SamplingRecord,
    SeparatorRecord,
    StoppingRecord,
    TagProbability,
    VerdictRecord,
    slug,
    top_tags,
)
from audiolime.method.request import TIE

if TYPE_CHECKING:  # reading a timeline document needs no scikit-learn (the method does)
    from audiolime.method.timeline import SongTimeline

TIMELINE_KIND = "song-timeline"
TIMELINE_VERSION = 2
TIMELINE_READS = (1, TIMELINE_VERSION)
TIMELINE_MANIFEST = "timeline.json"
TIMELINE_REPORT = "timeline.html"
CLIP_FADE_S = 0.01  # each clip's fade in and out (raised cosine): no click at a cut mid-waveform
MIX_FILE = "mix.flac"


@dataclass(frozen=True)
class RangeAudioRecord:
    path: str
    sha256: str
    sample_rate: int
    channels: int
    duration_s: float
    start_s: float = field(metadata=schema.meta(json="range.start_s"))  # the first window's start
    end_s: float = field(metadata=schema.meta(json="range.end_s"))  # the last window's end
    mix_file: str | None = field(default=None, metadata=schema.meta(json="range.mix_file"))  # v2: the range's mix


@dataclass(frozen=True)
class SongRecord:
    """The song aggregate: the mean over windows of the tag's probability (how musicnn and FCN tag a
    song), the song surrogate's intercept (the mean of the windows') and the song's top tags."""

    probability: float
    intercept: float
    top_tags: tuple[TagProbability, ...]


@dataclass(frozen=True)
class WindowRecord:
    index: int
    start_s: float
    end_s: float
    probability: float  # the tagger's, of the tag, on this window
    surrogate_r2: float
    intercept: float
    stopping: StoppingRecord
    unique_masks: int
    tagger_calls: int  # its prediction, distinct masks and own checks


@dataclass(frozen=True)
class TimelinePoint:
    window: int
    segment: int
    start_s: float
    end_s: float
    weight: float  # song level: the window's weight / windows


@dataclass(frozen=True)
class StemTimelineRecord:
    """One stem along the song: ``timeline`` (windows x segments points, in time order);
    ``positive_share`` its share of all positive song-level weight (how much of the tag it carries);
    ``peak_start_s``/``peak_end_s`` where its weight is highest."""

    name: str
    positive_share: float
    peak_start_s: float
    peak_end_s: float
    peak_weight: float
    timeline: tuple[TimelinePoint, ...]
    file: str | None = None  # v2: the stem over the range (audio.range), FLAC at the stems' rate


@dataclass(frozen=True)
class MomentRecord:
    rank: int
    window: int
    stem: str
    segment: int
    start_s: float
    end_s: float
    weight: float
    file: str | None = None  # v2: the clip, the stem over [start_s, end_s), faded at the edges


@dataclass(frozen=True)
class SongFaithfulnessRecord:
    """The top moments at song level: the song aggregate of the tag with only them (``keep``) and
    without them (``drop``), and with ``random_sets`` random k-sets of the song's components kept /
    removed (``keep_random``, ``drop_random``), judged as a window's verdict."""

    top_k: int
    components: tuple[str, ...]
    original_probability: float
    keep_probability: float
    keep_top_tag: str
    drop_probability: float
    drop_top_tag: str
    keep_random: tuple[float, ...]
    drop_random: tuple[float, ...]
    verdict: VerdictRecord


@dataclass(frozen=True)
class TimelineCostRecord:
    """Tagger windows run, by what for; ``masks_x_windows``: the masks the windows' sampling drew
    (the reference cost), ``ratio``: ``tagger_calls`` / it."""

    tagger_calls: int
    scan: int
    predictions: int
    masks: int
    window_checks: int
    song_checks: int
    masks_x_windows: int
    ratio: float


@dataclass(frozen=True)
class TimelineDocument:
    audio: RangeAudioRecord
    model: ModelRecord
    separator: SeparatorRecord
    tag: str
    song: SongRecord
    windows: tuple[WindowRecord, ...]
    stems: tuple[StemTimelineRecord, ...]
    top_moments: tuple[MomentRecord, ...]
    faithfulness: SongFaithfulnessRecord
    cost: TimelineCostRecord
    segments: int
    num_components: int  # windows x d'
    seed: int
    edges: str
    fade: float
    sampling: SamplingRecord
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    kind: str = TIMELINE_KIND
    version: int = TIMELINE_VERSION

    def to_json(self) -> dict:
        return schema.to_json(self)

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n").encode()

    def files(self) -> list[str]:
        """Every file this document references (relative names, or URLs after ``with_files``)."""
        out = [self.audio.mix_file] + [s.file for s in self.stems] + [m.file for m in self.top_moments]
        return [f for f in out if f]

    def with_files(self, ref: Callable[[str], str | None]) -> TimelineDocument:
        """The same document with every file reference ``f`` replaced by ``ref(f)``."""
        def r(f: str | None) -> str | None:
            return ref(f) if f else None

        return replace(self, audio=replace(self.audio, mix_file=r(self.audio.mix_file)),
                       stems=tuple(replace(s, file=r(s.file)) for s in self.stems),
                       top_moments=tuple(replace(m, file=r(m.file)) for m in self.top_moments))

    @classmethod
    def loads(cls, data: bytes | str) -> TimelineDocument:
        """Parse ``timeline.json``; anything else is ``InvalidInput`` saying what is wrong."""
        return schema.load_document(data, lambda d: schema.from_json(cls, d), TIMELINE_READS, "a song timeline",
                                    "timeline document", TIMELINE_KIND)


def _r(x: float, digits: int = 6) -> float:
    return round(float(x), digits)


def moment_name(stem: str, start_s: float, end_s: float) -> str:
    return f"{stem} {start_s:.2f}\u2013{end_s:.2f} s"


def describe_timeline(result: SongTimeline, timings_s: dict[str, float] | None = None) -> TimelineDocument:
    """The document of a timeline (``timings_s``: the final timings; default: the method's)."""
    tplan, tagger, audio = result.plan, result.tagger, result.audio
    req = tplan.window_request
    segs = req.segments
    positive = sum(float(np.clip(s.weights, 0, None).sum()) for s in result.stems)
    stems = []
    for s in result.stems:
        peak = int(np.argmax(s.weights))
        points = tuple(TimelinePoint(i // segs, i % segs, _r(a, 4), _r(b, 4), _r(w))
                       for i, (a, b, w) in enumerate(zip(s.starts_s, s.ends_s, s.weights)))
        share = float(np.clip(s.weights, 0, None).sum()) / positive if positive > 0 else 0.0
        stems.append(StemTimelineRecord(s.stem, _r(share, 4), _r(s.starts_s[peak], 4), _r(s.ends_s[peak], 4),
                                        _r(s.weights[peak]), points))
    windows = tuple(WindowRecord(w.index, w.start_s, w.end_s, _r(w.probability), _r(w.surrogate_r2), _r(w.intercept),
                                 StoppingRecord(w.stopping.rounds, w.stopping.masks, w.stopping.reason,
                                                _r(w.stopping.stability, 4)), w.unique_masks, w.tagger_calls)
                    for w in result.windows)
    moments = tuple(MomentRecord(m.rank, m.window, m.stem, m.segment, m.start_s, m.end_s, _r(m.weight))
                    for m in result.moments)
    f, v = result.faithfulness, result.faithfulness.verdict
    by_index = {m.index: m for m in result.moments}
    faith = SongFaithfulnessRecord(
        f.top_k, tuple(moment_name(by_index[g].stem, by_index[g].start_s, by_index[g].end_s) for g in f.components),
        _r(f.original_probability), _r(f.keep_probability), f.keep_top_tag, _r(f.drop_probability), f.drop_top_tag,
        tuple(_r(p) for p in f.keep_random), tuple(_r(p) for p in f.drop_random),
        VerdictRecord(v.random_sets, _r(v.keep_random_as_good, 4), _r(v.drop_random_as_good, 4), v.sufficient,
                      v.necessary, v.summary))
    c = result.cost
    timings = result.timings_s if timings_s is None else timings_s
    return TimelineDocument(
        audio=RangeAudioRecord(result.audio_name, audio.pcm_sha256(), audio.sample_rate, audio.input_channels,
                               _r(audio.duration_s, 4), _r(tplan.start_s, 4), _r(tplan.end_s, 4)),
        model=ModelRecord(tagger.name, tagger.version, tagger.sample_rate, tagger.window_samples),
        separator=SeparatorRecord(result.separator, tuple(s.stem for s in result.stems),
                                  float(f"{result.residual_rel_rms:.3g}")),
        tag=result.tag,
        song=SongRecord(_r(result.song_probability), _r(result.song_intercept),
                        tuple(TagProbability(t, _r(p)) for t, p in top_tags(result.song_prediction, tagger.labels, 5))),
        windows=windows, stems=tuple(stems), top_moments=moments, faithfulness=faith,
        cost=TimelineCostRecord(c.tagger_calls, c.scan, c.predictions, c.masks, c.window_checks, c.song_checks,
                                c.masks_x_windows, _r(c.ratio, 4)),
        segments=segs, num_components=len(result.windows) * req.num_components, seed=req.seed, edges=req.edges,
        fade=req.fade if req.edges == "fade" else 0.0,
        sampling=SamplingRecord(req.kernel, req.sampling, req.num_samples, req.max_samples, req.stability, TIE),
        timings_s={k: _r(t, 4) for k, t in timings.items()}, warnings=tuple(result.warnings))


# -- the listenable files (version 2) -----------------------------------------------------------
class RangeStems:
    """The stems over the explained range, assembled from the windows' stems as the method
    separates them (a :data:`~audiolime.method.timeline.StemSink`): float32 ``[channels, samples]``
    at the audio's rate from sample ``start`` (the first window's) to ``end`` (the last one's).
    Memory: the range once per stem (10 minutes of 44.1 kHz stereo: 212 MB a stem)."""

    def __init__(self, start: int, end: int, channels: int, sample_rate: int) -> None:
        self.start, self.end, self.channels, self.sample_rate = start, end, channels, sample_rate
        self.stems: dict[str, np.ndarray] = {}

    def __call__(self, a: int, b: int, stems: dict[str, np.ndarray]) -> None:
        for name, wave in stems.items():
            buf = self.stems.get(name)
            if buf is None:
                buf = self.stems[name] = np.zeros((self.channels, self.end - self.start), np.float32)
            lo, hi = max(a, self.start), min(b, self.end)
            if hi > lo:
                buf[:, lo - self.start:hi - self.start] = wave[:, lo - a:hi - a]


def fade_edges(wave: np.ndarray, sample_rate: int, fade_s: float = CLIP_FADE_S) -> np.ndarray:
    """``wave`` with a raised-cosine fade in and out of ``fade_s`` (at most a quarter of it each)."""
    out = np.array(wave, np.float32, copy=True)
    n = min(int(round(fade_s * sample_rate)), out.shape[-1] // 4)
    if n > 0:
        ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)
        out[..., :n] *= ramp
        out[..., out.shape[-1] - n:] *= ramp[::-1]
    return out


def clip_name(m: MomentRecord) -> str:
    return f"moment_{m.rank:02d}_{slug(m.stem)}.wav"


def stem_file(name: str) -> str:
    return f"stem_{slug(name)}.flac"


def with_clip_names(doc: TimelineDocument, stems: RangeStems) -> TimelineDocument:
    """``doc`` (version 2) naming the files :func:`timeline_artifacts` writes for it."""
    have = set(stems.stems)
    return replace(doc, version=TIMELINE_VERSION, audio=replace(doc.audio, mix_file=MIX_FILE),
                   stems=tuple(replace(s, file=stem_file(s.name) if s.name in have else None) for s in doc.stems),
                   top_moments=tuple(replace(m, file=clip_name(m) if m.stem in have else None)
                                     for m in doc.top_moments))


def timeline_artifacts(doc: TimelineDocument, stems: RangeStems,
                       mix: np.ndarray) -> Iterator[tuple[str, np.ndarray, str]]:
    """``(name, [channels, samples] float32, "wav" | "flac")`` of every file ``doc`` names (see
    :func:`with_clip_names`): the mix of the range, each stem over the range, each moment's clip."""
    rate, start = stems.sample_rate, stems.start
    if doc.audio.mix_file:
        yield doc.audio.mix_file, mix, "flac"
    for s in doc.stems:
        if s.file:
            yield s.file, stems.stems[s.name], "flac"
    for m in doc.top_moments:
        if m.file:
            wave = stems.stems[m.stem]
            a = min(max(int(round(m.start_s * rate)) - start, 0), wave.shape[1])
            b = min(max(int(round(m.end_s * rate)) - start, a), wave.shape[1])
            yield m.file, fade_edges(wave[:, a:b], rate), "wav"
