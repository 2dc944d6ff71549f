"""Explainer load, admission and recovery numbers, each measured in one run on real processes
(separator, batching tagger, explainers on loopback, a ``file://`` store):

``load``: limits --max-concurrent C / --max-queued Q. C + Q concurrent unary/stream
    explanations and Q jobs (all within the limits) must all succeed; then ``--extra`` more requests
    (Explain, ExplainStream, SubmitExplanation) beyond the limits must all get RESOURCE_EXHAUSTED
    fast (latency reported). Explainer peak RSS (VmHWM) is recorded, and the store is checked for
    anything half-written (an explanation without its manifest or missing a file it names, a job
    without a result, a temporary file, a leftover queue entry or claim).

``recovery``: the duration of a typical explanation (musicnn, default N = 2048, one
    whole song, separation cached and cold), and the recovery times of a job whose explainer is
    SIGKILLed (resumed by a second replica after the lease) or SIGTERMed with a grace period too
    short to finish (handed over at once).

    python bench/bench_jobs.py load|recovery [--model-dir models] [--shared ../shared] ...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from audiolime.processes import free_port, metric_value, scrape, terminate, wait_serving
from audiolime.v1 import common_pb2, explainer_pb2, explainer_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
State = explainer_pb2.ExplanationJob
BATCHING = ("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 2000 }\n"
            "num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 1000 }\n")


class Stack:
    """A separator and a tagger, and explainers started on demand; everything stopped on exit."""

    def __init__(self, model_dir: Path, tmp: Path) -> None:
        self.model_dir, self.tmp, self.procs = model_dir, tmp, []
        (tmp / "batching.txt").write_text(BATCHING)
        self.separator = self._start("audiolime.separator.server", ["--store", (tmp / "stems").as_uri(),
                                                                   "--model-dir", str(model_dir)])
        self.tagger = self._start("audiolime.tagger.server", [
            "--model-base-path", str(model_dir / "serving" / "musicnn-msd"), "--model-name", "musicnn-msd",
            "--enable-batching", "--batching-parameters-file", str(tmp / "batching.txt")])

    def _start(self, module: str, args: list[str]):
        port, mport = free_port(), free_port()
        log = open(self.tmp / f"{module.split('.')[1]}-{len(self.procs)}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", module, "--host", HOST, "--port", str(port), "--metrics-port",
                                 str(mport), "--log-level", "INFO", *args], stdout=subprocess.DEVNULL, stderr=log,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        wait_serving(f"{HOST}:{port}", proc, 600, module)
        proc.port, proc.mport = port, mport
        self.procs.append(proc)
        return proc

    def explainer(self, store: Path, *args: str):
        proc = self._start("audiolime.explainer.server", [
            "--store", store.as_uri(), "--separator", f"{HOST}:{self.separator.port}", "--tagger",
            f"{HOST}:{self.tagger.port}", "--http-port", str(free_port()), "--url-secret", "bench", *args])
        proc.stub = explainer_pb2_grpc.ExplainerStub(grpc.insecure_channel(
            f"{HOST}:{proc.port}", options=[("grpc.max_send_message_length", 256 << 20)]))
        return proc

    def close(self) -> None:
        for p in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)
            terminate(p, timeout_s=30)


def request(song: Path, **kw) -> explainer_pb2.ExplainRequest:
    return explainer_pb2.ExplainRequest(audio=common_pb2.AudioInput(content=song.read_bytes(), filename=song.name),
                                        model="musicnn-msd", **kw)


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_job(stub, job_id: str, until=lambda j: j.state in (State.SUCCEEDED, State.FAILED, State.CANCELLED),
             timeout: float = 3600, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        job = stub.GetExplanation(explainer_pb2.GetExplanationRequest(job_id=job_id), timeout=30)
        if until(job):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id}: {job}")
        time.sleep(poll)


def predicting(job) -> bool:
    return job.state == State.RUNNING and job.progress.stage == "predict" and job.progress.evaluated > 0


def interrupt_mid_job(explainer, req: explainer_pb2.ExplainRequest, stop) -> tuple[str, float]:
    """Submit ``req`` to ``explainer``, wait until that replica is predicting it, then ``stop()``:
    the job id and the moment of the interruption."""
    job_id = explainer.stub.SubmitExplanation(req, timeout=60).job_id
    wait_job(explainer.stub, job_id, lambda j: predicting(j) and j.worker.endswith(f"-{explainer.pid}"))
    t = time.perf_counter()
    stop()
    return job_id, t


def half_written(root: Path) -> list[str]:
    """Everything in a file store that a crash-safe writer would never leave behind."""
    problems = [p.relative_to(root).as_posix() for p in root.rglob("*.part")]
    for manifest_dir in (root / "explanations").iterdir() if (root / "explanations").exists() else []:
        manifest = manifest_dir / "explanation.json"
        if not manifest.is_file():
            problems.append(f"{manifest_dir.name}: no explanation.json")
            continue
        doc = json.loads(manifest.read_text())
        named = [doc["audio"]["window_file"]] + [f for t in doc["targets"] for f in
                                                 [c["file"] for c in t["components"]] + [t["fidelity"]["file"]] if f]
        problems += [f"{manifest_dir.name}/{n}: missing" for n in named if not (manifest_dir / n).is_file()]
    for job_dir in (root / "jobs").iterdir() if (root / "jobs").exists() else []:
        if not (job_dir / "result.json").is_file():
            problems.append(f"job {job_dir.name}: no result")
    problems += [f"leftover {p.relative_to(root)}" for d in ("queue", "claims") for p in (root / d).glob("*")
                 if (root / d).exists()]
    return problems


# -- load ------------------------------------------------------------------------------------------
def load(stack: Stack, song: Path, args) -> None:
    c, q = args.max_concurrent, args.max_queued
    store = stack.tmp / "load-store"
    exp = stack.explainer(store, "--max-concurrent", str(c), "--max-queued", str(q),
                          "--max-workers", str(c + q + 16), "--batch-size", "32", "--max-in-flight", "2")
    req = request(song, tags=["female vocalists"], num_samples=args.num_samples, seed=0)
    t = time.perf_counter()
    exp.stub.Explain(req, timeout=1800)  # warm: separates the song once (cached for the rest)
    print(f"warm-up explanation (with separation): {time.perf_counter() - t:.1f} s; explainer RSS after it "
          f"{rss_mb(exp.pid, 'VmRSS'):.0f} MB (peak {rss_mb(exp.pid):.0f} MB)", flush=True)
    rpc_results: list = []
    sampler_stop = threading.Event()
    peak_rss = [0.0]

    def sample() -> None:
        while not sampler_stop.wait(0.2):
            peak_rss[0] = max(peak_rss[0], rss_mb(exp.pid, "VmRSS"))

    threading.Thread(target=sample, daemon=True).start()

    def admitted(i: int):
        r = explainer_pb2.ExplainRequest()
        r.CopyFrom(req)
        r.seed = i + 1
        t0 = time.perf_counter()
        try:
            if i % 2:
                out = exp.stub.Explain(r, timeout=3600)
            else:
                out = [e for e in exp.stub.ExplainStream(r, timeout=3600)][-1].result
            return "OK", time.perf_counter() - t0, out.explanation_id
        except grpc.RpcError as exc:
            return exc.code().name, time.perf_counter() - t0, exc.details()

    pool = ThreadPoolExecutor(c + q + args.extra)
    t_start = time.perf_counter()
    futures = [pool.submit(admitted, i) for i in range(c + q)]
    deadline = time.monotonic() + 600
    while True:  # every place taken: c running and q waiting
        text = scrape(exp.mport)
        running = metric_value(text, "audiolime_explainer_explanations", state="running")
        waiting = metric_value(text, "audiolime_explainer_explanations", state="waiting")
        if (running, waiting) == (c, q):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"admission never full: running {running}, waiting {waiting}")
        time.sleep(0.05)
    jobs = []
    for i in range(q):  # the job queue, store-wide, waits while every slot is busy
        r = explainer_pb2.ExplainRequest()
        r.CopyFrom(req)
        r.seed = 1000 + i
        jobs.append(exp.stub.SubmitExplanation(r, timeout=60).job_id)
    print(f"admitted: {c} running + {q} waiting RPCs, {len(jobs)} jobs queued "
          f"({time.perf_counter() - t_start:.1f} s)", flush=True)

    def beyond(i: int):
        r = explainer_pb2.ExplainRequest()
        r.CopyFrom(req)
        t0 = time.perf_counter()
        try:
            kind = ("Explain", "ExplainStream", "SubmitExplanation")[i % 3]
            if kind == "Explain":
                exp.stub.Explain(r, timeout=60)
            elif kind == "ExplainStream":
                list(exp.stub.ExplainStream(r, timeout=60))
            else:
                exp.stub.SubmitExplanation(r, timeout=60)
            return kind, "OK", time.perf_counter() - t0, ""
        except grpc.RpcError as exc:
            return kind, exc.code().name, time.perf_counter() - t0, exc.details()

    extra = list(pool.map(beyond, range(args.extra)))
    refused = [x for x in extra if x[1] == "RESOURCE_EXHAUSTED"]
    lat = sorted(x[2] for x in refused)
    rpc_results = [f.result() for f in futures]
    job_results = [wait_job(exp.stub, j) for j in jobs]
    total_s = time.perf_counter() - t_start
    sampler_stop.set()
    ok = sum(1 for r in rpc_results if r[0] == "OK")
    jobs_ok = sum(1 for j in job_results if j.state == State.SUCCEEDED)
    print(f"within the limits: {ok}/{len(rpc_results)} RPCs and {jobs_ok}/{len(job_results)} jobs succeeded "
          f"in {total_s:.1f} s (RPC latency p50 {sorted(r[1] for r in rpc_results)[len(rpc_results) // 2]:.1f} s, "
          f"max {max(r[1] for r in rpc_results):.1f} s)")
    others = sorted({(k, code) for k, code, _, _ in extra if code != "RESOURCE_EXHAUSTED"})
    print(f"beyond the limits: {len(refused)}/{len(extra)} RESOURCE_EXHAUSTED "
          f"(latency p50 {1000 * lat[len(lat) // 2]:.0f} ms, p95 {1000 * lat[int(len(lat) * 0.95) - 1]:.0f} ms, "
          f"max {1000 * lat[-1]:.0f} ms){'; others: ' + str(others) if others else ''}")
    print(f"  messages: {sorted({d for _, _, _, d in refused})}")
    text = scrape(exp.mport)
    print(f"  audiolime_admission_rejected_total: request "
          f"{metric_value(text, 'audiolime_admission_rejected_total', component='explainer', kind='request'):.0f}, "
          f"job {metric_value(text, 'audiolime_admission_rejected_total', component='explainer', kind='job'):.0f}")
    print(f"explainer peak RSS: {rss_mb(exp.pid):.0f} MB (VmHWM; sampled VmRSS max {peak_rss[0]:.0f} MB, "
          f"N = {args.num_samples}, {song.name})")
    problems = half_written(store)
    n_expl = len(list((store / "explanations").iterdir()))
    print(f"store: {n_expl} explanations, {len(jobs)} jobs; half-written: {problems or 'nothing'}")
    pool.shutdown()


# -- recovery ---------------------------------------------------------------------------------------
def recovery(stack: Stack, song: Path, args) -> None:
    store = stack.tmp / "recovery-store"
    req = request(song)  # every default (adaptive N; docs/reliability.md's 146 s: N = 2048)
    a = stack.explainer(store, "--job-lease", str(args.lease))
    t = time.perf_counter()
    cold = a.stub.Explain(req, timeout=3600)
    cold_s = time.perf_counter() - t
    t = time.perf_counter()
    warm = a.stub.Explain(req, timeout=3600)
    warm_s = time.perf_counter() - t
    print(f"typical explanation ({song.name}, {cold.audio.duration_s:.0f} s, musicnn, N = {warm.num_samples}, "
          f"{warm.unique_samples} unique masks): {cold_s:.1f} s with separation, {warm_s:.1f} s cached "
          f"(stages {dict((k, round(v, 1)) for k, v in warm.timings_s.items())})", flush=True)

    b = stack.explainer(store, "--job-lease", str(args.lease))
    job_id, t_kill = interrupt_mid_job(a, req, a.kill)
    a.wait()
    job = wait_job(b.stub, job_id, lambda j: j.attempt == 2)
    takeover = time.perf_counter() - t_kill
    job = wait_job(b.stub, job_id)
    done = time.perf_counter() - t_kill
    print(f"SIGKILL mid-job, lease {args.lease:g} s: resumed by the other replica after {takeover:.1f} s, "
          f"SUCCEEDED {done:.1f} s after the kill (state {State.State.Name(job.state)}, attempt {job.attempt})", flush=True)

    c = stack.explainer(store, "--job-lease", str(args.lease), "--grace-period", "2")
    job_id, t_term = interrupt_mid_job(c, req, lambda: c.send_signal(signal.SIGTERM))
    code = c.wait(120)
    exited = time.perf_counter() - t_term
    job = wait_job(b.stub, job_id, lambda j: j.attempt == 2)
    takeover = time.perf_counter() - t_term
    job = wait_job(b.stub, job_id)
    done = time.perf_counter() - t_term
    print(f"SIGTERM mid-job, grace 2 s: exited {code} after {exited:.1f} s, resumed after {takeover:.1f} s, "
          f"SUCCEEDED {done:.1f} s after the signal (attempt {job.attempt})", flush=True)

    d = stack.explainer(store, "--job-lease", str(args.lease), "--grace-period", str(args.grace))
    job_id, t_term = interrupt_mid_job(d, req, lambda: d.send_signal(signal.SIGTERM))
    code = d.wait(args.grace + 60)
    exited = time.perf_counter() - t_term
    job = wait_job(b.stub, job_id)
    print(f"SIGTERM mid-job, grace {args.grace:g} s: the job finished on the same replica "
          f"(attempt {job.attempt}, {State.State.Name(job.state)}), which exited {code} after {exited:.1f} s")
    print(f"store half-written: {half_written(store) or 'nothing'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["load", "recovery"])
    p.add_argument("--model-dir", type=Path, default=REPO / "models")
    p.add_argument("--shared", type=Path, default=Path(os.environ.get("AUDIOLIME_SHARED", REPO.parent / "shared")))
    p.add_argument("--song", default="Karissa_Hobbs_-_Lets_Go_Fishin.ogg")
    p.add_argument("--max-concurrent", type=int, default=4)
    p.add_argument("--max-queued", type=int, default=16)
    p.add_argument("--extra", type=int, default=100, help="requests beyond the limits (load)")
    p.add_argument("--num-samples", type=int, default=256, help="N of each load explanation")
    p.add_argument("--lease", type=float, default=30.0, help="job lease (recovery)")
    p.add_argument("--grace", type=float, default=180.0, help="a grace period long enough to finish (recovery)")
    args = p.parse_args(argv)
    song = args.shared / "audio" / args.song
    print(f"load average at start: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-jobs.") as tmp:
        stack = Stack(args.model_dir.resolve(), Path(tmp))
        try:
            (load if args.mode == "load" else recovery)(stack, song, args)
        finally:
            stack.close()
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
