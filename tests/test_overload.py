"""Overload sheds load instead of amplifying it, in-process: the explainer's retry budget per
explanation, and the tagger's batch queue dropping work nobody waits for any more (the real
processes: tests/test_tagger_service.py; the long run: bench/overload.py)."""

from __future__ import annotations

import contextvars
import threading
import time

import grpc
import numpy as np
import pytest

from audiolime import errors


class Failure(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._code.name.lower()


def failing(code: grpc.StatusCode):
    calls = []

    def fn(request, timeout=None, metadata=None):
        calls.append(request)
        raise Failure(code)

    return fn, calls


def test_tagger_retries_of_overload_share_one_budget_per_explanation():
    """DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED retries of all of an explanation's tagger calls
    draw on one budget (then UNAVAILABLE naming it, at once); outside an explanation a
    DEADLINE_EXCEEDED is not retried at all; UNAVAILABLE (no connection) keeps its per-call retries."""
    from audiolime.explainer.remote import RetryPolicy, retry_budget

    policy = RetryPolicy(timeout_s=1, retries=5, backoff_s=0.001, backoff_cap_s=0.001, budgeted=True)
    fn, calls = failing(grpc.StatusCode.DEADLINE_EXCEEDED)
    with retry_budget(3) as budget:
        threads = [threading.Thread(target=contextvars.copy_context().run,  # as the engine's workers do
                                    args=(lambda: pytest.raises(errors.Unavailable, policy.call, fn, "r", "Predict"),))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(calls) == 4 + 3 and budget.spent == 3  # 4 first attempts, 3 retries in all
        with pytest.raises(errors.Unavailable, match="retry budget .* is spent"):
            policy.call(fn, "r", "Predict")
    calls.clear()
    with pytest.raises(errors.Unavailable):
        policy.call(fn, "r", "Predict")
    assert len(calls) == 1  # no budget: not retried
    fn, calls = failing(grpc.StatusCode.RESOURCE_EXHAUSTED)
    with retry_budget(2), pytest.raises(errors.Unavailable, match="retry budget"):
        policy.call(fn, "r", "Predict")
    assert len(calls) == 3
    fn, calls = failing(grpc.StatusCode.UNAVAILABLE)
    with retry_budget(0), pytest.raises(errors.Unavailable, match="after 6 attempts"):
        policy.call(fn, "r", "Predict")
    assert len(calls) == 6
    separator = RetryPolicy(timeout_s=1, retries=2, backoff_s=0.001, backoff_cap_s=0.001)  # not budgeted
    fn, calls = failing(grpc.StatusCode.RESOURCE_EXHAUSTED)
    with retry_budget(0), pytest.raises(errors.Unavailable, match="after 3 attempts"):
        separator.call(fn, "r", "Separate")


def test_the_batch_queue_drops_work_whose_caller_is_gone():
    """While the only batch thread is busy, a queued request whose deadline passes ends
    DEADLINE_EXCEEDED and one whose caller cancels ends CANCELLED, and neither ever reaches the
    model (counted in audiolime_tagger_dropped_total); a request still waited for runs."""
    from audiolime.server import context as callctx
    from audiolime.server import metrics
    from audiolime.tagger.batching import Batcher
    from audiolime.tagger.config import BatchingOptions

    gate, entered = threading.Event(), threading.Event()
    seen: list[float] = []

    def fn(inputs):
        seen.extend(inputs["x"][:, 0].tolist())
        entered.set()
        gate.wait(30)
        return {"y": inputs["x"] * 2}

    b = Batcher(fn, BatchingOptions(max_batch_size=4, batch_timeout_s=0.0, num_batch_threads=1), model="drop-test")
    results: dict[str, object] = {}
    cancelled = threading.Event()

    def call(name: str, value: float, deadline_s: float | None = None, active=None) -> None:
        def run():
            callctx.set_deadline(deadline_s)
            callctx.set_active(active)
            try:
                results[name] = b.run({"x": np.full((1, 1), value)})["y"]
            except errors.AudiolimeError as exc:
                results[name] = exc
        t = threading.Thread(target=contextvars.Context().run, args=(run,))
        t.start()
        return t

    dropped = {r: metrics.TAGGER_DROPPED.labels("drop-test", r)._value.get() for r in ("deadline", "cancelled")}
    try:
        first = call("first", 1.0)
        assert entered.wait(30)  # the batch thread is busy with the first request
        late = call("late", 2.0, deadline_s=0.2)
        gone = call("gone", 3.0, active=lambda: not cancelled.is_set())
        kept = call("kept", 4.0, deadline_s=60)
        late.join(30)
        cancelled.set()
        gone.join(30)
        assert isinstance(results["late"], errors.DeadlineExceeded)
        assert isinstance(results["gone"], errors.Cancelled)
        gate.set()
        first.join(30)
        kept.join(30)
        assert np.array_equal(results["kept"], [[8.0]]) and np.array_equal(results["first"], [[2.0]])
        assert seen == [1.0, 4.0]  # the late and the cancelled request never ran
        assert b._queued == 0
        for reason in ("deadline", "cancelled"):
            assert metrics.TAGGER_DROPPED.labels("drop-test", reason)._value.get() == dropped[reason] + 1
    finally:
        gate.set()
        b.close()
        time.sleep(0)


def test_the_memory_budget_admits_by_predicted_bytes(tmp_path):
    """An explanation reserves the bytes its audio header predicts before decoding: while one
    runs, a second that would pass the budget is RESOURCE_EXHAUSTED at once (counted), a job-style
    caller waits for the memory instead, one alone larger than the whole budget is INVALID_ARGUMENT
    naming --memory-budget, and the reservation is given back however a run ends."""
    from audiolime.audio import probe
    from audiolime.explainer.service import ExplainerService, ServiceConfig
    from audiolime.method.limits import Limits
    from audiolime.method.plan import make_plan, memory_bytes
    from audiolime.server import metrics
    from audiolime.store import LocalStore
    from conftest import FakeSeparator, FakeTagger, fake_task

    task = fake_task()
    tagger = FakeTagger(hold_after=1)  # the first Predict returns; later ones wait for the gate
    header = probe(task.audio.content, "a.wav", Limits())
    need = len(task.audio.content) + memory_bytes(make_plan(task.request, tagger, header), header)
    store = LocalStore(tmp_path / "store", public_url="http://127.0.0.1:9", secret=b"k" * 16)
    service = ExplainerService(store, lambda name, version: tagger, FakeSeparator(),
                               ServiceConfig(batch_size=16, max_in_flight=1, memory_budget=need + need // 2))
    refused = metrics.ADMISSION_REJECTED.labels("explainer", "memory")._value.get()
    done: dict[str, object] = {}
    first = threading.Thread(target=lambda: done.setdefault("first", service.run(fake_task())))
    first.start()
    deadline = time.monotonic() + 30
    while service.memory.reserved == 0:
        assert time.monotonic() < deadline and first.is_alive()
        time.sleep(0.01)
    assert service.memory.reserved == need
    with pytest.raises(errors.ResourceExhausted, match="--memory-budget"):
        service.run(fake_task())
    assert metrics.ADMISSION_REJECTED.labels("explainer", "memory")._value.get() == refused + 1
    waiting = threading.Thread(target=lambda: done.setdefault("waited", service.run(fake_task(), memory_wait_s=60)))
    waiting.start()
    tagger.gate.set()
    first.join(60)
    waiting.join(60)
    assert "first" in done and "waited" in done and service.memory.reserved == 0
    small = ExplainerService(store, lambda name, version: FakeTagger(), FakeSeparator(),
                             ServiceConfig(batch_size=16, memory_budget=need - 1))
    with pytest.raises(errors.InvalidInput, match=r"more than this replica's budget .* \(--memory-budget\)"):
        small.run(fake_task())
    assert small.memory.reserved == 0


def test_admission_refuses_a_caller_whose_deadline_cannot_cover_a_typical_run():
    """Once runs are known to take ~10 s: with the only slot busy, a caller with 5 s left is refused
    at once (RESOURCE_EXHAUSTED, kind="deadline"); one with 60 s left waits; one that starts waiting
    with just over 10 s left gives its place up as soon as its deadline leaves less than a run,
    long before the deadline itself; a caller that finds a free slot runs whatever its deadline."""
    from audiolime.server import context as callctx
    from audiolime.server import metrics
    from audiolime.server.admission import Admission

    fake = {"t": 0.0}
    adm = Admission(1, 2, metrics.EXPLANATIONS, "explainer", "explanations", clock=lambda: fake["t"])

    def refused() -> float:
        return metrics.ADMISSION_REJECTED.labels("explainer", "deadline")._value.get()

    def with_deadline(seconds, fn):
        def run():
            token = callctx.set_deadline(seconds)
            try:
                return fn()
            finally:
                callctx.reset_deadline(token)
        return contextvars.copy_context().run(run)

    assert adm.typical_run_s() is None
    for _ in range(3):
        with adm.slot():
            fake["t"] += 10.0
    assert adm.typical_run_s() == 10.0
    def run_now():
        with adm.slot():
            return "ran"
    assert with_deadline(1.0, run_now) == "ran"  # a free slot: runs, even with 1 s left

    holder = adm.place()
    place = holder.__enter__()
    run = place.run()
    run.__enter__()  # the only slot is busy from here
    before = refused()
    with pytest.raises(errors.ResourceExhausted, match="less than a typical run"):
        with_deadline(5.0, lambda: adm.place().__enter__())
    assert refused() == before + 1 and adm.waiting == 0

    outcome = {}

    def wait(seconds, key):
        def go():
            try:
                with adm.place() as p, p.run():
                    outcome[key] = "ran"
            except errors.ResourceExhausted:
                outcome[key] = ("refused", callctx.remaining())
        with_deadline(seconds, go)

    patient = threading.Thread(target=wait, args=(60.0, "patient"))
    hurried = threading.Thread(target=wait, args=(10.6, "hurried"))
    patient.start()
    hurried.start()
    hurried.join(timeout=30)
    kind, left = outcome["hurried"]
    assert kind == "refused" and left > 5.0  # gave up with more than 5 s of its deadline left
    assert refused() == before + 2 and adm.waiting == 1  # the patient one still waits
    run.__exit__(None, None, None)
    holder.__exit__(None, None, None)
    patient.join(timeout=30)
    assert outcome["patient"] == "ran" and (adm.running, adm.waiting) == (0, 0)
