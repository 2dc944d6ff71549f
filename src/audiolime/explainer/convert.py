"""The explainer service's own types as protos (the API's shared types convert in :mod:`audiolime.wire`)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from audiolime import wire
from audiolime.explainer.core import JobStatus
from audiolime.explainer.service import Published
from audiolime.v1 import explainer_pb2


def published_to_proto(published: Published) -> explainer_pb2.Explanation:
    return wire.explanation_to_proto(published.with_urls(), published.explanation_id, published.manifest_url,
                                     published.urls_expire_at, published.separator_cache_hit,
                                     report_url=published.report_url, artifact_urls=published.urls)


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def job_to_proto(status: JobStatus) -> explainer_pb2.ExplanationJob:
    """A job as GetExplanation/CancelExplanation report it."""
    job = status.view
    pb = explainer_pb2.ExplanationJob(job_id=job.job_id, state=job.state,
                                      progress=wire.progress_to_proto(job.progress), attempt=job.attempt,
                                      created_at=_timestamp(job.record.created_at),
                                      cancel_requested=job.cancel_requested, worker=job.worker)
    if status.result is not None:
        pb.result.CopyFrom(published_to_proto(status.result))
    if job.result is not None:
        pb.finished_at.CopyFrom(_timestamp(job.result.finished_at))
        pb.error_code, pb.error_message = job.result.error_code, job.result.error_message
    if job.expires_at is not None:
        pb.expires_at.CopyFrom(_timestamp(job.expires_at))
    return pb
