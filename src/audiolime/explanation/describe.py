"""From the method's result to its document and its listenable files: :func:`describe` (the
:class:`~audiolime.explanation.document.Document`, artifacts by relative name) and
:func:`artifacts` (the audio of every file the document names)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from audiolime.explanation.document import (
    REST_MIX_FILE,
    TOPK_MIX_FILE,
    WINDOW_FILE,
    AudioRecord,
    ComponentRecord,
    CostRecord,
    CurveRecord,
    Document,
    DropTopKRecord,
    EdgesRecord,
    FaithfulnessRecord,
    KeepTopKRecord,
    ModelRecord,
    SamplingRecord,
    SeparatorRecord,
    StemRecord,
    StoppingRecord,
    TagProbability,
    TargetRecord,
    VerdictRecord,
    component_file,
    peaks,
    stem_file,
    target_prefix,
    top_tags,
)
from audiolime.method.faithfulness import Curve
from audiolime.method.pipeline import SongExplanation
from audiolime.method.request import TIE


def _curve(curve: Curve | None) -> CurveRecord | None:
    if curve is None:
        return None
    return CurveRecord(tuple(round(float(p), 6) for p in curve.probabilities), round(curve.auc, 6))


def describe(result: SongExplanation, timings_s: dict[str, float] | None = None) -> Document:
    """The document of the method's result, artifacts referenced by their relative names;
    ``timings_s``: the final timings (default: the method's own)."""
    req, exp, tagger, fact = result.plan.request, result.explanation, result.tagger, result.factorization
    k = req.top_k
    targets = []
    for j, t in enumerate(exp.targets):
        prefix = target_prefix(j, t.tag)
        components = tuple(ComponentRecord.of(
            rc.rank, rc.component, rc.weight,
            prefix + component_file(rc.rank, rc.component.source, rc.component.segment) if rc.rank <= k else None,
        ) for rc in t.ranking)
        keep = t.keep
        keep_record = KeepTopKRecord(
            top_k=keep.top_k, components=tuple(fact.info[i].name for i in keep.components),
            same_top_tag=keep.same_top_tag, top_tag=keep.top_tag, target_probability=round(keep.target_probability, 6),
            original_target_probability=round(float(exp.prediction[t.tag_index]), 6), file=prefix + TOPK_MIX_FILE,
            rest_file=prefix + REST_MIX_FILE)
        fa = t.faithfulness
        v = fa.verdict
        faithfulness = FaithfulnessRecord(
            DropTopKRecord(tuple(fact.info[i].name for i in fa.drop.components), fa.drop.same_top_tag,
                           fa.drop.top_tag, round(fa.drop.target_probability, 6)),
            _curve(fa.deletion), _curve(fa.insertion), round(fa.stability, 4),
            VerdictRecord(v.random_sets, round(v.keep_random_as_good, 4), round(v.drop_random_as_good, 4),
                          v.sufficient, v.necessary, v.summary))
        targets.append(TargetRecord(t.tag, round(t.surrogate_r2, 6), round(t.intercept, 6), components, keep_record,
                                    faithfulness))
    audio = result.audio
    timings = result.timings_s if timings_s is None else timings_s
    return Document(
        audio=AudioRecord(result.audio_name, audio.pcm_sha256(), audio.sample_rate, audio.input_channels,
                          round(audio.duration_s, 4), round(result.window_start_s, 4),
                          round(result.window_duration_s, 4), WINDOW_FILE, peaks(result.window_listen)),
        model=ModelRecord(tagger.name, tagger.version, tagger.sample_rate, tagger.window_samples),
        separator=SeparatorRecord(result.stems.model, tuple(result.stems.stems),
                                  float(f"{result.stems.residual_rel_rms:.3g}")),
        prediction={lab: round(float(p), 6) for lab, p in zip(tagger.labels, exp.prediction)},
        song_top_tags=tuple(TagProbability(tag, round(p, 6))
                            for tag, p in top_tags(result.song_prediction, tagger.labels, 5)),
        targets=tuple(targets), segments=req.segments, num_components=fact.num_components,
        num_samples=exp.num_samples, unique_samples=exp.unique_samples, exhaustive=exp.masks.exhaustive,
        seed=req.seed, top_k=k, kernel_width=req.kernel_width,
        timings_s={key: round(v, 4) for key, v in timings.items()}, warnings=tuple(result.warnings),
        edges=EdgesRecord(fact.edges, fact.fade, round(fact.fade_s, 4)),
        sampling=SamplingRecord(req.kernel, req.sampling, req.num_samples, req.max_samples, req.stability, TIE),
        stopping=StoppingRecord(exp.stopping.rounds, exp.stopping.masks, exp.stopping.reason,
                                round(exp.stopping.stability, 4)),
        faithfulness_cost=CostRecord(exp.metric_calls, round(exp.timings_s.get("fidelity", 0.0), 4)),
        stems=tuple(StemRecord(s, stem_file(s), peaks(fact.listen_stem(s))) for s in fact.sources))


def artifacts(result: SongExplanation) -> Iterator[tuple[str, np.ndarray]]:
    """Relative file name and ``[channels, samples]`` audio (at the input's rate) of every
    listenable artifact :func:`describe` references."""
    fact = result.factorization
    yield WINDOW_FILE, result.window_listen
    for source in fact.sources:
        yield stem_file(source), fact.listen_stem(source)
    for j, target in enumerate(result.explanation.targets):
        prefix = target_prefix(j, target.tag)
        for rc in target.top(result.plan.request.top_k):
            mask = np.zeros(fact.num_components, np.float32)
            mask[rc.component.index] = 1
            yield prefix + component_file(rc.rank, rc.component.source, rc.component.segment), fact.compose_listen(mask)
        mask = np.zeros(fact.num_components, np.float32)
        mask[list(target.keep.components)] = 1
        yield prefix + TOPK_MIX_FILE, fact.compose_listen(mask)
        yield prefix + REST_MIX_FILE, fact.compose_listen(1 - mask)
