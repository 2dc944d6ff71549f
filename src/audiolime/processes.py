"""Running the services as local processes: free ports, waiting for SERVING, stopping, scraping
metrics. Used by ``audiolime up``, the integration tests and the benchmarks (no TensorFlow)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_base(offsets: tuple[int, ...], host: str = HOST, tries: int = 200) -> int:
    """A base port B such that every B + offset is free (e.g. ``audiolime up``'s port layout)."""
    import random

    for _ in range(tries):
        base = random.randrange(20000, 60000)
        if all(port_free(base + d, host) for d in offsets):
            return base
    raise RuntimeError("no free port range")


def wait_serving(target: str, proc: subprocess.Popen | None, timeout_s: float, name: str = "server",
                 poll_s: float = 0.3, credentials=None) -> None:
    """Poll ``grpc.health.v1`` at ``target`` until the overall status is SERVING (over TLS with
    ``credentials``, :func:`audiolime.tls.channel_credentials`).

    Raises RuntimeError when ``proc`` exits first, TimeoutError after ``timeout_s``."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode}")
        # A fresh channel per attempt: a TLS channel whose first connection was refused (server
        # not listening yet) can keep failing its handshakes for many seconds after.
        channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
        with channel:
            try:
                if health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1) \
                        .status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} not SERVING on {target} within {timeout_s:.0f} s")
        time.sleep(poll_s)


def terminate(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int | None:
    """Send ``sig`` and wait; SIGKILL after ``timeout_s``. Returns the exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def scrape(port: int, host: str = HOST, timeout_s: float = 10.0) -> str:
    """The Prometheus text exposition at ``http://host:port/metrics``."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout_s) as resp:
        return resp.read().decode()


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` (e.g. ``x_total``, ``x_bucket``) whose labels include
    ``labels``; 0 when there are none."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


# -- what /proc says about processes ----------------------------------------------------------------
def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    import glob

    out: list[int] = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def memory(pid: int) -> tuple[int, int]:
    """(resident set size, its peak since start or the last :func:`reset_peak`), in bytes."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


def reset_peak(pid: int) -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) of ``pid`` to its current RSS (Linux >= 4.0)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
