"""The explainer service's own types as protos (the API's shared types convert in :mod:`audiolime.wire`)."""

from __future__ import annotations

from audiolime import errors, wire
from audiolime.explainer.jobs import JobState
from audiolime.explainer.service import ExplainOutcome
from audiolime.v1 import explainer_pb2


def outcome_to_proto(outcome: ExplainOutcome) -> explainer_pb2.Explanation:
    return wire.explanation_to_proto(outcome.published(), outcome.explanation_id, outcome.manifest_url,
                                     outcome.urls_expire_at, outcome.separator_cache_hit,
                                     report_url=outcome.report_url, artifact_urls=outcome.urls)


def error_status(exc: BaseException) -> tuple[str, str]:
    """Status code name and public message of a failure (internal details hidden)."""
    code = errors.status_name(exc)
    return ("INTERNAL", "internal error") if code is None else (code, str(exc))


def job_to_proto(job: JobState) -> explainer_pb2.ExplanationJob:
    pb = explainer_pb2.ExplanationJob(job_id=job.job_id, state=explainer_pb2.ExplanationJob.State.Value(job.state),
                                      progress=wire.event_to_proto(job.progress))
    if job.outcome is not None:
        pb.result.CopyFrom(outcome_to_proto(job.outcome))
    if job.error is not None:
        pb.error_code, pb.error_message = error_status(job.error)
    return pb
