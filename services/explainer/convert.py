"""The explainer service's own types as protos (the API's shared types convert in :mod:`audiolime.wire`)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from audiolime import wire
from audiolime.explainer.jobstore import JobView
from audiolime.explainer.service import ExplainOutcome
from audiolime.v1 import explainer_pb2


def outcome_to_proto(outcome: ExplainOutcome) -> explainer_pb2.Explanation:
    return wire.explanation_to_proto(outcome.published(), outcome.explanation_id, outcome.manifest_url,
                                     outcome.urls_expire_at, outcome.separator_cache_hit,
                                     report_url=outcome.report_url, artifact_urls=outcome.urls)


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def job_to_proto(job: JobView, outcome: ExplainOutcome | None = None) -> explainer_pb2.ExplanationJob:
    """A job as GetExplanation/CancelExplanation report it (``outcome``: its presented result)."""
    pb = explainer_pb2.ExplanationJob(job_id=job.job_id, state=explainer_pb2.ExplanationJob.State.Value(job.state),
                                      progress=wire.event_to_proto(job.progress), attempt=job.attempt,
                                      created_at=_timestamp(job.record.created_at),
                                      cancel_requested=job.cancel_requested, worker=job.worker)
    if outcome is not None:
        pb.result.CopyFrom(outcome_to_proto(outcome))
    if job.result is not None:
        pb.finished_at.CopyFrom(_timestamp(job.result.finished_at))
        pb.error_code, pb.error_message = job.result.error_code, job.result.error_message
    if job.expires_at is not None:
        pb.expires_at.CopyFrom(_timestamp(job.expires_at))
    return pb
