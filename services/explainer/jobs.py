"""Background explanation jobs: ``SubmitExplanation`` returns at once, ``GetExplanation`` reports
state, progress (from the explanation's events) and the result or error."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from audiolime import errors
from audiolime.explain.events import Event, EventSink
from audiolime.explainer.service import ExplainOutcome, Job

log = logging.getLogger(__name__)

QUEUED, RUNNING, SUCCEEDED, FAILED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED"


@dataclass
class JobState:
    job_id: str
    state: str = QUEUED
    progress: Event = Event("")
    outcome: ExplainOutcome | None = None
    error: BaseException | None = None
    finished_at: float | None = None


class JobTable:
    """Submitted explanations run on ``workers`` threads; at most ``max_jobs`` are remembered.

    Finished jobs are forgotten after ``ttl_s`` (or earlier, oldest first, when the table is
    full); when every slot holds an unfinished job, ``submit`` raises ``ResourceExhausted``."""

    def __init__(self, run: Callable[[Job, EventSink, str], ExplainOutcome], workers: int = 2,
                 max_jobs: int = 64, ttl_s: float = 3600.0) -> None:
        if workers < 1 or max_jobs < 1:
            raise errors.InvalidInput("job workers and max jobs must be >= 1")
        self._run = run
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="job")
        self._max = max_jobs
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, JobState] = OrderedDict()

    def _evict(self) -> None:
        now = time.time()
        for jid in [j.job_id for j in self._jobs.values() if j.finished_at and now - j.finished_at > self._ttl]:
            del self._jobs[jid]
        while len(self._jobs) >= self._max:
            finished = [j for j in self._jobs.values() if j.finished_at]
            if not finished:
                raise errors.ResourceExhausted(f"{self._max} explanation jobs are queued or running; retry later")
            del self._jobs[min(finished, key=lambda j: j.finished_at).job_id]

    def submit(self, job: Job, validate: Callable[[Job], object] | None = None) -> str:
        if validate:
            validate(job)  # malformed requests fail at submission, not later
        state = JobState(uuid.uuid4().hex)
        with self._lock:
            self._evict()
            self._jobs[state.job_id] = state
        self._pool.submit(contextvars.copy_context().run, self._work, state, job)
        return state.job_id

    def _work(self, state: JobState, job: Job) -> None:
        def progress(event: Event) -> None:
            with self._lock:
                state.progress = event

        with self._lock:
            state.state = RUNNING
        try:
            outcome = self._run(job, progress, state.job_id)
        except BaseException as exc:  # noqa: BLE001 - reported through GetExplanation
            if not isinstance(exc, errors.AudiolimeError):
                log.exception("job failed", extra={"job_id": state.job_id})
            with self._lock:
                state.state, state.error, state.finished_at = FAILED, exc, time.time()
            return
        with self._lock:
            state.state, state.outcome, state.finished_at = SUCCEEDED, outcome, time.time()

    def get(self, job_id: str) -> JobState:
        with self._lock:
            state = self._jobs.get(job_id)
            if state is None:
                raise errors.NotFound(f"no explanation job {job_id!r} (unknown, or finished more than "
                                      f"{self._ttl:g} s ago)")
            return replace(state)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
