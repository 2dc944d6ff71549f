"""Background explanation jobs on every replica: ``SubmitExplanation`` stores the input and the
job and returns at once; a scanner takes waiting jobs from the store while this replica has a free
running slot (shared with unary and streaming explanations, :mod:`audiolime.server.admission`),
keeps each job's lease alive while it runs, and writes the one result. Records and guarantees:
:mod:`audiolime.explainer.jobstore`. An outage of the store is retried; a bug in the scanner or a
worker is logged with its traceback and raised to the next caller of :meth:`JobRunner.get`
(:mod:`audiolime.explainer.background`).

A running job stops at its next batch of masks when it is cancelled, when another attempt took it
over (this worker's lease had lapsed) or when the replica shuts down and the grace period is
running out; in the last case the lease is released so another replica resumes the job at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from audiolime import errors
from audiolime.explainer.background import Loop
from audiolime.explainer.jobstore import (
    CANCELLED,
    FAILED,
    QUEUED,
    SUCCEEDED,
    TERMINAL,
    JobRecord,
    JobStore,
    JobView,
    QueueEntry,
    ResultRecord,
    Snapshot,
    explanation_id,
    explanation_prefix,
    new_job_id,
)
from audiolime.explainer.service import Published, Task
from audiolime.inputs import AudioSource
from audiolime.method.events import Event, EventSink, Ranking
from audiolime.method.request import ValidRequest
from audiolime.server import context as callctx
from audiolime.server import metrics, tracing
from audiolime.server.admission import Admission
from audiolime.store import is_outage

log = logging.getLogger(__name__)

RunFn = Callable[[Task, EventSink, str], Published]
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000  # ListExplanations
WATCH_POLL_S = 0.5  # WatchExplanation looks at the job at least this often
PROGRESS_WRITE_S = 2.0  # progress reaches the store at most this often (and with every renewal)
EVENTS = ("submitted", "claimed", "resumed", "succeeded", "failed", "cancelled", "released", "retried", "lost",
          "discarded", "expired")


@contextmanager
def store_errors() -> Iterator[None]:
    """Failures of the object store itself (unreachable S3, a full disk) are UNAVAILABLE to callers,
    never INTERNAL: the request can be retried."""
    try:
        yield
    except errors.AudiolimeError:
        raise
    except Exception as exc:
        if is_outage(exc):
            log.warning("object store failure", extra={"error": str(exc)})
            raise errors.Unavailable("the object store is unavailable; retry later") from None
        raise


class Interrupted(errors.Cancelled):
    """A running job was told to stop: ``cancel`` (CancelExplanation), ``lost`` (another attempt
    or a result exists) or ``drain`` (this replica is shutting down)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"explanation job stopped ({reason})")
        self.reason = reason


@dataclass
class _Run:
    """A job running on this replica."""

    record: JobRecord
    attempt: int
    progress: Event = field(default_factory=lambda: Event(""))
    reason: str | None = None
    released: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def check(self) -> None:
        if self.reason is not None:
            raise Interrupted(self.reason)


