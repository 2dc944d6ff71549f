"""Explanation jobs in the object store, in-process: several job runners ("replicas") over one
store with the fake tagger and separator. Conditional creation on both stores, leases and their
takeover, exactly-once publishing against a worker that lost its lease, cancellation, admission,
graceful hand-over, owners, expiry. (Real processes: tests/test_durability.py.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from audiolime import errors
from audiolime.explainer.core import ExplainerCore
from audiolime.explainer.jobs import JobRunner
from audiolime.explainer.jobstore import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, JobConfig, JobStore
from audiolime.explainer.service import ExplainerService, ServiceConfig
from audiolime.method.limits import Limits
from audiolime.server import context as callctx
from audiolime.server import metrics
from audiolime.server.admission import Admission
from audiolime.store import LocalStore, S3Store, check_conditional_writes
from conftest import FakeSeparator, FakeTagger, fake_task, s3_client


def until(cond: Callable[[], object], timeout: float = 30.0, what: str = "condition", runners=()):
    """Poll ``cond`` until it is truthy (a synchronisation point, not a timing assertion); a
    runner whose scanner or worker failed raises its traceback at once."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        for runner in runners:
            runner.check()
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(0.02)
    return value


class Replica:
    """One explainer's job side: a service core, an admission, a runner."""

    def __init__(self, store, tagger: FakeTagger | None = None, jobstore: JobStore | None = None,
                 max_concurrent: int = 2, lease_s: float = 1.5, clock: Callable[[], float] = time.time,
                 **config) -> None:
        self.tagger = tagger or FakeTagger()
        self.service = ExplainerService(store, lambda name, version: self.tagger, FakeSeparator(),
                                        ServiceConfig(batch_size=16, max_in_flight=2, limits=Limits(max_bytes=10 ** 7)))
        self.admission = Admission(max_concurrent, config.get("max_queued", 8), metrics.EXPLANATIONS, "explainer",
                                   "explanations")
        cfg = JobConfig(lease_s=lease_s, poll_s=0.05, **config)
        self.jobs = jobstore or JobStore(store, cfg, clock)
        self.runner = JobRunner(self.jobs, self.service.run, self.admission, f"w{id(self)}")
        self.core = ExplainerCore(self.service, self.runner, self.admission).start()

    def wait(self, job_id: str, states=(SUCCEEDED, FAILED, CANCELLED), timeout: float = 30.0):
        return until(lambda: (v := self.runner.get(job_id)).state in states and v, timeout, f"job in {states}",
                     [self.runner])


@pytest.fixture()
def store(tmp_path):
    return LocalStore(tmp_path / "store", public_url="http://127.0.0.1:9/", secret=b"k")


@pytest.fixture()
def replicas():
    made: list[Replica] = []

    def make(*args, **kw) -> Replica:
        made.append(Replica(*args, **kw))
        return made[-1]

    yield make
    for r in made:
        r.tagger.gate.set()
        r.core.stop()


def keys(store, prefix: str) -> list[str]:
    return [o.key for o in store.list(prefix)]


# -- the store's conditional create ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["file", "s3"])
def test_put_if_absent_has_exactly_one_winner(kind, tmp_path, moto_s3):
    """16 threads create the same key at once: exactly one succeeds, its bytes are what is stored,
    and no temporary file is listed; a store ignoring the condition would fail the probe."""
    if kind == "s3":
        s3_client(moto_s3).create_bucket(Bucket="put-if-absent")
        st = S3Store("put-if-absent", "p", client=s3_client(moto_s3))
    else:
        st = LocalStore(tmp_path / "s")
    assert check_conditional_writes(st)
    barrier = threading.Barrier(16)
    wins: list[int] = []

    def create(i: int) -> None:
        barrier.wait()
        if st.put_if_absent("claims/x.000001", str(i).encode() * 1000):
            wins.append(i)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and st.get("claims/x.000001") == str(wins[0]).encode() * 1000
    assert keys(st, "claims/") == ["claims/x.000001"]


