"""An explanation as a typed document: what ``explanation.json`` holds, what the gRPC
``Explanation`` is converted from, and the names of the listenable artifacts beside it.

:func:`describe` makes a :class:`Document` from a pipeline result, with artifact references as
relative file names (``rank1_vocals-2.wav``); :meth:`Document.with_files` swaps them for what a
reader should fetch (presigned URLs). :meth:`Document.to_json` / :meth:`Document.from_json`
round-trip exactly, so a document read back from the object store is the one written.

Besides the top-k components and the top-k mix, every explanation has what a listener needs to
hear any component and the explanation's complement: one WAV per stem over the window
(``stem_<name>.wav``; a component is a time range of its stem, so d' components cost C files, not
d') and, per target, ``rest_mix.wav`` (every component except the top-k mix's). Peak envelopes of
the window and of each stem let the listening report draw waveforms from the document alone.
Fields added after version 1 are optional when reading, so older documents still load.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from audiolime.errors import InvalidInput
from audiolime.explain.request import TIE

if TYPE_CHECKING:
    from audiolime.explain.pipeline import ExplainResult

DOCUMENT_VERSION = 2  # 2: edges, sampling, stopping, faithfulness (version 1 documents still read)
READS = (1, DOCUMENT_VERSION)  # the versions loads() accepts (version 1: without the v2 fields)
MANIFEST = "explanation.json"
REPORT_FILE = "explanation.html"  # the listening report, beside the manifest (audiolime.report)
WINDOW_FILE = "window.wav"
TOPK_MIX_FILE = "topk_mix.wav"
REST_MIX_FILE = "rest_mix.wav"
PEAK_COLUMNS = 320  # waveform envelope resolution: ~10 ms per column on a 3 s window

FileRef = Callable[[str], "str | None"]


def top_tags(probabilities: np.ndarray, labels: Sequence[str], n: int) -> list[tuple[str, float]]:
    """The ``n`` most probable tags, most probable first."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:n]
    return [(labels[i], float(probabilities[i])) for i in order]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "tag"


def target_prefix(index: int, tag: str) -> str:
    """The first target's files sit at the top level; further targets in a folder named after the tag."""
    return "" if index == 0 else f"{slug(tag)}/"


def component_file(rank: int, source: str, segment: int) -> str:
    return f"rank{rank}_{slug(source)}-{segment}.wav"


def stem_file(source: str) -> str:
    return f"stem_{slug(source)}.wav"


def peaks(wave: np.ndarray, columns: int = PEAK_COLUMNS) -> tuple[float, ...]:
    """Peak |amplitude| (over channels) in ``columns`` equal slices of ``wave [channels, samples]``."""
    mag = np.abs(np.atleast_2d(np.asarray(wave, np.float32))).max(axis=0)
    if mag.size == 0:
        return (0.0,) * columns
    edges = np.minimum(np.round(np.linspace(0, mag.size, columns + 1)).astype(np.int64), mag.size - 1)
    return tuple(round(float(v), 3) for v in np.maximum.reduceat(mag, edges[:-1]))


@dataclass(frozen=True)
class ComponentRecord:
    rank: int
    name: str
    source: str
    segment: int
    start_s: float
    end_s: float
    weight: float
    file: str | None  # only the top-k components have audio


@dataclass(frozen=True)
class FidelityRecord:
    """The paper's check: the tagger on the mix of only the top-k positive components."""

    top_k: int
    components: tuple[str, ...]
    same_top_tag: bool
    top_tag: str
    target_probability: float
    original_target_probability: float
    file: str | None
    rest_file: str | None = None  # everything but the top-k mix's components (absent before it existed)


@dataclass(frozen=True)
class DropRecord:
    """The tagger on the window without the top-k positive components (the keep check's complement)."""

    components: tuple[str, ...]
    same_top_tag: bool  # the original top tag is still the top one (a faithful top-k makes this False)
    top_tag: str
    target_probability: float


@dataclass(frozen=True)
class CurveRecord:
    """The target's probability with 0, 1, ..., d' components removed (deletion) or added
    (insertion) in ranking order, and its area over the fraction of components (x in [0, 1])."""

    probabilities: tuple[float, ...]
    auc: float


@dataclass(frozen=True)
class FaithfulnessRecord:
    """How far to trust a target's ranking, measured with the tagger: drop-top-k, deletion and
    insertion curves (None when not computed: d' > 48 unless asked), and the bootstrap stability
    of the top-k set (the share of refits on resampled masks that give the same top-k set)."""

    drop_top_k: DropRecord
    deletion: CurveRecord | None
    insertion: CurveRecord | None
    stability: float


