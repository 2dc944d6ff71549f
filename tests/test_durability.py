"""Durable jobs, admission and cancellation on real processes on loopback: one separator and one
tagger (musicnn) shared by the module, explainers started, killed (SIGKILL), paused (SIGSTOP) and
stopped (SIGTERM) per test, on the file store and on a moto S3 server; and ``audiolime up``
killed mid-job and started again on the same store.

Requests are small (a 25 s song, N = 128 except where a job must outlive a signal) and the song is
separated once, then served from the separator's cache; leases are a few seconds.
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf

from audiolime.processes import free_port, metric_value, scrape, terminate
from audiolime.v1 import explainer_pb2
from conftest import (
    BATCHING,
    DRUMS,
    audiolime_up,
    exit_status,
    explain_request,
    explainer_args,
    explainer_stub,
    http_get,
    model_dir,
    s3_client,
    start_server,
    tagger_args,
    wait_metric,
)

pytestmark = pytest.mark.slow
State = explainer_pb2.ExplanationJob
DONE = (State.SUCCEEDED, State.FAILED, State.CANCELLED)
LEASE = "3"


def drums(**kw):
    """An ExplainRequest of DRUMS (25 s), its top tag, N = 128 by default."""
    return explain_request(DRUMS, **{"tags": [], "top_n": 1, "num_samples": 128, **kw})


@pytest.fixture(scope="module")
def backends(tmp_path_factory, shared, models):
    """A separator (own file store) and a batching tagger for every explainer of the module."""
    tmp = tmp_path_factory.mktemp("backends")
    (tmp / "batching.txt").write_text(BATCHING)
    sep = start_server("audiolime.separator.server", ["--store", (tmp / "stems").as_uri(), "--model-dir",
                                                      str(model_dir())], tmp / "separator.log")
    tag = start_server("audiolime.tagger.server", tagger_args(tmp / "batching.txt"), tmp / "tagger.log")
    yield sep, tag
    terminate(tag.proc)
    terminate(sep.proc)


def s3_store(moto: str) -> tuple[str, list[str]]:
    """A fresh bucket on the moto S3 server: (store URL, the explainer's extra flags)."""
    bucket = f"jobs-{uuid.uuid4().hex[:12]}"
    s3_client(moto).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/results", ["--s3-endpoint", moto]


@pytest.fixture(params=["file", "s3"])
def store_url(request, tmp_path, moto_s3):
    """A fresh job store: a directory, or a bucket on the moto S3 server."""
    return ((tmp_path / "store").as_uri(), []) if request.param == "file" else s3_store(moto_s3)


class Explainers:
    """Explainer processes on one store, all stopped at the end of the test."""

    def __init__(self, backends, store: tuple[str, list[str]], tmp: Path) -> None:
        self.sep, self.tag = backends
        self.url, self.extra = store
        self.tmp = tmp
        self.secret = uuid.uuid4().hex
        self.procs = []

    def start(self, *args: str):
        log = self.tmp / f"explainer-{len(self.procs)}.log"
        server = start_server("audiolime.explainer.server", explainer_args(
            self.url, self.sep.port, self.tag.port, *self.extra, "--http-port", str(free_port()),
            "--batch-size", "16", "--max-in-flight", "1", "--job-lease", LEASE, "--job-poll", "0.2",
            *args), log, env={"AUDIOLIME_URL_SECRET": self.secret})
        server.stub = explainer_stub(server.port)
        self.procs.append(server)
        return server

    def stop_all(self) -> None:
        for s in self.procs:
            if s.proc.poll() is None:
                os.kill(s.proc.pid, signal.SIGCONT)
            terminate(s.proc, timeout_s=30)


@pytest.fixture()
def explainers(backends, tmp_path):
    def make(store) -> Explainers:
        made.append(Explainers(backends, store, tmp_path))
        return made[-1]

    made: list[Explainers] = []
    yield make
    for e in made:
        e.stop_all()


def get(server, job_id: str):
    """GetExplanation through a server (``.stub``) or a stub."""
    stub = getattr(server, "stub", server)
    return stub.GetExplanation(explainer_pb2.GetExplanationRequest(job_id=job_id), timeout=30)


def wait_job(server, job_id: str, until=lambda j: j.state in DONE, timeout: float = 300.0):
    """Poll GetExplanation until ``until(job)`` (a synchronisation point, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        job = get(server, job_id)
        if until(job):
            return job
        assert job.state not in DONE, f"job {job_id} ended before the awaited moment: {State.State.Name(job.state)}"
        assert time.monotonic() < deadline, f"job {job_id} stuck: {job}"
        time.sleep(0.1)


def predicting(job) -> bool:
    return job.state == State.RUNNING and job.progress.stage == "predict" and job.progress.evaluated > 0


def assert_downloads(job) -> None:
    """Every URL of a finished job answers 200; the WAVs decode; the manifest is the job's."""
    r = job.result
    urls = [r.manifest_url, r.audio.window_url, *(t.fidelity.url for t in r.targets),
            *(c.url for t in r.targets for c in t.components if c.url)]
    assert len(urls) == 6
    for url in urls:
        status, data = http_get(url)
        assert status == 200, url
        if url.split("?")[0].endswith(".wav"):
            wave, sr = sf.read(io.BytesIO(data), always_2d=True)
            assert sr == 44100 and wave.shape[1] == 2 and np.abs(wave).max() > 1e-3
        else:
            assert json.loads(data)["audio"]["sha256"] == r.audio.sha256


def stored_explanations(e: Explainers, moto: str) -> dict[str, list[str]]:
    """explanation id -> its files, as the store holds them."""
    if e.url.startswith("s3://"):
        bucket, prefix = e.url[5:].split("/", 1)
        listing = s3_client(moto).list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/explanations/")
        keys = [k["Key"][len(prefix) + len("/explanations/"):] for k in listing.get("Contents", [])]
    else:
        root = Path(e.url[len("file://"):]) / "explanations"
        keys = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()] if root.exists() else []
    out: dict[str, list[str]] = {}
    for k in keys:
        eid, name = k.split("/", 1)
        out.setdefault(eid, []).append(name)
    return out