# -- running and reading -------------------------------------------------------------------------------
def test_a_job_runs_once_and_any_replica_reports_it(store, replicas):
    """A job submitted to one replica is run by some replica and read by any: SUCCEEDED with the
    published document and fresh URLs; the explanation id is the job's first attempt."""
    a, b = replicas(store), replicas(store)
    job_id = a.runner.submit(fake_task(url_ttl_s=600))
    view = b.wait(job_id)
    assert view.state == SUCCEEDED and view.attempt == 1 and view.result.explanation_id == f"{job_id}-1"
    outcome = b.core.job(job_id).result
    assert outcome.document.targets[0].tag == "voice" and len(outcome.urls) == 7  # window, stems, top-2, mixes
    assert f"/o/explanations/{job_id}-1/explanation.html" in outcome.report_url
    assert all(f"/o/explanations/{job_id}-1/" in u for u in outcome.urls.values())
    assert keys(store, "queue/") == [] and keys(store, "claims/") == []
    assert {k.split("/")[1] for k in keys(store, "explanations/")} == {f"{job_id}-1"}
    assert len(a.tagger.calls) + len(b.tagger.calls) > 0 and len(a.tagger.calls) * len(b.tagger.calls) == 0
    assert view.expires_at == pytest.approx(view.result.finished_at + 3600)


def test_another_callers_job_does_not_exist_for_them(store, replicas):
    """Jobs belong to the caller that submitted them: another caller gets the same NOT_FOUND as for
    an unknown id, for Get and Cancel; malformed ids are INVALID_ARGUMENT naming job_id."""
    r = replicas(store)
    token = callctx.set_caller("alice")
    try:
        job_id = r.runner.submit(fake_task())
        assert r.wait(job_id).state == SUCCEEDED
    finally:
        callctx.reset_caller(token)
    token = callctx.set_caller("bob")
    try:
        for call in (r.runner.get, r.runner.cancel):
            with pytest.raises(errors.NotFound) as exc:
                call(job_id)
            assert str(exc.value) == str(r.jobs.not_found(job_id))
    finally:
        callctx.reset_caller(token)
    with pytest.raises(errors.NotFound):
        r.runner.get(job_id)  # no caller ("" = authentication off) is not alice either
    for bad in ("", "../../etc", "A" * 32):
        with pytest.raises(errors.InvalidInput, match="job_id"):
            r.runner.get(bad)


def test_a_lapsed_lease_is_taken_over_and_published_once(store, replicas):
    """A worker that claimed a job and died (its claim never renewed) loses it after the lease:
    a replica resumes it as attempt 2, and only attempt 2's explanation is in the store."""
    jobs = JobStore(store, JobConfig(lease_s=1.5, poll_s=0.05))
    job = fake_task()
    record = jobs.create("a" * 32, "", job.request, "tone.wav", 0, input_key=jobs.stage_input(job.audio.content))
    assert jobs.claim(record.job_id, 1, "dead-worker") and not jobs.claim(record.job_id, 1, "other")
    assert jobs.view(record.job_id).state == RUNNING
    r = replicas(store)
    view = r.wait(record.job_id)
    assert view.state == SUCCEEDED and view.attempt == 2 and view.result.explanation_id == f"{record.job_id}-2"
    assert {k.split("/")[1] for k in keys(store, "explanations/")} == {f"{record.job_id}-2"}


class ZombieStore(JobStore):
    """A job store whose worker never learns it lost its lease (a paused or partitioned process):
    no renewals, no supersession, no cancellation seen."""

    def renew(self, *a, **kw) -> None:
        pass

    def superseded(self, *a, **kw) -> bool:
        return False


