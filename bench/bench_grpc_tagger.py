"""Throughput of the gRPC tagger server vs the in-process tagger, and what server-side batching buys.

    python bench/bench_grpc_tagger.py [--model-dir models] [--model musicnn-msd]

1. In-process ``LocalTagger.predict`` at batch 32 (windows/s), in this process.
2. Our TF-Serving-compatible server (``python -m audiolime.tagger.server``, batching on) as a
   subprocess on loopback, driven by ``--clients`` concurrent clients sending batch-32 Predict
   requests (``tensor_content``, via the explainer's RemoteTagger); ratio to (1), target >= 0.9.
3. 32 concurrent clients sending batch-1 requests, batching on vs off (windows/s and ratio).

Every number comes from this one run, in interleaved rounds (best and median kept) so that other
load on the machine hits all variants alike; windows per CPU second (server + client processes)
is the contention-robust efficiency. Windows are noise (the model cost does
not depend on the content).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np

from audiolime.processes import free_port

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def server(model_base: Path, name: str, batching: str | None, max_workers: int) -> Iterator[tuple[int, int]]:
    """Our tagger server as a subprocess until SERVING; yields (port, pid); always stopped."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "audiolime.tagger.server", "--host", "127.0.0.1", "--port", str(port),
               "--metrics-port", "0", "--log-level", "WARNING", "--max-workers", str(max_workers),
               "--model-base-path", str(model_base / name), "--model-name", name]
        if batching is not None:
            (Path(tmp) / "batching.config").write_text(batching)
            cmd += ["--enable-batching", "--batching-parameters-file", str(Path(tmp) / "batching.config")]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                health = health_pb2_grpc.HealthStub(ch)
                deadline = time.monotonic() + 300
                while True:
                    if proc.poll() is not None:
                        raise SystemExit(f"tagger server exited with {proc.returncode}: {' '.join(cmd)}")
                    try:
                        if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                            break
                    except grpc.RpcError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit("tagger server did not become SERVING")
                    time.sleep(0.3)
            yield port, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (all its threads); this process when ``pid`` is None."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(port: int, pid: int, name: str, clients: int, batch: int, requests_per_client: int,
          window: int) -> tuple[float, float]:
    """(windows/s, windows per CPU second of server + clients) of ``clients`` threads each sending
    ``requests_per_client`` Predicts of ``batch`` rows."""
    from audiolime.channels import make_channel
    from audiolime.explainer.remote import RemoteTagger

    channel = make_channel(f"127.0.0.1:{port}")
    tagger = RemoteTagger(channel, name)
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-0.3, 0.3, (batch, window)).astype(np.float32) for _ in range(clients)]
    for x in xs[:2]:  # connection and server warm-up
        tagger.predict(x)
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def client(x: np.ndarray) -> None:
        barrier.wait()
        try:
            for _ in range(requests_per_client):
                out = tagger.predict(x)
                assert out.shape == (batch, len(tagger.labels))
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(x,)) for x in xs]
    for t in threads:
        t.start()
    barrier.wait()
    start, cpu0 = time.perf_counter(), cpu_seconds() + cpu_seconds(pid)
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds() + cpu_seconds(pid) - cpu0
    channel.close()
    if errors:
        raise SystemExit(f"client error: {errors[0]}")
    n = clients * requests_per_client * batch
    return n / elapsed, n / cpu