@dataclass(frozen=True)
class TargetRecord:
    tag: str
    surrogate_r2: float
    intercept: float
    components: tuple[ComponentRecord, ...]  # every component, by descending weight
    fidelity: FidelityRecord  # keep-top-k
    faithfulness: FaithfulnessRecord | None = None  # None only in version 1 documents


@dataclass(frozen=True)
class AudioRecord:
    path: str
    sha256: str
    sample_rate: int
    channels: int
    duration_s: float
    window_start_s: float
    window_duration_s: float
    window_file: str | None
    window_peaks: tuple[float, ...] = ()  # PEAK_COLUMNS peak amplitudes over the window


@dataclass(frozen=True)
class ModelRecord:
    name: str
    version: int
    sample_rate: int
    window_samples: int


@dataclass(frozen=True)
class SeparatorRecord:
    model: str
    stems: tuple[str, ...]
    residual_rel_rms: float


@dataclass(frozen=True)
class EdgesRecord:
    mode: str  # hard | fade
    fade: float  # cross-fade length / segment length (0 for hard edges)
    fade_s: float  # one cross-fade, in seconds


@dataclass(frozen=True)
class SamplingRecord:
    kernel: str  # lime | shap
    sampling: str  # paired | independent
    num_samples: int  # as requested; 0 = adaptive
    max_samples: int
    stability_threshold: float
    # components within this share of the strongest weight of the k-th one count as tied for the
    # last places of the top-k set (audiolime.explain.surrogate.TIE); 0: the exact set (documents
    # written before the tie rule)
    tie_tolerance: float = 0.0


@dataclass(frozen=True)
class StoppingRecord:
    """Why sampling stopped: fixed (N given), stable, max_samples or exhaustive."""

    rounds: int
    masks: int
    reason: str
    stability: float  # of the least stable target's top-k set


@dataclass(frozen=True)
class CostRecord:
    """What the faithfulness metrics cost: tagger windows beyond the sampled masks, and seconds."""

    tagger_calls: int
    seconds: float


@dataclass(frozen=True)
class StemRecord:
    """One stem over the window: its audio (every component of it is a time range of this file)
    and its peak envelope."""

    name: str
    file: str | None
    peaks: tuple[float, ...] = ()