class JobRunner:
    """Submits, runs and reports jobs of one replica; every replica runs one over the shared store."""

    def __init__(self, jobs: JobStore, run: RunFn, admission: Admission, worker_id: str,
                 on_failure: Callable[[BaseException], None] | None = None) -> None:
        self.jobs = jobs
        self.config = jobs.config
        self._run_fn = run
        self.admission = admission
        self.worker_id = worker_id
        self._running: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self._submit_lock = threading.Lock()
        self._draining = threading.Event()
        self._scanner = Loop("job-scanner", self._step, self.config.poll_s, on_failure)
        self._on_failure = on_failure
        self.failure: BaseException | None = None  # of a worker: a bug
        metrics.ADMISSION_REJECTED.labels(admission.component, "job")  # every series exported from the start
        for event in EVENTS:
            metrics.JOB_EVENTS.labels(event)
        for state in ("waiting", "running"):
            metrics.JOBS.labels(state)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> JobRunner:
        self._scanner.start()
        return self

    def check(self) -> None:
        """Raise what broke the scanner or a worker (a bug), if anything did."""
        self._scanner.check()
        if self.failure is not None:
            raise RuntimeError("an explanation job worker failed") from self.failure

    def drain(self, deadline: float) -> None:
        """Take no more jobs; let running ones finish until shortly before ``deadline``
        (``time.monotonic()``), then stop them at their next batch and release their leases."""
        self._draining.set()
        self._scanner.wake()
        margin = min(3.0, max(0.5, (deadline - time.monotonic()) / 4))
        self._wait_running(deadline - margin)
        with self._lock:
            runs = list(self._running.values())
        for run in runs:
            log.info("shutting down: handing the job back", extra={"job_id": run.record.job_id,
                                                                   "attempt": run.attempt})
            run.stop("drain")
        self._wait_running(deadline)
        with self._lock:
            stuck = list(self._running.values())
        for run in stuck:  # e.g. inside a long Separate call: release on its behalf
            self._release(run)

    def stop(self) -> None:
        self._scanner.stop()

    def _wait_running(self, until: float) -> None:
        while time.monotonic() < until:
            with self._lock:
                if not self._running:
                    return
            time.sleep(0.05)

    # -- the API --------------------------------------------------------------------------------
    def submit(self, task: Task) -> str:
        """Store a checked task's input once and queue it; returns the job id."""
        if self._draining.is_set():
            raise errors.Unavailable("explainer is shutting down; retry on another replica")
        with store_errors():
            self._admit()
            key = self.jobs.stage_input(task.audio.content) if task.audio.content is not None else None
            with self._submit_lock:  # exact on one replica; across replicas the bound may be passed by a few
                self._admit()
                record = self.jobs.create(new_job_id(), callctx.current_caller(), task.request, task.audio.filename,
                                          task.url_ttl_s, input_key=key, input_uri=task.audio.uri,
                                          traceparent=tracing.traceparent())
        metrics.JOB_EVENTS.labels("submitted").inc()
        log.info("job submitted", extra={"job_id": record.job_id})
        self._scanner.wake()
        return record.job_id

    def _admit(self) -> None:
        waiting = len(self.jobs.snapshot().waiting())
        if waiting >= self.config.max_queued:
            raise self.admission.refuse("job", f"explainer busy: {waiting} jobs waiting (limit "
                                               f"{self.config.max_queued}); retry later")

    def get(self, job_id: str) -> JobView:
        """The job as the caller may see it: another caller's job does not exist for them."""
        self.check()
        with store_errors():
            view = self.jobs.view(job_id)
        if view.record.owner != callctx.current_caller():
            raise self.jobs.not_found(job_id)
        with self._lock:
            run = self._running.get(job_id)
        if run is not None and view.state not in TERMINAL and view.attempt == run.attempt:
            view.progress = run.progress  # fresher than the store's copy
        return view

    def list_jobs(self, page_size: int = 0, page_token: str = "") -> tuple[list[JobView], str]:
        """The caller's jobs, newest first, a page at a time (``page_size`` 0: 50; at most 1000)."""
        self.check()
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            raise errors.InvalidInput(f"page_size must be between 0 and {MAX_PAGE_SIZE}, got {page_size}",
                                      field="page_size")
        with store_errors():
            records, token = self.jobs.owned(callctx.current_caller(), page_size or DEFAULT_PAGE_SIZE, page_token)
        views = []
        for record in records:
            try:
                views.append(self.get(record.job_id))
            except errors.NotFound:  # expired meanwhile
                continue
        return views, token

    def watch(self, job_id: str, gone: Callable[[], bool]) -> Iterator[JobView]:
        """The job now, then each change of state, attempt, progress or cancellation (checked every
        poll interval), ending with the finished job or when ``gone()`` says the caller left."""
        last = None
        while True:
            view = self.get(job_id)
            key = (view.state, view.attempt, view.progress, view.cancel_requested)
            if key != last:
                last = key
                yield view
            if view.state in TERMINAL or gone():
                return
            time.sleep(min(self.config.poll_s, WATCH_POLL_S))

    def cancel(self, job_id: str) -> JobView:
        """Queued: cancelled now. Running: stops at its next batch (on whichever replica runs it)."""
        view = self.get(job_id)
        if view.state in TERMINAL:
            return view
        with store_errors():
            self.jobs.request_cancel(job_id)
            with self._lock:
                run = self._running.get(job_id)
            if run is not None:
                run.stop("cancel")
            elif view.state == QUEUED:
                self._finish(view.record, self._cancelled(view.attempt))
        log.info("job cancel requested", extra={"job_id": job_id})
        return self.get(job_id)

    # -- taking jobs ----------------------------------------------------------------------------
    def _step(self) -> None:
        if not self._draining.is_set():
            self._scan()

    def _scan(self) -> None:
        snap = self.jobs.snapshot()
        waiting = snap.waiting()
        metrics.JOBS.labels("waiting").set(len(waiting))
        metrics.JOBS.labels("running").set(len(snap.entries) - len(waiting))
        for entry in snap.claimable():
            with self._lock:
                if entry.job_id in self._running:
                    continue
            slot = self.admission.try_run()
            if slot is None:
                return
            taken = None
            try:
                taken = self._take(entry, snap)
            finally:
                if taken is None:
                    slot.release()
            if taken is not None:
                record, attempt = taken
                run = _Run(record, attempt)
                if self._draining.is_set():  # shutdown began while claiming: hand it straight back
                    self._release(run)
                    slot.release()
                    return
                with self._lock:
                    self._running[record.job_id] = run
                threading.Thread(target=self._work, args=(run, slot), name=f"job-{record.job_id[:8]}",
                                 daemon=True).start()

    def _take(self, entry: QueueEntry, snap: Snapshot) -> tuple[JobRecord, int] | None:
        """Claim the next attempt of a waiting job, or settle it (finished, cancelled, abandoned)."""
        job_id = entry.job_id
        try:
            record = self.jobs.load(job_id)
        except errors.NotFound:
            if snap.now - entry.modified > self.jobs.lease_s:
                self.jobs.forget_submission(entry)
            return None
        result = self.jobs.result(job_id)
        if result is not None:  # finished, but its tidying up was interrupted
            self.jobs.finalize(job_id, entry.key, result)
            return None
        claims = snap.claims.get(job_id, [])
        last = max((c.attempt for c in claims), default=0)
        lost = sum(1 for c in claims if c.counts)
        if self.jobs.cancel_requested(job_id):
            self._finish(record, self._cancelled(last))
            return None
        if lost >= self.config.max_attempts:
            err = errors.Unavailable(f"the explanation was interrupted {lost} times (workers killed or out of "
                                     f"memory, or backends unavailable); giving up")
            self._finish(record, ResultRecord(FAILED, last, time.time(), error_code=err.code, error_message=str(err)))
            return None
        if not self.jobs.claim(job_id, last + 1, self.worker_id):
            return None  # another replica was faster
        metrics.JOB_EVENTS.labels("claimed" if last == 0 else "resumed").inc()
        log.info("job claimed", extra={"job_id": job_id, "attempt": last + 1, "worker": self.worker_id})
        return record, last + 1

    # -- running one ----------------------------------------------------------------------------
    def _work(self, run: _Run, slot) -> None:
        job_id = run.record.job_id
        tokens = (callctx.set_request_id(job_id), callctx.set_caller(run.record.owner))
        beat = threading.Thread(target=self._heartbeat, args=(run,), name=f"lease-{job_id[:8]}", daemon=True)
        beat.start()
        try:
            with tracing.linked("job", run.record.traceparent, {"audiolime.job_id": job_id,
                                                               "audiolime.attempt": run.attempt}):
                result = self._execute(run)
            if run.reason in ("drain", "lost") and result.state != SUCCEEDED:
                raise Interrupted(run.reason)  # a failure caused by stopping is not the job's outcome
            if result.error_code == errors.Unavailable.code and self._retry(run, result):
                return
            if self._finish(run.record, result):
                metrics.JOB_EVENTS.labels(result.state.lower()).inc()
                log.info("job finished", extra={"job_id": job_id, "attempt": run.attempt, "state": result.state,
                                                "error_code": result.error_code})
            elif result.explanation_id:  # another attempt's result is the job's: drop ours
                self.jobs.store.delete_prefix(explanation_prefix(result.explanation_id))
                metrics.JOB_EVENTS.labels("discarded").inc()
                log.warning("job already finished by another attempt; discarded this one's artifacts",
                            extra={"job_id": job_id, "attempt": run.attempt})
        except Interrupted as exc:
            if exc.reason == "drain":
                self._release(run)
            else:
                metrics.JOB_EVENTS.labels("lost").inc()
                log.warning("job taken over by another attempt; stopped", extra={"job_id": job_id,
                                                                               "attempt": run.attempt})
        except Exception as exc:
            if not is_outage(exc):  # a bug: surfaced to callers (check), the lease lapses
                self._failed(exc)
                log.exception("job worker failed: a bug", extra={"job_id": job_id, "attempt": run.attempt})
                raise
            log.warning("the store failed while finishing the job; the lease will lapse and another attempt "
                        "resume it", extra={"job_id": job_id, "attempt": run.attempt, "error": str(exc)})
        finally:
            run.done.set()
            beat.join(timeout=5)
            slot.release()
            with self._lock:
                self._running.pop(job_id, None)
            callctx.reset_request_id(tokens[0])
            callctx.reset_caller(tokens[1])
            self._scanner.wake()

    def _execute(self, run: _Run) -> ResultRecord:
        record = run.record
        eid = explanation_id(record.job_id, run.attempt)

        def sink(event: Event | Ranking) -> None:
            if isinstance(event, Event):  # a job reports progress counts; its ranking is its result's
                run.progress = event
            run.check()

        try:
            if record.input_key:
                audio = AudioSource(content=self.jobs.input(record), filename=record.filename)
            else:
                audio = AudioSource(uri=record.input_uri, filename=record.filename)
            run.check()
            # the request passed ExplainRequest.validate when it was submitted
            published = self._run_fn(Task(ValidRequest(record.request), audio, record.url_ttl_s), sink, eid)
        except Interrupted as exc:
            if exc.reason == "cancel":
                return self._cancelled(run.attempt)
            raise
        except errors.AudiolimeError as exc:
            return ResultRecord(FAILED, run.attempt, time.time(), error_code=exc.code, error_message=str(exc),
                                worker=self.worker_id)
        except Exception:  # noqa: BLE001 - the job's outcome: INTERNAL, details only in the log
            log.exception("job failed", extra={"job_id": record.job_id})
            return ResultRecord(FAILED, run.attempt, time.time(), error_code=errors.INTERNAL,
                                error_message=f"internal error (job {record.job_id})", worker=self.worker_id)
        return ResultRecord(SUCCEEDED, run.attempt, time.time(), published.explanation_id,
                            published.separator_cache_hit, worker=self.worker_id)

    def _heartbeat(self, run: _Run) -> None:
        """Renew the lease (every lease/3, and with progress at most every few seconds) and watch
        for cancellation and for a later attempt, every poll interval."""
        job_id, cfg = run.record.job_id, self.config
        renew_s = cfg.lease_s / 3
        last_ok, written = time.monotonic(), Event("")
        while not run.done.wait(cfg.poll_s):
            try:
                if self.jobs.superseded(job_id, run.attempt):
                    run.stop("lost")
                    return
                if self.jobs.cancel_requested(job_id):
                    run.stop("cancel")
                since = time.monotonic() - last_ok
                if since >= renew_s or (run.progress != written and since >= min(renew_s, PROGRESS_WRITE_S)):
                    progress = run.progress
                    self.jobs.renew(job_id, run.attempt, self.worker_id, progress)
                    last_ok, written = time.monotonic(), progress
            except Exception as exc:
                if not is_outage(exc):
                    self._failed(exc)
                    raise
                log.warning("job lease renewal failed", extra={"job_id": job_id, "error": str(exc)})
                if time.monotonic() - last_ok > cfg.lease_s:
                    run.stop("lost")
                    return

    def _failed(self, exc: BaseException) -> None:
        self.failure = exc
        if self._on_failure is not None:
            self._on_failure(exc)

    # -- endings --------------------------------------------------------------------------------
    def _finish(self, record: JobRecord, result: ResultRecord) -> bool:
        return self.jobs.finish(record, result)

    def _retry(self, run: _Run, result: ResultRecord) -> bool:
        """A backend stayed unavailable past its retry budget: hand the job back to be retried after
        a lease (by any replica) unless its attempts are used up."""
        used = sum(1 for c in self.jobs.claims(run.record.job_id) if c.counts)
        if used >= self.config.max_attempts:
            return False
        self.jobs.release(run.record.job_id, run.attempt, retry=True)
        run.released = True
        metrics.JOB_EVENTS.labels("retried").inc()
        log.warning("backend unavailable: job handed back for a later attempt",
                    extra={"job_id": run.record.job_id, "attempt": run.attempt, "error": result.error_message})
        return True

    def _cancelled(self, attempt: int) -> ResultRecord:
        return ResultRecord(CANCELLED, attempt, time.time(), error_code=errors.Cancelled.code,
                            error_message="cancelled by CancelExplanation", worker=self.worker_id)

    def _release(self, run: _Run) -> None:
        with self._lock:
            if run.released:
                return
            run.released = True
        try:
            self.jobs.release(run.record.job_id, run.attempt)
            metrics.JOB_EVENTS.labels("released").inc()
            log.info("job released for another replica", extra={"job_id": run.record.job_id,
                                                                 "attempt": run.attempt})
        except Exception as exc:
            if not is_outage(exc):
                raise
            log.warning("could not release the job's lease; it lapses instead",
                        extra={"job_id": run.record.job_id, "error": str(exc)})
