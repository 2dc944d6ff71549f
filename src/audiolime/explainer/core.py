"""What each ``audiolime.v1.Explainer`` RPC does, free of gRPC (the servicer only translates).

- ``Explain``/``ExplainStream`` take a place in the replica's admission (RESOURCE_EXHAUSTED beyond
  ``--max-concurrent`` running + ``--max-queued`` waiting, before any work), run once a slot is
  free and stop at their next batch of masks when the caller cancels or its deadline passes; a
  stream runs in a worker thread whose events the caller's thread yields. Their results are
  deleted after the job TTL (never before their URLs expire).
- Jobs (``SubmitExplanation``/``GetExplanation``/``CancelExplanation``) are the job runner's
  (:mod:`audiolime.explainer.jobs`); a finished job's result is presented with fresh URLs.
- Expired jobs and results are swept by one background loop per replica.

A request is checked once (:meth:`ExplainerCore.check`) before it takes a place or is stored.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from audiolime import errors
from audiolime.explainer.background import Loop
from audiolime.explainer.cache import entry_key
from audiolime.explainer.jobs import JobRunner
from audiolime.explainer.jobstore import SUCCEEDED, JobStore, JobView, explanation_prefix
from audiolime.explainer.service import DEFAULT_URL_TTL_S, ExplainerService, Published, Task
from audiolime.inputs import AudioSource
from audiolime.method.events import Event, EventSink, Ranking
from audiolime.method.request import ExplainRequest
from audiolime.server import context as callctx
from audiolime.server import metrics
from audiolime.server.admission import Admission
from audiolime.store import is_outage

log = logging.getLogger(__name__)


class Caller(Protocol):
    """The caller of one call, as far as the core cares: still there? (``grpc.ServicerContext``
    is one; its deadline travels in the request context.)"""

    def is_active(self) -> bool: ...


def gone(caller: Caller) -> Callable[[], bool]:
    """Whether the caller cancelled or its deadline passed."""
    def check() -> bool:
        left = callctx.remaining()
        return not caller.is_active() or (left is not None and left <= 0)
    return check


def watching(caller: Caller, sink: EventSink | None = None) -> EventSink:
    """An event sink that stops the explanation at its next event (the engine emits one per batch
    of masks) once the caller cancelled or its deadline passed."""
    def on_event(event: Event | Ranking) -> None:
        left = callctx.remaining()
        if left is not None and left <= 0:
            raise errors.DeadlineExceeded("the caller's deadline passed")
        if not caller.is_active():
            raise errors.Cancelled("the caller cancelled")
        if sink is not None:
            sink(event)
    return on_event


@dataclass(frozen=True)
class JobStatus:
    """A job as GetExplanation/CancelExplanation report it, with its result when it succeeded."""

    view: JobView
    result: Published | None


_DONE = object()


class ExplainerCore:
    """The explainer's API on one replica."""

    def __init__(self, service: ExplainerService, jobs: JobRunner, admission: Admission,
                 on_failure: Callable[[BaseException], None] | None = None) -> None:
        self.service = service
        self.jobs = jobs
        self.records: JobStore = jobs.jobs
        self.admission = admission
        self._sweeper = Loop("expiry-sweeper", self._sweep, self.records.config.sweep_s, on_failure)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> ExplainerCore:
        self.jobs.start()
        self._sweeper.start()
        return self

    def drain(self, deadline: float) -> None:
        """Waiting calls give up (UNAVAILABLE: retry elsewhere); running ones and jobs go on until
        shortly before ``deadline`` (jobs are then handed to another replica)."""
        self.admission.close()
        self.jobs.drain(deadline)

    def stop(self) -> None:
        self._sweeper.stop()
        self.jobs.stop()

    def _sweep(self) -> None:
        expired = self.records.sweep()
        if expired:
            metrics.JOB_EVENTS.labels("expired").inc(expired)

    # -- the API --------------------------------------------------------------------------------
    def check(self, request: ExplainRequest, audio: AudioSource, url_ttl_s: int = 0) -> Task:
        """The one check of a request (bad requests are INVALID_ARGUMENT even when busy)."""
        return self.service.check(request, audio, url_ttl_s)

    def explain(self, task: Task, caller: Caller) -> Published:
        with self.admission.place() as place, place.run(stop=gone(caller)):
            published = self.service.run(task, watching(caller), cached=True, queued_s=place.waited_s)
        self._expire_later(published, task)
        return published

    def explain_stream(self, task: Task, caller: Caller) -> Iterator[Event | Ranking | Published]:
        """Progress events and each round's ranking, then the result; the place is taken before
        the first event."""
        events: queue.Queue = queue.Queue()
        outcome: dict = {}
        with self.admission.place() as place:  # busy: RESOURCE_EXHAUSTED before the stream starts

            def run() -> None:
                try:
                    with place.run(stop=gone(caller)):
                        outcome["result"] = self.service.run(task, watching(caller, events.put), cached=True,
                                                             queued_s=place.waited_s)
                    self._expire_later(outcome["result"], task)
                except (errors.Cancelled, errors.DeadlineExceeded) as exc:  # nobody is listening any more
                    log.info("explanation stopped", extra={"reason": str(exc)})
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    outcome["error"] = exc
                finally:
                    events.put(_DONE)

            worker = threading.Thread(target=contextvars.copy_context().run, args=(run,), name="explain-stream",
                                      daemon=True)
            worker.start()
            while (item := events.get()) is not _DONE:
                yield item
        if "error" in outcome:
            raise outcome["error"]
        if "result" in outcome:
            yield outcome["result"]

    def submit(self, task: Task) -> str:
        return self.jobs.submit(task)

    def job(self, job_id: str) -> JobStatus:
        return self._status(self.jobs.get(job_id))

    def cancel(self, job_id: str) -> JobStatus:
        return self._status(self.jobs.cancel(job_id))

    def list_jobs(self, page_size: int = 0, page_token: str = "") -> tuple[list[JobStatus], str]:
        """The caller's jobs, newest first, without results (cheap: no manifest is read or signed)."""
        views, token = self.jobs.list_jobs(page_size, page_token)
        return [JobStatus(view, None) for view in views], token

    def watch(self, job_id: str, caller: Caller) -> Iterator[JobStatus]:
        """The job's state as it changes, the finished job last (with its result when SUCCEEDED)."""
        for view in self.jobs.watch(job_id, gone(caller)):
            yield self._status(view)

    def _status(self, view: JobView) -> JobStatus:
        if view.state != SUCCEEDED or view.result is None:
            return JobStatus(view, None)
        r = view.result
        try:
            published = self.service.present(r.explanation_id, view.record.url_ttl_s or DEFAULT_URL_TTL_S,
                                             r.separator_cache_hit, view.expires_at)
        except errors.NotFound:  # expired between reading the result and its manifest
            raise self.records.not_found(view.job_id) from None
        return JobStatus(view, published)

    def _expire_later(self, published: Published, task: Task) -> None:
        """A unary/stream result is deleted after the job TTL, but never before its URLs expire; its
        cache entry (if any) is written after that and deleted with it (pointer first). A cache hit
        postpones the cached explanation's deletion the same way (its URLs are valid ``ttl_s``), or
        fails UNAVAILABLE: its URLs must not outlive the objects."""
        eid = published.explanation_id
        when = self.records.clock() + max(self.records.ttl_s, task.ttl_s)
        pointer = [entry_key(published.cache_key)] if published.cache_key else []
        prefixes = [*pointer, explanation_prefix(eid)]
        try:
            if published.cache_hit:
                self.records.postpone(published.kept_until, when, eid, prefixes)
            else:
                self.records.expire_at(when, eid, prefixes)
            self.service.remember(published, when)
        except Exception as exc:
            if not is_outage(exc):
                raise
            if published.cache_hit:
                raise errors.Unavailable(f"the object store is unavailable: {exc}") from None
            log.warning("could not schedule the result's expiry", extra={"explanation_id": eid, "error": str(exc)})