@dataclass(frozen=True)
class Document:
    audio: AudioRecord
    model: ModelRecord
    separator: SeparatorRecord
    prediction: dict[str, float]  # tag -> probability on the window, model order
    song_top_tags: tuple[tuple[str, float], ...]
    targets: tuple[TargetRecord, ...]
    segments: int
    num_components: int
    num_samples: int
    unique_samples: int
    exhaustive: bool
    seed: int
    top_k: int
    kernel_width: float
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    stems: tuple[StemRecord, ...] = ()
    version: int = DOCUMENT_VERSION
    edges: EdgesRecord | None = None  # None only in version 1 documents, as the three below
    sampling: SamplingRecord | None = None
    stopping: StoppingRecord | None = None
    faithfulness_cost: CostRecord | None = None

    # -- file references -------------------------------------------------------------------
    def files(self) -> list[str]:
        """Every artifact this document references (relative names, or URLs after ``with_files``)."""
        out = [self.audio.window_file] + [s.file for s in self.stems]
        for t in self.targets:
            out += [c.file for c in t.components] + [t.fidelity.file, t.fidelity.rest_file]
        return [f for f in out if f]

    def with_files(self, ref: FileRef) -> Document:
        """The same document with every file reference ``f`` replaced by ``ref(f)``."""
        def r(f: str | None) -> str | None:
            return ref(f) if f else None

        targets = tuple(replace(t, components=tuple(replace(c, file=r(c.file)) for c in t.components),
                                fidelity=replace(t.fidelity, file=r(t.fidelity.file),
                                                 rest_file=r(t.fidelity.rest_file))) for t in self.targets)
        return replace(self, audio=replace(self.audio, window_file=r(self.audio.window_file)), targets=targets,
                       stems=tuple(replace(s, file=r(s.file)) for s in self.stems))

    def with_timing(self, stage: str, seconds: float) -> Document:
        return replace(self, timings_s={**self.timings_s, stage: round(seconds, 4)})

    # -- JSON --------------------------------------------------------------------------------
    def to_json(self) -> dict:
        a = self.audio
        return {
            "version": self.version,
            "audio": {"path": a.path, "sha256": a.sha256, "sample_rate": a.sample_rate, "channels": a.channels,
                      "duration_s": a.duration_s,
                      "window": {"start_s": a.window_start_s, "duration_s": a.window_duration_s},
                      "window_file": a.window_file, "window_peaks": list(a.window_peaks)},
            "model": vars(self.model).copy(),
            "separator": {"model": self.separator.model, "stems": list(self.separator.stems),
                          "residual_rel_rms": self.separator.residual_rel_rms},
            "stems": [{"name": s.name, "file": s.file, "peaks": list(s.peaks)} for s in self.stems],
            "prediction": dict(self.prediction),
            "song_top_tags": [{"tag": t, "probability": p} for t, p in self.song_top_tags],
            "targets": [{
                "tag": t.tag, "surrogate_r2": t.surrogate_r2, "intercept": t.intercept,
                "components": [vars(c).copy() for c in t.components],
                "fidelity": {**vars(t.fidelity), "components": list(t.fidelity.components)},
                "faithfulness": _faithfulness_json(t.faithfulness),
            } for t in self.targets],
            "segments": self.segments,
            "num_components": self.num_components,
            "num_samples": self.num_samples,
            "unique_samples": self.unique_samples,
            "exhaustive": self.exhaustive,
            "seed": self.seed,
            "top_k": self.top_k,
            "kernel_width": self.kernel_width,
            "timings_s": dict(self.timings_s),
            "warnings": list(self.warnings),
            "edges": _vars(self.edges),
            "sampling": _vars(self.sampling),
            "stopping": _vars(self.stopping),
            "faithfulness_cost": _vars(self.faithfulness_cost),
        }

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, d: dict) -> Document:
        a = d["audio"]
        return cls(
            version=d["version"],
            audio=AudioRecord(a["path"], a["sha256"], a["sample_rate"], a["channels"], a["duration_s"],
                              a["window"]["start_s"], a["window"]["duration_s"], a["window_file"],
                              tuple(a.get("window_peaks", ()))),
            model=ModelRecord(**d["model"]),
            separator=SeparatorRecord(d["separator"]["model"], tuple(d["separator"]["stems"]),
                                      d["separator"]["residual_rel_rms"]),
            stems=tuple(StemRecord(s["name"], s["file"], tuple(s["peaks"])) for s in d.get("stems", ())),
            prediction=dict(d["prediction"]),
            song_top_tags=tuple((x["tag"], x["probability"]) for x in d["song_top_tags"]),
            targets=tuple(TargetRecord(
                t["tag"], t["surrogate_r2"], t["intercept"], tuple(ComponentRecord(**c) for c in t["components"]),
                FidelityRecord(**{**t["fidelity"], "components": tuple(t["fidelity"]["components"])}),
                _faithfulness_from_json(t.get("faithfulness")))
                for t in d["targets"]),
            segments=d["segments"], num_components=d["num_components"], num_samples=d["num_samples"],
            unique_samples=d["unique_samples"], exhaustive=d["exhaustive"], seed=d["seed"], top_k=d["top_k"],
            kernel_width=d["kernel_width"], timings_s=dict(d["timings_s"]), warnings=tuple(d["warnings"]),
            edges=_record(EdgesRecord, d.get("edges")), sampling=_record(SamplingRecord, d.get("sampling")),
            stopping=_record(StoppingRecord, d.get("stopping")),
            faithfulness_cost=_record(CostRecord, d.get("faithfulness_cost")))

    @classmethod
    def loads(cls, data: bytes | str) -> Document:
        """Parse ``explanation.json``; anything else (not JSON, missing fields, a newer version)
        is ``InvalidInput`` saying what is wrong."""
        try:
            d = json.loads(data)
            if not isinstance(d, dict):
                raise InvalidInput("not an explanation document: expected a JSON object")
            if d.get("version") not in READS:
                raise InvalidInput(f"document version {d.get('version')!r} is not one this audiolime reads "
                                   f"({', '.join(map(str, READS))})")
            return cls.from_json(d)
        except InvalidInput:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc).split("\n")[0]
            raise InvalidInput(f"not an explanation document: {what}") from None


def _vars(record: object | None) -> dict | None:
    return None if record is None else vars(record).copy()


def _record(cls, d: dict | None):
    return None if d is None else cls(**d)


def _curve_json(c: CurveRecord | None) -> dict | None:
    return None if c is None else {"probabilities": list(c.probabilities), "auc": c.auc}


def _curve_from_json(d: dict | None) -> CurveRecord | None:
    return None if d is None else CurveRecord(tuple(d["probabilities"]), d["auc"])


def _faithfulness_json(f: FaithfulnessRecord | None) -> dict | None:
    if f is None:
        return None
    return {"drop_top_k": {**vars(f.drop_top_k), "components": list(f.drop_top_k.components)},
            "deletion": _curve_json(f.deletion), "insertion": _curve_json(f.insertion), "stability": f.stability}


def _faithfulness_from_json(d: dict | None) -> FaithfulnessRecord | None:
    if d is None:
        return None
    drop = d["drop_top_k"]
    return FaithfulnessRecord(DropRecord(**{**drop, "components": tuple(drop["components"])}),
                              _curve_from_json(d["deletion"]), _curve_from_json(d["insertion"]), d["stability"])