def test_a_worker_that_lost_its_lease_never_publishes_over_the_winner(store, replicas):
    """Attempt 1 stalls without renewing; attempt 2 on another replica finishes; then attempt 1
    finishes too: the job keeps attempt 2's result, attempt 1's artifacts are discarded, nothing mixed."""
    zombie = replicas(store, FakeTagger(hold_after=3), jobstore=ZombieStore(store, JobConfig(lease_s=1.5, poll_s=0.05)))
    job_id = zombie.runner.submit(fake_task())
    until(lambda: len(zombie.tagger.calls) > 3, what="attempt 1 predicting")
    winner = replicas(store)
    view = winner.wait(job_id)
    assert view.state == SUCCEEDED and view.result.explanation_id == f"{job_id}-2"
    before = metrics.JOB_EVENTS.labels("discarded")._value.get()
    zombie.tagger.gate.set()  # attempt 1 completes its explanation and tries to publish
    until(lambda: metrics.JOB_EVENTS.labels("discarded")._value.get() > before, what="attempt 1 discarded")
    until(lambda: not zombie.runner._running, what="attempt 1 ended")
    assert winner.jobs.result(job_id).explanation_id == f"{job_id}-2"
    assert {k.split("/")[1] for k in keys(store, "explanations/")} == {f"{job_id}-2"}
    assert f"explanations/{job_id}-2/explanation.json" in keys(store, "explanations/")


def test_graceful_drain_hands_a_running_job_to_another_replica(store, replicas):
    """A replica shutting down stops its running job at the next batch and releases the lease: the
    other replica resumes it at once (the lease here is 60 s, never reached) and publishes it."""
    a = replicas(store, FakeTagger(hold_after=2), lease_s=60.0)
    job_id = a.runner.submit(fake_task(num_samples=600))
    until(lambda: len(a.tagger.calls) > 2, what="job running on a")
    done = threading.Thread(target=a.runner.drain, args=(time.monotonic() + 0.5,))
    done.start()
    a.tagger.gate.set()
    done.join(10)
    assert any(k.endswith(".000001.released") for k in keys(store, "claims/"))
    b = replicas(store, lease_s=60.0)
    view = b.wait(job_id, timeout=20)
    assert view.state == SUCCEEDED and view.attempt == 2
    assert len(a.tagger.calls) < 600 / 16  # a stopped early: far fewer batches than the whole job


def test_cancel_a_queued_job_at_once_and_a_running_job_at_its_next_batch(store, replicas):
    """With one slot: the running job stops within a batch or two of the cancel and ends CANCELLED;
    the queued one is CANCELLED without ever running; neither leaves artifacts."""
    r = replicas(store, FakeTagger(hold_after=4), max_concurrent=1)
    running = r.runner.submit(fake_task(num_samples=2000))
    until(lambda: len(r.tagger.calls) > 4, what="first job predicting")
    queued = r.runner.submit(fake_task())
    assert r.runner.get(queued).state == QUEUED
    assert r.runner.cancel(queued).state == CANCELLED
    view = r.runner.cancel(running)
    assert view.state == RUNNING
    calls = len(r.tagger.calls)
    r.tagger.gate.set()
    view = r.wait(running)
    assert view.state == CANCELLED and view.result.error_code == "CANCELLED"
    assert len(r.tagger.calls) - calls <= 2 * 2  # batches already in flight (max_in_flight 2), no new ones
    until(lambda: not keys(store, "queue/"), what="the queue entry removed after the result")  # tidied last
    assert keys(store, "explanations/") == []
    assert r.runner.cancel(running).state == CANCELLED  # idempotent on a finished job


def test_jobs_beyond_max_queued_are_resource_exhausted(store, replicas):
    """One running and one waiting job fill a replica with limits 1/1: a third submission is
    RESOURCE_EXHAUSTED with a retry hint, counted by the admission metric, and stores nothing."""
    r = replicas(store, FakeTagger(hold_after=2), max_concurrent=1, max_queued=1)
    first = r.runner.submit(fake_task())
    until(lambda: r.runner.get(first).state == RUNNING, what="first job running")
    r.runner.submit(fake_task(seed=1))
    refused = metrics.ADMISSION_REJECTED.labels("explainer", "job")._value.get()
    n_jobs = len(keys(store, "jobs/"))
    with pytest.raises(errors.ResourceExhausted, match="retry later"):
        r.runner.submit(fake_task(seed=2))
    assert metrics.ADMISSION_REJECTED.labels("explainer", "job")._value.get() == refused + 1
    assert len(keys(store, "jobs/")) == n_jobs


