"""An explanation as a typed document: what ``explanation.json`` holds, what the gRPC
``Explanation`` is converted from, and the names of the listenable artifacts beside it.

The records below are the one schema of both (:mod:`audiolime.explanation.schema`: field
metadata names a field's JSON key and message field). :func:`audiolime.explanation.describe.describe`
makes a :class:`Document` from the method's result, with artifact references as relative file names
(``rank1_vocals-2.wav``); :meth:`Document.with_files` swaps them for what a reader should fetch
(presigned URLs). :meth:`Document.to_json` / :meth:`Document.from_json` round-trip exactly, so a
document read back from the object store is the one written.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from audiolime.explanation import schema
from audiolime.explanation.schema import meta

# 2: edges, sampling, stopping, faithfulness (version 1 documents still read). Optional fields added
# since (faithfulness.verdict) leave it at 2: older readers ignore them, and they may be missing here.
DOCUMENT_VERSION = 2
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
    file: str | None = field(metadata=meta(proto="url"))  # only the top-k components have audio

    @classmethod
    def of(cls, rank: int, component: Any, weight: float, file: str | None = None) -> ComponentRecord:
        """The record of a ranked :class:`~audiolime.method.factorization.Component` (times and weight
        rounded as the document keeps them)."""
        return cls(rank=rank, name=component.name, source=component.source, segment=component.segment,
                   start_s=round(component.start_s, 4), end_s=round(component.end_s, 4), weight=round(weight, 6),
                   file=file)


@dataclass(frozen=True)
class KeepTopKRecord:
    """The paper's check (``fidelity`` in the document and the message): the tagger on the mix of
    only the top-k positive components."""

    top_k: int
    components: tuple[str, ...]
    same_top_tag: bool
    top_tag: str
    target_probability: float
    original_target_probability: float
    file: str | None = field(metadata=meta(proto="url"))
    # everything but the top-k mix's components (absent before it existed)
    rest_file: str | None = field(default=None, metadata=meta(proto="rest_url"))


@dataclass(frozen=True)
class DropTopKRecord:
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
class VerdictRecord:
    """The top-k against ``random_sets`` random k-sets of the same components
    (:func:`audiolime.method.faithfulness.verdict`): the share of them that keep the target as
    probable when kept alone / lower it as far when removed; sufficient and necessary; one line."""

    random_sets: int
    keep_random_as_good: float
    drop_random_as_good: float
    sufficient: bool
    necessary: bool
    summary: str


@dataclass(frozen=True)
class FaithfulnessRecord:
    """How far to trust a target's ranking, measured with the tagger: drop-top-k, deletion and
    insertion curves (None when not computed: d' > 48 unless asked), the bootstrap ranking
    stability of the top-k set (the share of refits on resampled masks that give the same top-k
    set: reproducibility, not faithfulness) and the verdict (absent in documents written before it)."""

    drop_top_k: DropTopKRecord
    deletion: CurveRecord | None
    insertion: CurveRecord | None
    stability: float
    verdict: VerdictRecord | None = None


@dataclass(frozen=True)
class TargetRecord:
    tag: str
    surrogate_r2: float
    intercept: float
    components: tuple[ComponentRecord, ...]  # every component, by descending weight
    keep_top_k: KeepTopKRecord = field(metadata=meta(json="fidelity", proto="fidelity"))
    faithfulness: FaithfulnessRecord | None = None  # None only in version 1 documents


@dataclass(frozen=True)
class AudioRecord:
    path: str = field(metadata=meta(proto="filename"))
    sha256: str
    sample_rate: int
    channels: int
    duration_s: float
    window_start_s: float = field(metadata=meta(json="window.start_s"))
    window_duration_s: float = field(metadata=meta(json="window.duration_s"))
    window_file: str | None = field(metadata=meta(proto="window_url"))
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
    # last places of the top-k set (audiolime.method.surrogate.TIE); 0: the exact set (documents
    # written before the tie rule)
    tie_tolerance: float = 0.0


@dataclass(frozen=True)
class StoppingRecord:
    """Why sampling stopped: fixed (N given), stable, max_samples, exhaustive, deadline or budget."""

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
    file: str | None = field(metadata=meta(proto="url"))
    peaks: tuple[float, ...] = ()


@dataclass(frozen=True)
class TagProbability:
    tag: str
    probability: float


@dataclass(frozen=True)
class Document:
    audio: AudioRecord
    model: ModelRecord
    separator: SeparatorRecord
    # tag -> probability on the window, model order
    prediction: dict[str, float] = field(metadata=meta(items=("tag", "probability")))
    song_top_tags: tuple[TagProbability, ...]
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
    version: int = field(default=DOCUMENT_VERSION, metadata=meta(proto="document_version"))
    edges: EdgesRecord | None = None  # None only in version 1 documents, as the three below
    sampling: SamplingRecord | None = None
    stopping: StoppingRecord | None = None
    faithfulness_cost: CostRecord | None = None

    # -- file references -------------------------------------------------------------------
    def files(self) -> list[str]:
        """Every artifact this document references (relative names, or URLs after ``with_files``)."""
        out = [self.audio.window_file] + [s.file for s in self.stems]
        for t in self.targets:
            out += [c.file for c in t.components] + [t.keep_top_k.file, t.keep_top_k.rest_file]
        return [f for f in out if f]

    def with_files(self, ref: FileRef) -> Document:
        """The same document with every file reference ``f`` replaced by ``ref(f)``."""
        def r(f: str | None) -> str | None:
            return ref(f) if f else None

        targets = tuple(replace(t, components=tuple(replace(c, file=r(c.file)) for c in t.components),
                                keep_top_k=replace(t.keep_top_k, file=r(t.keep_top_k.file),
                                                   rest_file=r(t.keep_top_k.rest_file))) for t in self.targets)
        return replace(self, audio=replace(self.audio, window_file=r(self.audio.window_file)), targets=targets,
                       stems=tuple(replace(s, file=r(s.file)) for s in self.stems))

    # -- JSON --------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return schema.to_json(self)

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, d: dict) -> Document:
        return schema.from_json(cls, d)

    @classmethod
    def loads(cls, data: bytes | str) -> Document:
        """Parse ``explanation.json``; anything else (not JSON, missing fields, a newer version)
        is ``InvalidInput`` saying what is wrong."""
        return schema.load_document(data, cls.from_json, READS, "an explanation", "document")
