"""Server-side dynamic batching (TF Serving's ``BasicBatchScheduler`` semantics, in Python).

Concurrent requests are queued; ``num_batch_threads`` threads each take the oldest requests
that fit into one batch and run them as a single model call (inputs concatenated along axis 0,
outputs split back per request). A thread runs a batch as soon as it is full
(``execution_batch_size`` rows) or ``batch_timeout_s`` after its oldest request was queued,
whichever comes first; with timeout 0 it takes whatever is queued at once, so batches still
form while the threads are busy. Requests larger than a batch are split into chunks (or
rejected when large-batch splitting is off); more than ``queue_capacity`` queued rows ->
:class:`audiolime.errors.ResourceExhausted` ("queue full"). Queued work whose caller's deadline
has passed or whose caller cancelled is dropped when a batch is formed, never run (the caller
has stopped waiting: running it would only delay the callers still waiting), and a caller stops
waiting at its deadline (DEADLINE_EXCEEDED) or when it goes away (CANCELLED). With ``allowed_batch_sizes`` a
batch is padded (copies of its first row) to the next allowed size and the padding dropped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from audiolime import errors
from audiolime.server import context as callctx
from audiolime.server import metrics
from audiolime.tagger.config import BatchingOptions

log = logging.getLogger(__name__)

Arrays = Mapping[str, np.ndarray]
RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def batch_size_of(inputs: Arrays) -> int:
    return int(next(iter(inputs.values())).shape[0])


def concat(parts: list[Arrays]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return dict(parts[0])
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


class _Task:
    __slots__ = ("inputs", "size", "enqueued", "future", "deadline", "active")

    def __init__(self, inputs: Arrays, size: int, deadline: float | None = None,
                 active: Callable[[], bool] | None = None) -> None:
        self.inputs = inputs
        self.size = size
        self.enqueued = time.monotonic()
        self.future: Future = Future()
        self.deadline = deadline  # monotonic; None: none
        self.active = active

    def gone(self, now: float) -> str | None:
        """Why nobody waits for this task any more (None: somebody does)."""
        if self.deadline is not None and now >= self.deadline:
            return "deadline"
        if self.active is not None and not self.active():
            return "cancelled"
        if self.future.done():
            return "abandoned"
        return None


class Batcher:
    """Merges concurrent :meth:`run` calls on one model signature into batched ``fn`` calls."""

    def __init__(self, fn: RunFn, options: BatchingOptions, model: str, name: str = "") -> None:
        self.fn = fn
        self.options = options
        self.model = model
        self._queue: deque[_Task] = deque()
        self._queued = 0  # rows waiting
        self._cond = threading.Condition()
        self._closed = False
        self._batch_size = metrics.TAGGER_BATCH_SIZE.labels(model)
        self._queue_delay = metrics.TAGGER_QUEUE_DELAY.labels(model)
        self._dropped = metrics.TAGGER_DROPPED
        for reason in ("deadline", "cancelled"):  # exported as 0 from the start
            self._dropped.labels(model, reason)
        self._threads = [threading.Thread(target=self._loop, name=f"batch-{model}-{name}-{i}", daemon=True)
                         for i in range(options.num_batch_threads)]
        for t in self._threads:
            t.start()

    def run(self, inputs: Arrays) -> dict[str, np.ndarray]:
        """Outputs of ``fn`` for ``inputs`` (rows along axis 0), computed inside a shared batch."""
        n = batch_size_of(inputs)
        limit = self.options.execution_batch_size
        if n == 0:
            raise errors.InvalidInput("the request has an empty batch (0 rows)")
        if n > limit and not self.options.enable_large_batch_splitting:
            raise errors.InvalidInput(f"batch of {n} exceeds max_batch_size {limit} "
                                      "(large-batch splitting is off in the batching parameters)")
        if n > self.options.queue_capacity:
            raise errors.InvalidInput(f"batch of {n} exceeds the batching queue capacity "
                                      f"({self.options.queue_capacity} = max_enqueued_batches x max_batch_size)")
        left = callctx.remaining()
        deadline = None if left is None else time.monotonic() + left
        active = callctx.current_active()
        tasks = [_Task({k: v[i:i + limit] for k, v in inputs.items()}, min(limit, n - i), deadline, active)
                 for i in range(0, n, limit)]
        with self._cond:
            if self._closed:
                raise errors.Unavailable("the tagger is shutting down")
            if self._queued + n > self.options.queue_capacity:
                raise errors.ResourceExhausted(
                    f"queue full: {self._queued} rows are waiting for model {self.model!r} "
                    f"(capacity {self.options.queue_capacity}); retry later")
            self._queue.extend(tasks)
            self._queued += n
            self._cond.notify_all()
        return concat([self._wait(t) for t in tasks])

    def _wait(self, task: _Task, poll_s: float = 0.5) -> dict[str, np.ndarray]:
        """The task's outputs; gives up at the caller's deadline or when the caller goes away
        (the task, still queued, is then dropped instead of run)."""
        while True:
            timeout = poll_s if task.deadline is None else min(poll_s, max(0.0, task.deadline - time.monotonic()))
            try:
                return task.future.result(timeout=timeout)
            except FutureTimeout:
                reason = task.gone(time.monotonic())
                if reason is None:
                    continue
                task.future.cancel()  # still queued: dropped when a batch is formed
                if reason == "deadline":
                    raise errors.DeadlineExceeded(f"model {self.model!r}: the caller's deadline passed while "
                                                  f"the request waited for its batch") from None
                raise errors.Cancelled(f"model {self.model!r}: the caller went away") from None

    def _take(self) -> list[_Task] | None:
        """Block until a batch is due; pop it (None when closed and drained)."""
        limit = self.options.execution_batch_size
        timeout = self.options.batch_timeout_s
        with self._cond:
            while True:
                batch = self._due(limit, timeout)
                if batch is None or batch:
                    return batch

    def _due(self, limit: int, timeout: float) -> list[_Task] | None:
        """With the lock held: wait for a due batch and pop it, without the tasks nobody waits
        for (so possibly empty); None when closed and drained."""
        while True:
            if self._queue:
                if self._queued >= limit or self._closed:
                    break
                remaining = self._queue[0].enqueued + timeout - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            elif self._closed:
                return None
            else:
                self._cond.wait()
        batch, total, now = [], 0, time.monotonic()
        while self._queue and total + self._queue[0].size <= limit:
            task = self._queue.popleft()
            reason = task.gone(now)
            if reason is not None:  # nobody waits for it: drop it, never run it
                self._queued -= task.size
                self._dropped.labels(self.model, reason).inc()
                task.future.cancel()
                continue
            batch.append(task)
            total += task.size
        self._queued -= total
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            now = time.monotonic()
            for task in batch:
                self._queue_delay.observe(now - task.enqueued)
            self._execute(batch)

    def _execute(self, batch: list[_Task]) -> None:
        try:
            inputs = concat([t.inputs for t in batch])
            total = batch_size_of(inputs)
            padded = self._pad_to(total)
            if padded > total:
                inputs = {k: np.concatenate([v, np.repeat(v[:1], padded - total, axis=0)]) for k, v in inputs.items()}
            self._batch_size.observe(padded)
            outputs = self.fn(inputs)
            start = 0
            for task in batch:
                with contextlib.suppress(InvalidStateError):  # cancelled: its caller left meanwhile
                    task.future.set_result({k: v[start:start + task.size] for k, v in outputs.items()})
                start += task.size
        except BaseException as exc:  # every waiter gets the error; the thread keeps serving
            for task in batch:
                with contextlib.suppress(InvalidStateError):
                    task.future.set_exception(exc)

    def _pad_to(self, n: int) -> int:
        for size in self.options.allowed_batch_sizes:
            if size >= n:
                return size
        return n

    def close(self, timeout: float | None = None) -> None:
        """Run what is queued, then stop the batch threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)
