"""Admission control shared by the separator and the explainer: at most ``max_concurrent`` units
of work *running* and ``max_queued`` *waiting*; anything beyond fails at once with
``ResourceExhausted`` (gRPC RESOURCE_EXHAUSTED, with "retry later" in the message) instead of
queueing without bound, so memory stays bounded under load.

A request takes a *place* on arrival (it counts as waiting: it holds its request, and may decode
or look up a cache) and *runs* once it gets a slot (:meth:`Place.run`). Background work that must
not wait (the explainer's job workers) asks for a slot with :meth:`Admission.try_run`. The counts
go to a ``state``-labelled gauge (``running``/``waiting``); refusals are counted in
``audiolime_admission_rejected_total{component,kind}``.

Deadline-aware: admission remembers how long its last runs took (the median of the last
:data:`HISTORY` completed runs, once :data:`MIN_HISTORY` are known). A caller whose deadline
leaves less than that typical run is refused at once when it would have to wait, and a waiting
caller gives its place up as soon as its deadline leaves less than that (``kind="deadline"``):
it learns that it is too late while it can still retry elsewhere, instead of holding a place
until its deadline passes. A caller that finds a free slot always runs (a cache hit is fast).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import Gauge

from audiolime.errors import Cancelled, ResourceExhausted, Unavailable
from audiolime.server import context as callctx
from audiolime.server import metrics

HISTORY = 20  # completed runs the typical run time is taken from
MIN_HISTORY = 3  # below this, no deadline-based refusal

WAITING, RUNNING, DONE = "waiting", "running", "done"


class Admission:
    """Bounded running and waiting work; thread-safe."""

    def __init__(self, max_concurrent: int, max_queued: int, gauge: Gauge | None = None,
                 component: str = "separator", what: str = "separations",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_concurrent < 1 or max_queued < 0:
            raise ValueError("max_concurrent must be >= 1 and max_queued >= 0")
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.component = component
        self.what = what
        self._gauge = gauge if gauge is not None else metrics.SEPARATIONS
        self._slots = threading.Semaphore(max_concurrent)
        self._lock = threading.Lock()
        self._closed = False
        self.running = 0
        self.waiting = 0
        self.clock = clock  # measures run times (injected by tests)
        self._durations: deque[float] = deque(maxlen=HISTORY)
        self._export()
        for kind in ("request", "deadline"):  # exported as 0 before the first refusal
            metrics.ADMISSION_REJECTED.labels(component, kind)

    def _export(self) -> None:
        self._gauge.labels("running").set(self.running)
        self._gauge.labels("waiting").set(self.waiting)

    def _move(self, running: int = 0, waiting: int = 0) -> None:
        with self._lock:
            self.running += running
            self.waiting += waiting
            self._export()

    def refuse(self, kind: str = "request", message: str | None = None) -> ResourceExhausted:
        """The error (and the metric) of a refusal."""
        metrics.ADMISSION_REJECTED.labels(self.component, kind).inc()
        return ResourceExhausted(message or f"{self.component} busy: {self.max_concurrent} {self.what} running "
                                            f"and {self.max_queued} queued; retry later")

    def typical_run_s(self) -> float | None:
        """The median time of the last completed runs (None until :data:`MIN_HISTORY` are known)."""
        with self._lock:
            if len(self._durations) < MIN_HISTORY:
                return None
            return statistics.median(self._durations)

    def _record(self, seconds: float) -> None:
        with self._lock:
            self._durations.append(seconds)

    def too_late(self) -> str | None:
        """Why a caller may not wait: its deadline leaves less than a typical run (None: it may).
        Takes the lock: call it without holding it."""
        left, typical = callctx.remaining(), self.typical_run_s()
        if left is None or typical is None or left >= typical:
            return None
        return (f"{self.component} busy: {self.max_concurrent} {self.what} running and {max(left, 0.0):.1f} s "
                f"left before the caller's deadline, less than a typical run ({typical:.1f} s); retry later "
                "or with a longer deadline")

    @contextmanager
    def place(self) -> Iterator[Place]:
        """Reserve a place (waiting) or fail at once with ResourceExhausted (Unavailable once closed),
        also when every slot is busy and the caller's deadline leaves less than a typical run."""
        late = self.too_late()  # what a wait would mean, decided before the lock
        with self._lock:
            if self._closed:
                raise Unavailable(f"{self.component} is shutting down; retry on another replica")
            if self.running + self.waiting >= self.max_concurrent + self.max_queued:
                raise self.refuse()
            if late is not None and self.running + self.waiting >= self.max_concurrent:
                raise self.refuse("deadline", late)
            self.waiting += 1
            self._export()
        ticket = Place(self)
        try:
            yield ticket
        finally:
            ticket.close()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """A place and a run: for callers that always run."""
        with self.place() as p, p.run():
            yield

    def try_run(self) -> Slot | None:
        """A running slot now, without waiting and without taking a place; None when all are busy
        (or after :meth:`close`). For background work that can come back later."""
        if self._closed or not self._slots.acquire(blocking=False):
            return None
        self._move(running=1)
        return Slot(self)

    def close(self) -> None:
        """Refuse new places (Unavailable) and wake waiting ones, which give up: the server is
        shutting down, they would not finish within the grace period; running work continues."""
        with self._lock:
            self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed


