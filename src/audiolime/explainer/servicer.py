"""``audiolime.v1.Explainer`` servicer: protos to the core's types, one call of
:class:`~audiolime.explainer.core.ExplainerCore`, and back. Nothing else: domain errors are mapped
to status codes by one interceptor; admission, streams, cancellation, jobs and expiry are the core's.
"""

from __future__ import annotations

from collections.abc import Iterator

from audiolime import wire
from audiolime.explainer.convert import job_to_proto, published_to_proto
from audiolime.explainer.core import ExplainerCore
from audiolime.explainer.service import Published, Task
from audiolime.v1 import explainer_pb2, explainer_pb2_grpc

SERVICE_NAME = explainer_pb2.DESCRIPTOR.services_by_name["Explainer"].full_name


class ExplainerServicer(explainer_pb2_grpc.ExplainerServicer):
    def __init__(self, core: ExplainerCore) -> None:
        self.core = core

    def _task(self, request: explainer_pb2.ExplainRequest) -> Task:
        return self.core.check(*wire.request_from_proto(request))

    def Explain(self, request, context):
        return published_to_proto(self.core.explain(self._task(request), context))

    def ExplainStream(self, request, context) -> Iterator[explainer_pb2.ExplainEvent]:
        task = self._task(request)  # bad requests fail before the stream starts
        for item in self.core.explain_stream(task, context):
            if isinstance(item, Published):
                yield explainer_pb2.ExplainEvent(result=published_to_proto(item))
            else:
                yield wire.event_to_proto(item)

    def SubmitExplanation(self, request, context):
        return explainer_pb2.SubmitExplanationResponse(job_id=self.core.submit(self._task(request)))

    def GetExplanation(self, request, context):
        return job_to_proto(self.core.job(request.job_id))

    def CancelExplanation(self, request, context):
        return job_to_proto(self.core.cancel(request.job_id))

    def ListExplanations(self, request, context):
        jobs, token = self.core.list_jobs(request.page_size, request.page_token)
        return explainer_pb2.ListExplanationsResponse(jobs=[job_to_proto(j) for j in jobs], next_page_token=token)

    def WatchExplanation(self, request, context) -> Iterator[explainer_pb2.WatchExplanationResponse]:
        for status in self.core.watch(request.job_id, context):
            yield explainer_pb2.WatchExplanationResponse(job=job_to_proto(status))
