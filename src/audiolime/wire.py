"""The explainer API's messages (``audiolime.v1``) and the method's types, both directions, for
the two sides of that API: the client (:mod:`audiolime.client`) and the explainer service.

protobuf only (no gRPC, no scikit-learn): a client converts without importing the service.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from audiolime.errors import InvalidInput
from audiolime.explain.document import Document, FaithfulnessRecord
from audiolime.explain.events import Event
from audiolime.explain.limits import MAX_URI_CHARS, check_name
from audiolime.explain.request import ExplainRequest
from audiolime.v1 import common_pb2, explainer_pb2


@dataclass(frozen=True)
class AudioSource:
    """The audio of a request: encoded bytes, or an object-store URI (exactly one)."""

    content: bytes | None = None
    uri: str | None = None
    filename: str = ""

    @property
    def name(self) -> str:
        return self.filename or (self.uri.rsplit("/", 1)[-1] if self.uri else "") or "audio"

    def check(self) -> AudioSource:
        if (self.content is None) == (self.uri is None):
            raise InvalidInput("audio: give exactly one of content (bytes) or uri")
        check_name("audio.filename", self.filename)
        if self.uri is not None:
            check_name("audio.uri", self.uri, MAX_URI_CHARS)
        return self


def audio_from_proto(audio: common_pb2.AudioInput) -> AudioSource:
    source = audio.WhichOneof("source")
    return AudioSource(audio.content if source == "content" else None, audio.uri if source == "uri" else None,
                       audio.filename)


def audio_to_proto(audio: AudioSource) -> common_pb2.AudioInput:
    pb = common_pb2.AudioInput(filename=audio.filename)
    if audio.content is not None:
        pb.content = audio.content
    elif audio.uri is not None:
        pb.uri = audio.uri
    return pb


def request_from_proto(pb: explainer_pb2.ExplainRequest) -> tuple[ExplainRequest, AudioSource, int]:
    """(method request with defaults for unset fields, audio, url_ttl_s or 0); not yet validated."""
    req = ExplainRequest.from_wire(
        model=pb.model, model_version=pb.model_version, tags=tuple(pb.tags), top_n=pb.top_n,
        window_start_s=pb.window_start_s if pb.HasField("window_start_s") else None,
        window_duration_s=pb.window_duration_s, segments=pb.segments, separator=pb.separator_model,
        num_samples=pb.num_samples, seed=pb.seed, top_k=pb.top_k, edges=pb.edges, fade=pb.fade,
        max_samples=pb.max_samples, stability=pb.stability, kernel=pb.kernel, sampling=pb.sampling, curves=pb.curves)
    return req, audio_from_proto(pb.audio), pb.url_ttl_s


def request_to_proto(req: ExplainRequest, audio: AudioSource, url_ttl_s: int = 0) -> explainer_pb2.ExplainRequest:
    pb = explainer_pb2.ExplainRequest(
        audio=audio_to_proto(audio), model=req.model, model_version=req.model_version, tags=list(req.tags),
        top_n=req.top_n, window_duration_s=req.window_duration_s, segments=req.segments,
        separator_model=req.separator, num_samples=req.num_samples, seed=req.seed, top_k=req.top_k,
        url_ttl_s=url_ttl_s, edges=req.edges, fade=req.fade, max_samples=req.max_samples, stability=req.stability,
        kernel=req.kernel, sampling=req.sampling, curves=req.curves)
    if req.window_start_s is not None:
        pb.window_start_s = req.window_start_s
    return pb


def event_to_proto(event: Event) -> explainer_pb2.ExplainProgress:
    return explainer_pb2.ExplainProgress(stage=event.stage, evaluated=event.done, total=event.total)


def explanation_to_proto(doc: Document, explanation_id: str, manifest_url: str, urls_expire_at: float,
                         separator_cache_hit: bool, report_url: str = "",
                         artifact_urls: dict[str, str] | None = None) -> explainer_pb2.Explanation:
    """A published explanation: ``doc``'s file references are presigned URLs; ``artifact_urls``
    maps every artifact's relative name to its URL."""
    a, m, sep = doc.audio, doc.model, doc.separator
    expires = Timestamp()
    expires.FromSeconds(int(urls_expire_at))
    pb = explainer_pb2.Explanation(
        explanation_id=explanation_id,
        audio=explainer_pb2.AudioInfo(sha256=a.sha256, sample_rate=a.sample_rate, channels=a.channels,
                                      duration_s=a.duration_s, window_start_s=a.window_start_s,
                                      window_duration_s=a.window_duration_s, window_url=a.window_file or "",
                                      filename=a.path),
        model=explainer_pb2.ModelInfo(name=m.name, version=m.version, sample_rate=m.sample_rate,
                                      window_samples=m.window_samples),
        separator=explainer_pb2.SeparatorInfo(model=sep.model, stems=list(sep.stems),
                                              residual_rel_rms=sep.residual_rel_rms, cache_hit=separator_cache_hit),
        prediction=[explainer_pb2.TagProbability(tag=t, probability=p) for t, p in doc.prediction.items()],
        num_samples=doc.num_samples, unique_samples=doc.unique_samples, exhaustive=doc.exhaustive, seed=doc.seed,
        segments=doc.segments, top_k=doc.top_k, timings_s=doc.timings_s, warnings=list(doc.warnings),
        manifest_url=manifest_url, urls_expire_at=expires, report_url=report_url, artifact_urls=artifact_urls or {})
    if doc.edges is not None:
        pb.edges.CopyFrom(explainer_pb2.SegmentEdges(mode=doc.edges.mode, fade=doc.edges.fade, fade_s=doc.edges.fade_s))
    if doc.sampling is not None:
        sm = doc.sampling
        pb.sampling.CopyFrom(explainer_pb2.SamplingInfo(kernel=sm.kernel, sampling=sm.sampling,
                                                        num_samples=sm.num_samples, max_samples=sm.max_samples,
                                                        stability_threshold=sm.stability_threshold,
                                                        tie_tolerance=sm.tie_tolerance))
    if doc.stopping is not None:
        st = doc.stopping
        pb.stopping.CopyFrom(explainer_pb2.Stopping(rounds=st.rounds, masks=st.masks, reason=st.reason,
                                                    stability=st.stability))
    if doc.faithfulness_cost is not None:
        pb.faithfulness_cost.CopyFrom(explainer_pb2.FaithfulnessCost(tagger_calls=doc.faithfulness_cost.tagger_calls,
                                                                     seconds=doc.faithfulness_cost.seconds))
    for t in doc.targets:
        f = t.fidelity
        pb.targets.append(explainer_pb2.TargetExplanation(
            tag=t.tag, surrogate_r2=t.surrogate_r2, intercept=t.intercept,
            components=[explainer_pb2.Component(
                rank=c.rank, name=c.name, source=c.source, segment=c.segment, start_s=c.start_s, end_s=c.end_s,
                weight=c.weight, url=c.file or "") for c in t.components],
            fidelity=explainer_pb2.Fidelity(
                top_k=f.top_k, components=list(f.components), same_top_tag=f.same_top_tag, top_tag=f.top_tag,
                target_probability=f.target_probability, original_target_probability=f.original_target_probability,
                url=f.file or ""), faithfulness=faithfulness_to_proto(t.faithfulness)))
    return pb