# -- a worker dies ------------------------------------------------------------------------------------
def test_sigkill_while_running_a_fresh_explainer_finishes_the_job(explainers, store_url, moto_s3):
    """SIGKILL the explainer running a job; a freshly started one on the same store resumes it after
    the lease (attempt 2) and GetExplanation answers SUCCEEDED with URLs that download; only the
    second attempt's explanation is in the store."""
    e = explainers(store_url)
    first = e.start()
    job_id = first.stub.SubmitExplanation(drums(), timeout=60).job_id
    wait_job(first, job_id, predicting)
    first.proc.kill()
    first.proc.wait()
    second = e.start()
    job = wait_job(second, job_id)
    assert job.state == State.SUCCEEDED, job.error_message
    assert job.attempt == 2 and job.result.explanation_id == f"{job_id}-2" and job.worker.endswith(
        f"-{second.proc.pid}")
    assert job.finished_at.seconds > 0 and job.expires_at.seconds - job.finished_at.seconds == 3600
    assert_downloads(job)
    assert list(stored_explanations(e, moto_s3)) == [f"{job_id}-2"]
    assert metric_value(scrape(second.metrics_port), "audiolime_explainer_job_events_total", event="resumed") == 1


def test_two_explainers_share_jobs_and_a_paused_one_never_publishes(explainers, backends, moto_s3):
    """Two explainers on one S3 store take jobs from the same queue. The one running the first job is
    paused (SIGSTOP) past its lease, so the other resumes it; continued, the paused one notices and
    stops. Every job has exactly one explanation, the one its result names, and both replicas give
    the same answer for every job (including those the other one ran)."""
    e = explainers(s3_store(moto_s3))
    a, b = e.start(), e.start()
    jobs = [(a if i % 2 else b).stub.SubmitExplanation(drums(seed=i), timeout=60).job_id for i in range(3)]
    job = wait_job(a, jobs[0], predicting)
    paused = next(s for s in (a, b) if job.worker.endswith(f"-{s.proc.pid}"))
    other = b if paused is a else a
    os.kill(paused.proc.pid, signal.SIGSTOP)
    try:
        resumed = wait_job(other, jobs[0], lambda j: j.attempt == 2)
    finally:
        os.kill(paused.proc.pid, signal.SIGCONT)
    assert resumed.worker.endswith(f"-{other.proc.pid}")
    finished = {j: wait_job(a, j) for j in jobs}
    text = scrape(paused.metrics_port)
    assert sum(metric_value(text, "audiolime_explainer_job_events_total", event=ev) for ev in ("lost", "discarded")) >= 1
    stored = stored_explanations(e, moto_s3)
    for job_id, job in finished.items():
        assert job.state == State.SUCCEEDED, job.error_message
        assert [eid for eid in stored if eid.startswith(job_id)] == [job.result.explanation_id]
        files = stored[job.result.explanation_id]  # window, 2 stems, top-3, 2 mixes, report, manifest
        assert {"explanation.json", "explanation.html"} <= set(files) and len(files) == 10
        seen_by_b = get(b, job_id)
        assert seen_by_b.result.explanation_id == job.result.explanation_id and seen_by_b.worker == job.worker
    assert_downloads(finished[jobs[0]])


