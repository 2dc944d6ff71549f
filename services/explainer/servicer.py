"""``audiolime.v1.Explainer`` servicer: translates protos to the service core and back, raises
domain errors only (one interceptor maps them to status codes).

Unary and streaming explanations take a place in the replica's admission (RESOURCE_EXHAUSTED
beyond ``--max-concurrent`` running + ``--max-queued`` waiting) and stop at their next batch of
masks when the caller cancels or its deadline passes. Jobs are the job runner's
(:mod:`audiolime.explainer.jobs`).
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Callable, Iterator

from audiolime import errors, wire
from audiolime.explain.events import Event, EventSink
from audiolime.explainer.convert import job_to_proto, outcome_to_proto
from audiolime.explainer.jobs import JobRunner
from audiolime.explainer.jobstore import SUCCEEDED, JobView
from audiolime.explainer.service import DEFAULT_URL_TTL_S, ExplainerService, ExplainOutcome, Job
from audiolime.server import context as callctx
from audiolime.server.admission import Admission
from audiolime.v1 import explainer_pb2, explainer_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "audiolime.v1.Explainer"
_DONE = object()


def job_from_proto(request: explainer_pb2.ExplainRequest) -> Job:
    req, audio, ttl = wire.request_from_proto(request)
    return Job(req, audio, ttl)


def caller_gone(context) -> Callable[[], bool]:
    """Whether the caller cancelled or its deadline passed."""
    def gone() -> bool:
        left = callctx.remaining()
        return not context.is_active() or (left is not None and left <= 0)
    return gone


def watching(context, sink: EventSink | None = None) -> EventSink:
    """An event sink that stops the explanation at its next event (the engine emits one per batch
    of masks) once the caller cancelled or its deadline passed."""
    def on_event(event: Event) -> None:
        left = callctx.remaining()
        if left is not None and left <= 0:
            raise errors.DeadlineExceeded("the caller's deadline passed")
        if not context.is_active():
            raise errors.Cancelled("the caller cancelled")
        if sink is not None:
            sink(event)
    return on_event


class ExplainerServicer(explainer_pb2_grpc.ExplainerServicer):
    def __init__(self, service: ExplainerService, jobs: JobRunner, admission: Admission) -> None:
        self.service = service
        self.jobs = jobs
        self.admission = admission

    def _explain(self, job: Job, context, events: EventSink) -> ExplainOutcome:
        with self.admission.place() as place, place.run(stop=caller_gone(context)):
            outcome = self.service.explain(job, events)
        self._expire_later(outcome, job)
        return outcome

    def _expire_later(self, outcome: ExplainOutcome, job: Job) -> None:
        try:
            self.jobs.expire_later(outcome, job.ttl_s)
        except Exception:  # noqa: BLE001 - the explanation is published; only its clean-up is not scheduled
            log.exception("could not schedule the result's expiry", extra={"explanation_id": outcome.explanation_id})

    def Explain(self, request, context):
        job = self.service.validate(job_from_proto(request))  # bad requests: INVALID_ARGUMENT even when busy
        return outcome_to_proto(self._explain(job, context, watching(context)))

    def ExplainStream(self, request, context) -> Iterator[explainer_pb2.ExplainEvent]:
        job = self.service.validate(job_from_proto(request))  # bad requests fail before the stream starts
        events: queue.Queue = queue.Queue()
        outcome: dict = {}
        with self.admission.place() as place:  # busy: RESOURCE_EXHAUSTED before the stream starts

            def run() -> None:
                try:
                    with place.run(stop=caller_gone(context)):
                        outcome["result"] = self.service.explain(job, watching(context, events.put))
                    self._expire_later(outcome["result"], job)
                except (errors.Cancelled, errors.DeadlineExceeded) as exc:  # nobody is listening any more
                    log.info("explanation stopped", extra={"reason": str(exc)})
                except BaseException as exc:  # noqa: BLE001 - re-raised in the RPC thread
                    outcome["error"] = exc
                finally:
                    events.put(_DONE)

            worker = threading.Thread(target=contextvars.copy_context().run, args=(run,), name="explain-stream",
                                      daemon=True)
            worker.start()
            while (item := events.get()) is not _DONE:
                yield explainer_pb2.ExplainEvent(progress=wire.event_to_proto(item))
        if "error" in outcome:
            raise outcome["error"]
        if "result" not in outcome:
            return
        yield explainer_pb2.ExplainEvent(result=outcome_to_proto(outcome["result"]))

    def SubmitExplanation(self, request, context):
        job_id = self.jobs.submit(job_from_proto(request), validate=self.service.validate)
        return explainer_pb2.SubmitExplanationResponse(job_id=job_id)

    def GetExplanation(self, request, context):
        return self._job(self.jobs.get(request.job_id))

    def CancelExplanation(self, request, context):
        return self._job(self.jobs.cancel(request.job_id))

    def _job(self, view: JobView) -> explainer_pb2.ExplanationJob:
        outcome = None
        if view.state == SUCCEEDED:
            r = view.result
            ttl = view.record.url_ttl_s or DEFAULT_URL_TTL_S
            try:
                outcome = self.service.present(r.explanation_id, ttl, r.separator_cache_hit, view.expires_at,
                                               r.store_s)
            except errors.NotFound:  # expired between reading the result and its manifest
                raise self.jobs.jobs.not_found(view.job_id) from None
        return job_to_proto(view, outcome)