def faithfulness_to_proto(f: FaithfulnessRecord | None) -> explainer_pb2.Faithfulness | None:
    if f is None:
        return None
    d = f.drop_top_k
    pb = explainer_pb2.Faithfulness(
        drop_top_k=explainer_pb2.DropTopK(components=list(d.components), same_top_tag=d.same_top_tag,
                                          top_tag=d.top_tag, target_probability=d.target_probability),
        stability=f.stability)
    for name, curve in (("deletion", f.deletion), ("insertion", f.insertion)):
        if curve is not None:
            getattr(pb, name).CopyFrom(explainer_pb2.RankCurve(probabilities=list(curve.probabilities), auc=curve.auc))
    return pb


def urls_by_file(manifest: Document, pb: explainer_pb2.Explanation) -> dict[str, str]:
    """Relative artifact name (from the stored manifest) -> presigned URL (from the response's
    ``artifact_urls``; from a server without them, by walking both descriptions side by side).
    Only names the manifest references are returned, every one of them or an error."""
    if pb.artifact_urls:
        missing = [f for f in manifest.files() if f not in pb.artifact_urls]
        if missing:
            raise InvalidInput(f"the response has no URL for {', '.join(missing[:3])}")
        return {f: pb.artifact_urls[f] for f in manifest.files()}
    pairs = [(manifest.audio.window_file, pb.audio.window_url)]
    if len(manifest.targets) != len(pb.targets):
        raise InvalidInput("the manifest and the response describe different explanations")
    for t, tp in zip(manifest.targets, pb.targets):
        pairs += [(c.file, cp.url) for c, cp in zip(t.components, tp.components)]
        pairs.append((t.fidelity.file, tp.fidelity.url))
    return {name: url for name, url in pairs if name and url}