# -- graceful shutdown --------------------------------------------------------------------------------
def test_sigterm_lets_a_running_job_finish_within_the_grace_period(explainers, tmp_path):
    """SIGTERM while a job runs: the explainer finishes it inside the grace period and exits 0; a
    replica that did not run it reports it SUCCEEDED as attempt 1."""
    e = explainers(((tmp_path / "store").as_uri(), []))
    a = e.start("--grace-period", "120")
    job_id = a.stub.SubmitExplanation(drums(), timeout=60).job_id
    wait_job(a, job_id, predicting)
    a.proc.send_signal(signal.SIGTERM)
    assert exit_status(a.proc, 150, a.log) == 0
    b = e.start()
    job = get(b, job_id)
    assert job.state == State.SUCCEEDED and job.attempt == 1 and job.worker.endswith(f"-{a.proc.pid}")
    assert_downloads(job)


def test_sigterm_with_too_short_a_grace_period_hands_the_job_to_another_replica(explainers, tmp_path):
    """SIGTERM with a 1 s grace period: the explainer stops the job at its next batch, releases the
    lease and exits 0; the other replica resumes it at once (the lease is 120 s, never reached)."""
    e = explainers(((tmp_path / "store").as_uri(), []))
    a = e.start("--grace-period", "1", "--job-lease", "120")
    job_id = a.stub.SubmitExplanation(drums(num_samples=256), timeout=60).job_id
    wait_job(a, job_id, predicting)
    b = e.start("--job-lease", "120")
    a.proc.send_signal(signal.SIGTERM)
    assert exit_status(a.proc, 60, a.log) == 0
    logs = a.log.read_text()
    assert "job released for another replica" in logs
    job = wait_job(b, job_id, timeout=100)  # well below the 120 s lease: the release, not its expiry
    assert job.state == State.SUCCEEDED and job.attempt == 2 and job.worker.endswith(f"-{b.proc.pid}")


# -- admission and cancellation ------------------------------------------------------------------------
def predict_calls(backends) -> float:
    return metric_value(scrape(backends[1].metrics_port), "grpc_server_handled_total", grpc_method="Predict")


def drain_quietly(stream) -> None:
    """Consume a stream in the background until it ends or is cancelled."""
    try:
        for _ in stream:
            pass
    except grpc.RpcError:
        pass


def settled_calls(backends, mport: int) -> float:
    """Tagger Predict calls once the explainer runs nothing and the count has stopped moving (the
    tagger may still finish a batch the explainer abandoned at the deadline)."""
    deadline = time.monotonic() + 60
    while metric_value(scrape(mport), "audiolime_explainer_explanations", state="running") > 0:
        assert time.monotonic() < deadline, "the explanation did not stop"
        time.sleep(0.1)
    last, since = predict_calls(backends), time.monotonic()
    while time.monotonic() - since < 2.0:
        assert time.monotonic() < deadline, "the tagger is still being called after the explanation stopped"
        time.sleep(0.2)
        now = predict_calls(backends)
        if now != last:
            last, since = now, time.monotonic()
    return last