def _curve(curve) -> CurveRecord | None:
    if curve is None:
        return None
    return CurveRecord(tuple(round(float(p), 6) for p in curve.probabilities), round(curve.auc, 6))


def describe(result: ExplainResult) -> Document:
    """The document of a pipeline result, artifacts referenced by their relative names."""
    req, exp, tagger, fact = result.request, result.explanation, result.tagger, result.factorization
    k = req.top_k
    targets = []
    for j, t in enumerate(exp.targets):
        prefix = target_prefix(j, t.tag)
        components = tuple(ComponentRecord(
            rank=rc.rank, name=rc.component.name, source=rc.component.source, segment=rc.component.segment,
            start_s=round(rc.component.start_s, 4), end_s=round(rc.component.end_s, 4), weight=round(rc.weight, 6),
            file=prefix + component_file(rc.rank, rc.component.source, rc.component.segment) if rc.rank <= k else None,
        ) for rc in t.ranking)
        f = t.fidelity
        fidelity = FidelityRecord(
            top_k=f.top_k, components=tuple(fact.info[i].name for i in f.components), same_top_tag=f.same_top_tag,
            top_tag=f.top_tag, target_probability=round(f.target_probability, 6),
            original_target_probability=round(float(exp.prediction[t.tag_index]), 6), file=prefix + TOPK_MIX_FILE,
            rest_file=prefix + REST_MIX_FILE)
        fa = t.faithfulness
        faithfulness = FaithfulnessRecord(
            DropRecord(tuple(fact.info[i].name for i in fa.drop.components), fa.drop.same_top_tag, fa.drop.top_tag,
                       round(fa.drop.target_probability, 6)),
            _curve(fa.deletion), _curve(fa.insertion), round(fa.stability, 4))
        targets.append(TargetRecord(t.tag, round(t.surrogate_r2, 6), round(t.intercept, 6), components, fidelity,
                                    faithfulness))
    audio = result.audio
    return Document(
        audio=AudioRecord(result.audio_name, audio.pcm_sha256(), audio.sample_rate, audio.channels,
                          round(audio.duration_s, 4), round(result.window_start_s, 4),
                          round(result.window_duration_s, 4), WINDOW_FILE, peaks(result.window_listen)),
        model=ModelRecord(tagger.name, tagger.version, tagger.sample_rate, tagger.window_samples),
        separator=SeparatorRecord(result.stems.model, tuple(result.stems.stems),
                                  float(f"{result.stems.residual_rel_rms:.3g}")),
        prediction={lab: round(float(p), 6) for lab, p in zip(tagger.labels, exp.prediction)},
        song_top_tags=tuple((tag, round(p, 6)) for tag, p in top_tags(result.song_prediction, tagger.labels, 5)),
        targets=tuple(targets), segments=req.segments, num_components=fact.num_components,
        num_samples=exp.num_samples, unique_samples=exp.unique_samples, exhaustive=exp.masks.exhaustive,
        seed=req.seed, top_k=k, kernel_width=req.kernel_width,
        timings_s={key: round(v, 4) for key, v in result.timings_s.items()}, warnings=tuple(result.warnings),
        edges=EdgesRecord(fact.edges, fact.fade, round(fact.fade_s, 4)),
        sampling=SamplingRecord(req.kernel, req.sampling, req.num_samples, req.max_samples, req.stability, TIE),
        stopping=StoppingRecord(exp.stopping.rounds, exp.stopping.masks, exp.stopping.reason,
                                round(exp.stopping.stability, 4)),
        faithfulness_cost=CostRecord(exp.metric_calls, round(exp.timings_s.get("fidelity", 0.0), 4)),
        stems=tuple(StemRecord(s, stem_file(s), peaks(fact.listen_stem(s))) for s in fact.sources))


def artifacts(result: ExplainResult) -> Iterator[tuple[str, np.ndarray]]:
    """Relative file name and ``[channels, samples]`` audio (at the input's rate) of every
    listenable artifact :func:`describe` references."""
    fact = result.factorization
    yield WINDOW_FILE, result.window_listen
    for source in fact.sources:
        yield stem_file(source), fact.listen_stem(source)
    for j, target in enumerate(result.explanation.targets):
        prefix = target_prefix(j, target.tag)
        for rc in target.top(result.request.top_k):
            mask = np.zeros(fact.num_components, np.float32)
            mask[rc.component.index] = 1
            yield prefix + component_file(rc.rank, rc.component.source, rc.component.segment), fact.compose_listen(mask)
        mask = np.zeros(fact.num_components, np.float32)
        mask[list(target.fidelity.components)] = 1
        yield prefix + TOPK_MIX_FILE, fact.compose_listen(mask)
        yield prefix + REST_MIX_FILE, fact.compose_listen(1 - mask)
