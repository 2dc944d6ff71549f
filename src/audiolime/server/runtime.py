"""Server lifecycle: gRPC server with health and reflection, metrics HTTP endpoint, and
SIGTERM handling: report NOT_SERVING, stop accepting RPCs, let in-flight RPCs and background work
(``on_drain`` hooks, e.g. the explainer's jobs) finish within one grace period, then run the
``on_stop`` hooks (close channels last)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from audiolime.server.interceptors import server_interceptors

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def env_default(name: str, default, cast=str):
    """Flag default from an environment variable (read in main(), never at import)."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if cast is bool:
        return value.strip().lower() in ("1", "true", "yes", "on")
    try:
        return cast(value)
    except ValueError:  # one line, like argparse's own errors, never a traceback
        raise SystemExit(f"error: ${name}={value!r} is not a valid {getattr(cast, '__name__', 'value')}") from None


def add_common_flags(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--port", type=int, default=env_default("AUDIOLIME_PORT", port, int), help="gRPC port ($AUDIOLIME_PORT)")
    p.add_argument("--host", default=env_default("AUDIOLIME_HOST", "[::]"), help="bind address ($AUDIOLIME_HOST)")
    p.add_argument("--metrics-port", type=int, default=env_default("AUDIOLIME_METRICS_PORT", 9090, int),
                   help="Prometheus /metrics port, 0 = off ($AUDIOLIME_METRICS_PORT)")
    p.add_argument("--grace-period", type=float, default=env_default("AUDIOLIME_GRACE_PERIOD", 20.0, float),
                   help="seconds to drain in-flight RPCs on SIGTERM ($AUDIOLIME_GRACE_PERIOD)")
    p.add_argument("--max-workers", type=int, default=env_default("AUDIOLIME_MAX_WORKERS", 16, int),
                   help="gRPC handler threads ($AUDIOLIME_MAX_WORKERS)")
    p.add_argument("--log-level", default=env_default("AUDIOLIME_LOG_LEVEL", "INFO"), help="($AUDIOLIME_LOG_LEVEL)")


@dataclass
class Service:
    """One gRPC service to host: ``add`` registers the servicer; ``name`` is its full name."""

    name: str
    add: Callable[[grpc.Server], None]


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    metrics_port: int | None
    health: health.HealthServicer
    names: list[str]
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    on_drain: list[Callable[[float], None]] = field(default_factory=list)  # called with the deadline
    _stopped: threading.Event = field(default_factory=threading.Event)

    def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new RPCs, let in-flight ones and the ``on_drain`` hooks
        finish within ``grace`` seconds (one deadline, ``time.monotonic()``), then ``on_stop``."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        started = time.monotonic()
        deadline = started + grace
        self.health.enter_graceful_shutdown()
        log.info("draining", extra={"grace_period_s": grace})
        rpcs_done = self.server.stop(grace)
        for drain in self.on_drain:
            drain(deadline)
        rpcs_done.wait()
        for callback in self.on_stop:
            callback()
        log.info("stopped", extra={"drain_s": round(time.monotonic() - started, 3)})


def start(services: Sequence[Service], host: str, port: int, metrics_port: int | None, max_workers: int = 16,
          extra_interceptors: Sequence[grpc.ServerInterceptor] = (),
          maximum_concurrent_rpcs: int | None = None) -> RunningServer:
    """Start a gRPC server hosting ``services`` plus health and reflection. With
    ``maximum_concurrent_rpcs``, gRPC itself answers RESOURCE_EXHAUSTED beyond that many calls
    instead of queueing them for a handler thread without bound."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[*server_interceptors(), *extra_interceptors],
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.so_reuseport", 0)],
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [s.name for s in services]
    for s in services:
        s.add(server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {host}:{port}")
    mport = None
    if metrics_port is not None and metrics_port >= 0 and metrics_port != 0:
        httpd, _ = start_http_server(metrics_port)
        mport = httpd.server_port
    server.start()
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", extra={"grpc_port": bound, "metrics_port": mport, "services": names})
    return RunningServer(server, bound, mport, health_servicer, names)


def run_until_signalled(running: RunningServer, grace: float) -> None:
    """Block until SIGTERM/SIGINT, then drain gracefully."""
    done = threading.Event()

    def handle(signum, _frame) -> None:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        done.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    done.wait()
    running.stop(grace)