class InProcess:
    """``LocalTagger.predict`` at a fixed batch size, timed per round."""

    def __init__(self, model_base: Path, name: str, batch: int) -> None:
        from audiolime.tagger.savedmodel import LocalTagger

        self.tagger = LocalTagger.load(model_base, name)
        self.x = np.random.default_rng(0).uniform(-0.3, 0.3, (batch, self.tagger.window_samples)).astype(np.float32)
        for _ in range(2):
            self.tagger.predict(self.x)

    def rate(self, repeats: int) -> tuple[float, float]:
        """(windows/s, windows per CPU second)."""
        start, cpu0 = time.perf_counter(), cpu_seconds()
        for _ in range(repeats):
            self.tagger.predict(self.x)
        n = len(self.x) * repeats
        return n / (time.perf_counter() - start), n / (cpu_seconds() - cpu0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=Path(os.environ.get("AUDIOLIME_MODEL_DIR", REPO / "models")))
    p.add_argument("--model", default="musicnn-msd")
    p.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds; best and median kept")
    p.add_argument("--clients", type=int, default=3, help="concurrent batch-32 clients (default 3)")
    p.add_argument("--requests", type=int, default=2, help="batch-32 requests per client per round (default 2)")
    p.add_argument("--repeats", type=int, default=6, help="in-process batch-32 calls per round (default 6)")
    p.add_argument("--small-clients", type=int, default=32, help="concurrent batch-1 clients (default 32)")
    p.add_argument("--small-requests", type=int, default=6, help="batch-1 requests per client per round (default 6)")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--batch-timeout-micros", type=int, default=2000)
    p.add_argument("--num-batch-threads", type=int, default=os.cpu_count() or 1,
                   help="batch threads (default: CPU count, as TF Serving)")
    args = p.parse_args(argv)
    base = args.model_dir / "serving"
    batching = (f"max_batch_size {{ value: {args.max_batch_size} }}\n"
                f"batch_timeout_micros {{ value: {args.batch_timeout_micros} }}\n"
                f"num_batch_threads {{ value: {args.num_batch_threads} }}\n"
                "max_enqueued_batches { value: 1000 }\n")
    workers = max(64, 2 * args.small_clients)
    local = InProcess(base, args.model, 32)
    window = local.tagger.window_samples
    print(f"{args.model}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; batching: max_batch_size "
          f"{args.max_batch_size}, batch_timeout_micros {args.batch_timeout_micros}, num_batch_threads "
          f"{args.num_batch_threads}; {args.rounds} interleaved rounds")
    rates: dict[str, list[tuple[float, float]]] = {k: [] for k in ("local", "on32", "on1", "off1")}
    with server(base, args.model, batching, workers) as (on, on_pid), \
            server(base, args.model, None, workers) as (off, off_pid):
        for r in range(args.rounds):
            rates["local"].append(local.rate(args.repeats))
            rates["on32"].append(drive(on, on_pid, args.model, args.clients, 32, args.requests, window))
            rates["on1"].append(drive(on, on_pid, args.model, args.small_clients, 1, args.small_requests, window))
            rates["off1"].append(drive(off, off_pid, args.model, args.small_clients, 1, args.small_requests, window))
            print(f"  round {r + 1} (windows/s): " + ", ".join(f"{k} {v[-1][0]:.1f}" for k, v in rates.items()),
                  flush=True)
    best = {k: max(w for w, _ in v) for k, v in rates.items()}
    med = {k: float(np.median([w for w, _ in v])) for k, v in rates.items()}
    eff = {k: float(np.median([c for _, c in v])) for k, v in rates.items()}
    rows = [("in-process LocalTagger, batch 32", "local"),
            (f"gRPC, batching on, {args.clients} clients x batch 32", "on32"),
            (f"gRPC, batching on, {args.small_clients} clients x batch 1", "on1"),
            (f"gRPC, batching off, {args.small_clients} clients x batch 1", "off1")]
    print(f"{'':<44} {'windows/s':>9} {'windows/s':>9} {'windows per':>11}")
    print(f"{'':<44} {'best':>9} {'median':>9} {'CPU second':>11}")
    for label, key in rows:
        print(f"{label:<44} {best[key]:9.1f} {med[key]:9.1f} {eff[key]:11.1f}")
    print(f"ratio gRPC batch-32 / in-process: best {best['on32'] / best['local']:.2f}, median "
          f"{med['on32'] / med['local']:.2f}, per CPU second {eff['on32'] / eff['local']:.2f}  (target >= 0.9)")
    print(f"ratio batch-1 clients, batching on / off: best {best['on1'] / best['off1']:.2f}, median "
          f"{med['on1'] / med['off1']:.2f}, per CPU second {eff['on1'] / eff['off1']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
