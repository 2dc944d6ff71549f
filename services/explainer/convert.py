"""The one place where explainer protos meet the service's domain types (both directions)."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.timestamp_pb2 import Timestamp

from audiolime.explainer.service import ExplainOutcome, ExplainSpec, Job
from audiolime.v1 import explainer_pb2


def spec_from_proto(req: explainer_pb2.ExplainRequest) -> ExplainSpec:
    """An ``ExplainRequest`` as the service's ``ExplainSpec`` (defaults applied by the service)."""
    source = req.audio.WhichOneof("source")
    return ExplainSpec(
        audio_content=req.audio.content if source == "content" else None,
        audio_uri=req.audio.uri if source == "uri" else None,
        filename=req.audio.filename or (req.audio.uri.rsplit("/", 1)[-1] if source == "uri" else ""),
        model=req.model, model_version=req.model_version, tags=tuple(t.strip() for t in req.tags),
        top_n=req.top_n, window_start_s=req.window_start_s if req.HasField("window_start_s") else None,
        window_duration_s=req.window_duration_s, segments=req.segments, separator_model=req.separator_model,
        num_samples=req.num_samples, seed=req.seed, top_k=req.top_k, url_ttl_s=req.url_ttl_s)


def explanation_to_proto(outcome: ExplainOutcome) -> explainer_pb2.Explanation:
    """The published document (file references are presigned URLs) as an ``Explanation``."""
    doc = outcome.document
    audio, model, sep = doc["audio"], doc["model"], doc["separator"]
    expires = Timestamp()
    expires.FromSeconds(int(outcome.urls_expire_at))
    pb = explainer_pb2.Explanation(
        explanation_id=outcome.explanation_id,
        audio=explainer_pb2.AudioInfo(
            sha256=audio["sha256"], sample_rate=audio["sample_rate"], channels=audio["channels"],
            duration_s=audio["duration_s"], window_start_s=audio["window"]["start_s"],
            window_duration_s=audio["window"]["duration_s"], window_url=audio["window_file"] or "",
            filename=audio["path"]),
        model=explainer_pb2.ModelInfo(name=model["name"], version=model["version"],
                                      sample_rate=model["sample_rate"], window_samples=model["window_samples"]),
        separator=explainer_pb2.SeparatorInfo(model=sep["model"], stems=sep["stems"],
                                              residual_rel_rms=sep["residual_rel_rms"],
                                              cache_hit=outcome.separator_cache_hit),
        prediction=[explainer_pb2.TagProbability(tag=t, probability=p) for t, p in doc["prediction"].items()],
        num_samples=doc["num_samples"], unique_samples=doc["unique_samples"], exhaustive=doc["exhaustive"],
        seed=doc["seed"], segments=doc["segments"], top_k=doc["top_k"], timings_s=doc["timings_s"],
        warnings=doc["warnings"], manifest_url=outcome.manifest_url, urls_expire_at=expires)
    for t in doc["targets"]:
        f = t["fidelity"]
        pb.targets.append(explainer_pb2.TargetExplanation(
            tag=t["tag"], surrogate_r2=t["surrogate_r2"], intercept=t["intercept"],
            components=[explainer_pb2.Component(
                rank=c["rank"], name=c["name"], source=c["source"], segment=c["segment"], start_s=c["start_s"],
                end_s=c["end_s"], weight=c["weight"], url=c["file"] or "") for c in t["components"]],
            fidelity=explainer_pb2.Fidelity(
                top_k=f["top_k"], components=f["components"], same_top_tag=f["same_top_tag"], top_tag=f["top_tag"],
                target_probability=f["target_probability"],
                original_target_probability=f["original_target_probability"], url=f["file"] or "")))
    return pb


def progress_to_proto(stage: str, evaluated: int, total: int) -> explainer_pb2.ExplainProgress:
    return explainer_pb2.ExplainProgress(stage=stage, evaluated=evaluated, total=total)


def job_to_proto(job: Job, error_status: Callable[[BaseException], tuple[str, str]]) -> explainer_pb2.ExplanationJob:
    """A job snapshot; ``error_status`` names a failure's status code and public message."""
    pb = explainer_pb2.ExplanationJob(job_id=job.job_id, state=explainer_pb2.ExplanationJob.State.Value(job.state),
                                      progress=progress_to_proto(job.stage, job.evaluated, job.total))
    if job.outcome is not None:
        pb.result.CopyFrom(explanation_to_proto(job.outcome))
    if job.error is not None:
        pb.error_code, pb.error_message = error_status(job.error)
    return pb


def urls_by_file(explanation: explainer_pb2.Explanation) -> dict[str, str]:
    """Artifact name (as in ``explanation.json``) -> presigned URL, for every URL in the result.

    Names come from the object key (``explanations/<id>/<name>``), which is in every URL's path."""
    from urllib.parse import unquote, urlparse

    urls = [explanation.manifest_url, explanation.audio.window_url]
    for t in explanation.targets:
        urls += [c.url for c in t.components if c.url] + [t.fidelity.url]
    marker = f"explanations/{explanation.explanation_id}/"
    out = {}
    for url in urls:
        path = unquote(urlparse(url).path)
        if marker in path:
            out[path.split(marker, 1)[1]] = url
    return out
