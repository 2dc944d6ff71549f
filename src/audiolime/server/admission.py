"""Admission control shared by the separator and the explainer: at most ``max_concurrency`` units
of work *running* and ``max_queue`` *waiting*; anything beyond fails at once with
``ResourceExhausted`` (gRPC RESOURCE_EXHAUSTED, with "retry later" in the message) instead of
queueing without bound, so memory stays bounded under load.

A request takes a *place* on arrival (it counts as waiting: it holds its request, and may decode
or look up a cache) and *runs* once it gets a slot (:meth:`Place.run`). Background work that must
not wait (the explainer's job workers) asks for a slot with :meth:`Admission.try_run`. The counts
go to a ``state``-labelled gauge (``running``/``waiting``); refusals are counted in
``audiolime_admission_rejected_total{component,kind}``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import Gauge

from audiolime.errors import Cancelled, ResourceExhausted, Unavailable
from audiolime.server import metrics

WAITING, RUNNING, DONE = "waiting", "running", "done"


class Admission:
    """Bounded running and waiting work; thread-safe."""

    def __init__(self, max_concurrency: int, max_queue: int, gauge: Gauge | None = None,
                 component: str = "separator", what: str = "separations") -> None:
        if max_concurrency < 1 or max_queue < 0:
            raise ValueError("max_concurrency must be >= 1 and max_queue >= 0")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.component = component
        self.what = what
        self._gauge = gauge if gauge is not None else metrics.SEPARATIONS
        self._slots = threading.Semaphore(max_concurrency)
        self._lock = threading.Lock()
        self._closed = False
        self.running = 0
        self.waiting = 0
        self._export()
        metrics.ADMISSION_REJECTED.labels(component, "request")  # exported as 0 before the first refusal

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
        return ResourceExhausted(message or f"{self.component} busy: {self.max_concurrency} {self.what} running "
                                            f"and {self.max_queue} queued; retry later")

    @contextmanager
    def place(self) -> Iterator[Place]:
        """Reserve a place (waiting) or fail at once with ResourceExhausted (Unavailable once closed)."""
        with self._lock:
            if self._closed:
                raise Unavailable(f"{self.component} is shutting down; retry on another replica")
            if self.running + self.waiting >= self.max_concurrency + self.max_queue:
                raise self.refuse()
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

    @contextmanager
    def run(self, stop: Callable[[], bool] | None = None, poll_s: float = 0.1) -> Iterator[None]:
        """Wait for a slot, then hold it. While waiting, ``stop()`` (e.g. the caller went away) is
        polled every ``poll_s``: True gives the place up with ``Cancelled``; so does a closed
        admission, with ``Unavailable``."""
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
        try:
            yield
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
