"""The explainer API's messages (``audiolime.v1``) and the domain types, both directions, for the
two sides of that API: the client (:mod:`audiolime.client`) and the services.

The request's fields map by name (field metadata ``proto`` where the message spells it
differently, ``wire=False`` for method settings the API does not expose); the explanation's by
its one schema (:mod:`audiolime.explanation.schema`). protobuf only (no gRPC, no scikit-learn).
"""

from __future__ import annotations

import dataclasses

from google.protobuf.timestamp_pb2 import Timestamp

from audiolime.errors import InvalidInput
from audiolime.explanation import schema
from audiolime.explanation.document import ComponentRecord, Document
from audiolime.inputs import AudioSource
from audiolime.method.events import Event, RankedSoFar, Ranking
from audiolime.method.request import ExplainRequest
from audiolime.v1 import common_pb2, explainer_pb2


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


def _request_fields() -> list[tuple[str, str]]:
    """(ExplainRequest field, ExplainRequest message field) of every field the API carries."""
    return [(f.name, f.metadata.get("proto", f.name)) for f in dataclasses.fields(ExplainRequest)
            if f.metadata.get("wire", True)]


def request_from_proto(pb: explainer_pb2.ExplainRequest) -> tuple[ExplainRequest, AudioSource, int]:
    """(method request with defaults for unset fields, audio, url_ttl_s or 0); not yet validated."""
    values = {name: getattr(pb, field) for name, field in _request_fields()}
    values["window_start_s"] = pb.window_start_s if pb.HasField("window_start_s") else None
    values["tags"] = tuple(pb.tags)
    return ExplainRequest.from_wire(**values), audio_from_proto(pb.audio), pb.url_ttl_s


def request_to_proto(req: ExplainRequest, audio: AudioSource, url_ttl_s: int = 0) -> explainer_pb2.ExplainRequest:
    pb = explainer_pb2.ExplainRequest(audio=audio_to_proto(audio), url_ttl_s=url_ttl_s)
    for name, field in _request_fields():
        value = getattr(req, name)
        if name == "tags":
            pb.tags.extend(value)
        elif value is not None:
            setattr(pb, field, value)
    return pb


def progress_to_proto(event: Event) -> explainer_pb2.ExplainProgress:
    return explainer_pb2.ExplainProgress(stage=event.stage, evaluated=event.done, total=event.total)


def event_to_proto(event: Event | Ranking) -> explainer_pb2.ExplainEvent:
    """A progress event or a round's interim ranking as the stream's message."""
    if isinstance(event, Event):
        return explainer_pb2.ExplainEvent(progress=progress_to_proto(event))
    return explainer_pb2.ExplainEvent(interim=explainer_pb2.ExplainInterim(
        round=event.round, masks=event.masks, targets=[explainer_pb2.InterimTarget(
            tag=t.tag, stability=t.stability,
            top=[schema.to_proto(ComponentRecord.of(r, c, w), explainer_pb2.Component())
                 for r, (c, w) in enumerate(t.top, 1)])
            for t in event.targets]))


def event_from_proto(pb: explainer_pb2.ExplainEvent) -> Event | Ranking:
    """:func:`event_to_proto` read back (a stream message that is not the result)."""
    if pb.HasField("progress"):
        return Event(pb.progress.stage, pb.progress.evaluated, pb.progress.total)
    return Ranking(pb.interim.round, pb.interim.masks, tuple(
        RankedSoFar(t.tag, t.stability, tuple((c, c.weight) for c in t.top)) for t in pb.interim.targets))


def explanation_to_proto(doc: Document, explanation_id: str, manifest_url: str, urls_expire_at: float,
                         separator_cache_hit: bool, report_url: str = "",
                         artifact_urls: dict[str, str] | None = None) -> explainer_pb2.Explanation:
    """A published explanation: ``doc``'s file references are presigned URLs; ``artifact_urls``
    maps every artifact's relative name to its URL."""
    expires = Timestamp()
    expires.FromSeconds(int(urls_expire_at))
    pb = schema.to_proto(doc, explainer_pb2.Explanation(
        explanation_id=explanation_id, manifest_url=manifest_url, urls_expire_at=expires, report_url=report_url,
        artifact_urls=artifact_urls or {}))
    pb.separator.cache_hit = separator_cache_hit
    return pb


def explanation_from_proto(pb: explainer_pb2.Explanation) -> Document:
    """The document a response carries (file references: its presigned URLs)."""
    return schema.from_proto(Document, pb)


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
        pairs.append((t.keep_top_k.file, tp.fidelity.url))
    return {name: url for name, url in pairs if name and url}