def test_admission_refuses_beyond_the_limits_and_cancelled_work_stops(explainers, backends, tmp_path):
    """Limits 1 running / 1 waiting: a third concurrent request is RESOURCE_EXHAUSTED (message and
    metric). A stream whose caller cancels, a unary call whose deadline passes and a job stopped
    with CancelExplanation all stop at their next batch: the tagger sees a small fraction of the
    ~165 Predicts of 16 masks a full N = 4096 explanation makes (~2600 unique masks), and no more after."""
    e = explainers(((tmp_path / "store").as_uri(), []))
    a = e.start("--max-concurrent", "1", "--max-queued", "1")
    base = predict_calls(backends)
    big = drums(num_samples=4096, seed=7)
    running = a.stub.ExplainStream(big, timeout=600)
    for ev in running:
        if ev.progress.stage == "predict" and ev.progress.evaluated > 0:
            break
    waiting = a.stub.ExplainStream(big, timeout=600)
    threading.Thread(target=drain_quietly, args=(waiting,), daemon=True).start()
    wait_metric(a.metrics_port, "audiolime_explainer_explanations", 1, state="waiting")
    with pytest.raises(grpc.RpcError) as exc:
        a.stub.Explain(drums(), timeout=60)
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry later" in exc.value.details()
    assert metric_value(scrape(a.metrics_port), "audiolime_admission_rejected_total", component="explainer",
                        kind="request") == 1
    waiting.cancel()  # gives its place up without running
    running.cancel()
    used = settled_calls(backends, a.metrics_port) - base
    assert used < 30, used
    # the deadline of a unary call
    base = predict_calls(backends)
    with pytest.raises(grpc.RpcError) as exc:
        a.stub.Explain(big, timeout=5)
    assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    used = settled_calls(backends, a.metrics_port) - base
    assert used < 80, used
    # CancelExplanation of a running job
    base = predict_calls(backends)
    job_id = a.stub.SubmitExplanation(big, timeout=60).job_id
    wait_job(a, job_id, predicting)
    a.stub.CancelExplanation(explainer_pb2.CancelExplanationRequest(job_id=job_id), timeout=30)
    job = wait_job(a, job_id)
    assert job.state == State.CANCELLED and job.error_code == "CANCELLED" and not job.HasField("result")
    used = settled_calls(backends, a.metrics_port) - base
    assert used < 30, used
    assert not any((tmp_path / "store" / "explanations").glob(f"{job_id}-*"))


# -- audiolime up ---------------------------------------------------------------------------------------
def alive(pid: int) -> bool:
    """Whether a process runs (an exited one not yet reaped, a zombie, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_up_killed_mid_job_and_started_again_on_the_same_store_finishes_it(tmp_path, shared, models):
    """SIGKILL ``audiolime up`` while a job runs (its services die with it), start it again with the
    same --store: the job is resumed and GetExplanation returns SUCCEEDED with URLs that download."""
    env = {"AUDIOLIME_JOB_LEASE": LEASE}
    with audiolime_up(tmp_path, env=env) as first:
        # up's explainer: batches of 64, 4 in flight; N = 512 keeps the job in "predict" for 8 batches
        # (the kill follows its first progress report at once)
        job_id = first.stub.SubmitExplanation(drums(num_samples=512), timeout=60).job_id
        wait_job(first.stub, job_id, predicting)
        services = [first.pid(c) for c in ("separator", "tagger", "explainer")]
        first.proc.kill()
        first.proc.wait()
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in services):  # the services died with up
            assert time.monotonic() < deadline, "services outlived audiolime up"
            time.sleep(0.2)
    with audiolime_up(tmp_path, env=env) as second:  # the same store, tmp_path/store
        job = wait_job(second.stub, job_id)  # (attempt 3 if the tagger was not ready for attempt 2)
        assert job.state == State.SUCCEEDED and job.attempt >= 2, job.error_message
        assert_downloads(job)