def test_a_job_whose_workers_keep_dying_fails_after_max_attempts(store, replicas):
    """Two attempts claimed and abandoned (never released) with --job-attempts 2: the job FAILS
    with UNAVAILABLE instead of being retried forever (a poison request must not kill every replica)."""
    jobs = JobStore(store, JobConfig(lease_s=1.0, poll_s=0.05))
    job = fake_task()
    record = jobs.create("b" * 32, "", job.request, "tone.wav", 0, input_key=jobs.stage_input(job.audio.content))
    assert jobs.claim(record.job_id, 1, "w1") and jobs.claim(record.job_id, 2, "w2")
    r = replicas(store, lease_s=1.0, max_attempts=2)
    view = r.wait(record.job_id)
    assert view.state == FAILED and view.result.error_code == "UNAVAILABLE" and "interrupted 2 times" in \
        view.result.error_message
    assert r.tagger.calls == []


class DownTagger(FakeTagger):
    """A tagger whose backend is UNAVAILABLE (past the retry budget) while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()
        self.down.set()

    def predict(self, x):
        if self.down.is_set():
            self.calls.append((len(x), "down"))
            raise errors.Unavailable("tagger Predict: UNAVAILABLE after 6 attempts")
        return super().predict(x)


def test_a_job_whose_backend_is_down_is_retried_later_then_fails_when_attempts_run_out(store, replicas):
    """A backend UNAVAILABLE past its retry budget does not fail a job at once: it is handed back
    and retried after a lease (and succeeds once the backend is back); a backend that stays down
    fails it with UNAVAILABLE after --job-attempts attempts."""
    tagger = DownTagger()
    r = replicas(store, tagger, lease_s=0.5, max_attempts=2)
    job_id = r.runner.submit(fake_task())
    until(lambda: any(k.endswith(".000001.retry") for k in keys(store, "claims/")), what="attempt 1 handed back")
    assert r.runner.get(job_id).state == QUEUED
    tagger.down.clear()
    view = r.wait(job_id)
    assert view.state == SUCCEEDED and view.attempt == 2
    tagger.down.set()
    job_id = r.runner.submit(fake_task(seed=3))
    view = r.wait(job_id)
    assert view.state == FAILED and view.attempt == 2 and view.result.error_code == "UNAVAILABLE"
    assert "tagger Predict" in view.result.error_message and keys(store, "explanations/") == \
        [k for k in keys(store, "explanations/") if "-2/" in k]


def test_finished_jobs_expire_with_their_artifacts_and_input(store, replicas):
    """After --job-ttl a finished job is NOT_FOUND and nothing of it remains: record, result,
    explanation, claims, queue entry, stored input, expiry marker (the store's clock is moved on;
    nothing waits for the TTL)."""
    now = [time.time()]
    r = replicas(store, clock=lambda: now[0], sweep_s=0.05)
    job_id = r.runner.submit(fake_task())
    assert r.wait(job_id).state == SUCCEEDED  # so its record, artifacts and input existed
    until(lambda: keys(store, "expiry/"), what="its expiry scheduled (right after the result)")
    assert keys(store, "inputs/")
    now[0] += 3600 - 60  # not yet: a minute before the TTL
    r.core._sweeper.wake()
    time.sleep(0.2)  # a few sweeps
    assert keys(store, f"jobs/{job_id}/") and keys(store, "inputs/")
    now[0] += 120  # past the TTL (3600 s)
    # everything of the job; the song scan is the song's, not the job's (kept like stems, not swept)
    until(lambda: {k.split("/")[0] for k in keys(store, "")} == {"scans"}, timeout=20, what="everything expired",
          runners=[r.runner])
    with pytest.raises(errors.NotFound):
        r.runner.get(job_id)


def test_admission_waiting_place_gives_up_when_the_caller_leaves_or_the_server_closes():
    """A waiting place leaves with Cancelled when its caller went away and with Unavailable when
    the server shuts down; counts return to zero; try_run never waits."""
    adm = Admission(1, 2, metrics.EXPLANATIONS, "explainer", "explanations")
    slot = adm.try_run()
    assert slot is not None and adm.try_run() is None and (adm.running, adm.waiting) == (1, 0)
    gone = threading.Event()
    outcome: dict = {}

    def wait(name: str) -> None:
        try:
            with adm.place() as place, place.run(stop=gone.is_set, poll_s=0.01):
                outcome[name] = "ran"
        except errors.AudiolimeError as exc:
            outcome[name] = type(exc).__name__

    t = threading.Thread(target=wait, args=("a",))
    t.start()
    until(lambda: adm.waiting == 1)
    gone.set()
    t.join(5)
    gone.clear()
    t = threading.Thread(target=wait, args=("b",))
    t.start()
    until(lambda: adm.waiting == 1)
    adm.close()
    t.join(5)
    assert outcome == {"a": "Cancelled", "b": "Unavailable"}
    slot.release()
    slot.release()
    assert (adm.running, adm.waiting) == (0, 0)
    with pytest.raises(errors.Unavailable):
        with adm.place():
            pass


# -- listing and watching ------------------------------------------------------------------------------
def _as(caller: str, fn, *args):
    token = callctx.set_caller(caller)
    try:
        return fn(*args)
    finally:
        callctx.reset_caller(token)


def test_list_shows_only_the_callers_own_jobs_newest_first_in_pages(store, replicas):
    """ListExplanations: alice sees her three jobs (newest first, two pages of 2 and 1, nothing
    twice), bob only his; bad page sizes and tokens are INVALID_ARGUMENT naming the field."""
    r = replicas(store)
    mine = []
    for caller in ("alice", "bob", "alice", "alice"):
        job_id = _as(caller, r.runner.submit, fake_task())
        if caller == "alice":
            mine.append(job_id)
        time.sleep(0.01)  # distinct creation times (the order under test)
        until(lambda j=job_id, c=caller: _as(c, r.runner.get, j).state == SUCCEEDED, what="job done", runners=[r.runner])
    first, token = _as("alice", r.core.list_jobs, 2)
    assert [s.view.job_id for s in first] == mine[::-1][:2] and token
    rest, end = _as("alice", r.core.list_jobs, 2, token)
    assert [s.view.job_id for s in rest] == mine[::-1][2:] and end == ""
    assert all(s.view.state == SUCCEEDED and s.result is None for s in first + rest)
    bobs, _ = _as("bob", r.core.list_jobs)
    assert len(bobs) == 1 and bobs[0].view.job_id not in mine
    assert _as("carol", r.core.list_jobs) == ([], "")
    for args, field in (((1001,), "page_size"), ((-1,), "page_size"), ((0, "nonsense"), "page_token")):
        with pytest.raises(errors.InvalidInput) as exc:
            _as("alice", r.core.list_jobs, *args)
        assert exc.value.field == field


def test_watch_follows_a_job_to_its_result(store, replicas):
    """WatchExplanation: the queued/running job at once, progress as it changes (non-decreasing),
    the SUCCEEDED job with its result last; another caller's job is NOT_FOUND."""

    class Caller:
        def is_active(self) -> bool:
            return True

    r = replicas(store, FakeTagger(hold_after=2))
    job_id = _as("alice", r.runner.submit, fake_task(num_samples=200))
    seen = []

    def follow():
        token = callctx.set_caller("alice")
        try:
            seen.extend(r.core.watch(job_id, Caller()))
        finally:
            callctx.reset_caller(token)

    watcher = threading.Thread(target=follow)
    watcher.start()
    until(lambda: len(r.tagger.calls) > 2 and any(s.view.progress.stage == "predict" for s in list(seen)),
          what="the watcher saw the job held mid-explanation", runners=[r.runner])
    r.tagger.gate.set()
    watcher.join(30)
    assert not watcher.is_alive()
    states = [s.view.state for s in seen]
    assert states[0] in (QUEUED, RUNNING) and states[-1] == SUCCEEDED and states.count(SUCCEEDED) == 1
    assert seen[-1].result is not None and seen[-1].result.explanation_id == f"{job_id}-1"
    predicts = [(s.view.progress.done, s.view.progress.total) for s in seen if s.view.progress.stage == "predict"]
    assert predicts and all(a[0] <= b[0] for a, b in zip(predicts, predicts[1:]))
    assert len({(s.view.state, s.view.progress) for s in seen}) == len(seen)  # only changes are sent
    with pytest.raises(errors.NotFound):
        _as("bob", lambda: next(r.core.watch(job_id, Caller())))
