"""``audiolime.v1.Explainer`` servicer: translates protos to the service core and back, raises
domain errors only (one interceptor maps them to status codes)."""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Iterator

from audiolime import errors, wire
from audiolime.explain.events import Event
from audiolime.explain.limits import check_name
from audiolime.explainer.convert import job_to_proto, outcome_to_proto
from audiolime.explainer.jobs import JobTable
from audiolime.explainer.service import ExplainerService, Job
from audiolime.v1 import explainer_pb2, explainer_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "audiolime.v1.Explainer"
_DONE = object()


def job_from_proto(request: explainer_pb2.ExplainRequest) -> Job:
    req, audio, ttl = wire.request_from_proto(request)
    return Job(req, audio, ttl)


class ExplainerServicer(explainer_pb2_grpc.ExplainerServicer):
    def __init__(self, service: ExplainerService, jobs: JobTable) -> None:
        self.service = service
        self.jobs = jobs

    def Explain(self, request, context):
        return outcome_to_proto(self.service.explain(job_from_proto(request)))

    def ExplainStream(self, request, context) -> Iterator[explainer_pb2.ExplainEvent]:
        job = self.service.validate(job_from_proto(request))  # bad requests fail before the stream starts
        events: queue.Queue = queue.Queue()
        outcome: dict = {}

        def on_event(event: Event) -> None:
            if not context.is_active():  # the caller went away: stop spending tagger time
                raise errors.Cancelled("the caller cancelled")
            events.put(event)

        def run() -> None:
            try:
                outcome["result"] = self.service.explain(job, on_event)
            except errors.Cancelled:
                log.info("explanation cancelled by the caller")
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
        if not request.job_id:
            raise errors.InvalidInput("job_id is required")
        check_name("job_id", request.job_id, 64)
        return job_to_proto(self.jobs.get(request.job_id))