class Slot:
    """A running slot of :meth:`Admission.try_run`; ``release()`` once (idempotent)."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._held = True
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if not self._held:
                return
            self._held = False
        self._admission._move(running=-1)
        self._admission._slots.release()


class Place:
    """A reserved place in :class:`Admission`; ``run()`` waits for a slot (once)."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._state = WAITING
        self.ran = False
        self._taken = admission.clock()
        self.waited_s = 0.0  # from the place to its slot (the request's queue time), once it runs

    @contextmanager
    def run(self, stop: Callable[[], bool] | None = None, poll_s: float = 0.1) -> Iterator[None]:
        """Wait for a slot, then hold it. While waiting, ``stop()`` (e.g. the caller went away) is
        polled every ``poll_s``: True gives the place up with ``Cancelled``; so does a closed
        admission, with ``Unavailable``, and a caller whose deadline now leaves less than a typical
        run, with ``ResourceExhausted``. A run that completes is remembered for the typical run time."""
        adm = self._admission
        if self.ran:
            raise RuntimeError("a place runs once")
        while not adm._slots.acquire(timeout=poll_s):
            if adm.closed:
                self.close()
                raise Unavailable(f"{adm.component} is shutting down; retry on another replica")
            if stop is not None and stop():
                self.close()
                raise Cancelled("the caller went away while waiting")
            if (late := adm.too_late()) is not None:
                self.close()
                raise adm.refuse("deadline", late)
        gone = stop is not None and stop()  # the caller may have left just as the slot came free
        with adm._lock:
            if not gone and not adm._closed and self._state == WAITING:
                self._state = RUNNING
                self.ran = True
                adm.running += 1
                adm.waiting -= 1
                adm._export()
        if not self.ran:
            adm._slots.release()
            self.close()
            if adm.closed and not gone:
                raise Unavailable(f"{adm.component} is shutting down; retry on another replica")
            raise Cancelled("the caller went away while waiting")
        started = adm.clock()
        self.waited_s = started - self._taken
        try:
            yield
            adm._record(adm.clock() - started)
        finally:
            with adm._lock:
                self._state = DONE
                adm.running -= 1
                adm._export()
            adm._slots.release()

    def close(self) -> None:
        """Give the place back if it never ran (idempotent; a running place ends with its run)."""
        adm = self._admission
        with adm._lock:
            if self._state == WAITING:
                self._state = DONE
                adm.waiting -= 1
                adm._export()


class MemoryBudget:
    """Bytes of running work on this replica: each unit reserves what it predicts (from the audio
    header, before decoding) and the sum stays at most ``budget``; beyond, ``ResourceExhausted`` at
    once (or after ``wait_s``, for background work); more than the whole budget by itself is
    ``InvalidInput`` (it could never run). Thread-safe; exported as a gauge."""

    def __init__(self, budget: int, gauge: Gauge | None = None, component: str = "explainer") -> None:
        if budget < 1:
            raise ValueError("the memory budget must be >= 1 byte")
        self.budget = budget
        self.component = component
        self.reserved = 0
        self._cond = threading.Condition()
        self._gauge = gauge if gauge is not None else metrics.MEMORY_RESERVED
        self._gauge.set(0)
        metrics.ADMISSION_REJECTED.labels(component, "memory")

    @contextmanager
    def reserve(self, nbytes: int, what: str, wait_s: float = 0.0) -> Iterator[None]:
        from audiolime.errors import InvalidInput

        mib = 1 << 20
        if nbytes > self.budget:
            raise InvalidInput(f"{what} needs about {nbytes / mib:.0f} MiB of memory, more than this replica's "
                               f"budget of {self.budget / mib:.0f} MiB (--memory-budget): shorten the audio or "
                               f"lower its sample rate or segments")
        with self._cond:
            if not self._cond.wait_for(lambda: self.reserved + nbytes <= self.budget, timeout=wait_s):
                metrics.ADMISSION_REJECTED.labels(self.component, "memory").inc()
                raise ResourceExhausted(f"{self.component} busy: {what} needs about {nbytes / mib:.0f} MiB and "
                                        f"{self.reserved / mib:.0f} of {self.budget / mib:.0f} MiB are in use "
                                        f"(--memory-budget); retry later")
            self.reserved += nbytes
            self._gauge.set(self.reserved)
        try:
            yield
        finally:
            with self._cond:
                self.reserved -= nbytes
                self._gauge.set(self.reserved)
                self._cond.notify_all()
