"""Server lifecycle: gRPC server with health (and reflection with ``--reflection``), TLS/mTLS,
optional bearer-token authentication, metrics HTTP endpoint, and SIGTERM handling: report
NOT_SERVING, stop accepting RPCs, let in-flight RPCs and background work (``on_drain`` hooks, e.g.
the explainer's jobs) finish within one grace period, then run the ``on_stop`` hooks (close
channels last)."""

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
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from audiolime.errors import InvalidInput
from audiolime.server.auth import AuthInterceptor, TokenFile
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
    p.add_argument("--tls-cert", type=Path, default=env_default("AUDIOLIME_TLS_CERT", None, Path),
                   help="PEM certificate (chain) of the gRPC port; with --tls-key turns TLS on; re-read when it "
                        "changes ($AUDIOLIME_TLS_CERT)")
    p.add_argument("--tls-key", type=Path, default=env_default("AUDIOLIME_TLS_KEY", None, Path),
                   help="PEM private key of --tls-cert ($AUDIOLIME_TLS_KEY)")
    p.add_argument("--tls-client-ca", type=Path, default=env_default("AUDIOLIME_TLS_CLIENT_CA", None, Path),
                   help="PEM CA certificate(s): require client certificates signed by it (mTLS) "
                        "($AUDIOLIME_TLS_CLIENT_CA)")
    p.add_argument("--reflection", action="store_true", default=env_default("AUDIOLIME_REFLECTION", False, bool),
                   help="serve gRPC server reflection (off by default) ($AUDIOLIME_REFLECTION)")
    p.add_argument("--health-port", type=int, default=env_default("AUDIOLIME_HEALTH_PORT", 0, int),
                   help="also serve grpc.health.v1 alone, plaintext, on this port (for probes that cannot do "
                        "TLS); 0 = off ($AUDIOLIME_HEALTH_PORT)")


@dataclass(frozen=True)
class Security:
    """How a server is reached: TLS files (mTLS with a client CA), tokens, reflection, health port."""

    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_tokens: Path | None = None
    reflection: bool = False
    health_port: int = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Security:
        sec = cls(args.tls_cert, args.tls_key, args.tls_client_ca, getattr(args, "auth_tokens", None),
                  bool(args.reflection), int(args.health_port or 0))
        if (sec.tls_cert is None) != (sec.tls_key is None):
            raise InvalidInput("--tls-cert and --tls-key go together")
        if sec.tls_client_ca is not None and sec.tls_cert is None:
            raise InvalidInput("--tls-client-ca (mTLS) needs --tls-cert and --tls-key")
        if sec.tls:  # fail at once on unreadable or mismatched files, not after loading models
            from audiolime.tls import ServerCertificates

            ServerCertificates(sec.tls_cert, sec.tls_key, sec.tls_client_ca)
        if sec.auth_tokens:
            TokenFile(sec.auth_tokens)
        return sec

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


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
    health_server: grpc.Server | None = None
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
        if self.health_server is not None:
            self.health_server.stop(0).wait()
        for callback in self.on_stop:
            callback()
        log.info("stopped", extra={"drain_s": round(time.monotonic() - started, 3)})


def start(services: Sequence[Service], host: str, port: int, metrics_port: int | None, max_workers: int = 16,
          extra_interceptors: Sequence[grpc.ServerInterceptor] = (), security: Security = Security(),
          max_receive_bytes: int = MAX_MESSAGE_BYTES, maximum_concurrent_rpcs: int | None = None) -> RunningServer:
    """Start a gRPC server hosting ``services`` plus health (and reflection if asked).

    ``max_receive_bytes``: larger requests are refused by gRPC itself (RESOURCE_EXHAUSTED) before
    any handler runs; so are calls beyond ``maximum_concurrent_rpcs`` at once (instead of queueing
    for a handler thread without bound). TLS, mTLS and token files are read here: a bad one raises
    ``InvalidInput``."""
    auth = [AuthInterceptor(TokenFile(security.auth_tokens))] if security.auth_tokens else []
    credentials = None
    if security.tls:
        from audiolime.tls import ServerCertificates

        credentials = ServerCertificates(security.tls_cert, security.tls_key, security.tls_client_ca).credentials()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[*server_interceptors(auth), *extra_interceptors],
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
        options=[("grpc.max_receive_message_length", max_receive_bytes),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.so_reuseport", 0)],
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [s.name for s in services]
    for s in services:
        s.add(server)
    if security.reflection:
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    address = f"{host}:{port}"
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {address}")
    health_server = None
    if security.health_port:
        health_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"),
                                    options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        if health_server.add_insecure_port(f"{host}:{security.health_port}") == 0:
            raise OSError(f"cannot bind health port {host}:{security.health_port}")
    mport = None
    if metrics_port is not None and metrics_port >= 0 and metrics_port != 0:
        httpd, _ = start_http_server(metrics_port)
        mport = httpd.server_port
    server.start()
    if health_server is not None:
        health_server.start()
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if security.auth_tokens and not security.tls:
        log.warning("bearer tokens on a plaintext port: use --tls-cert/--tls-key unless the network is trusted")
    log.info("serving", extra={"grpc_port": bound, "metrics_port": mport, "services": names,
                               "tls": "mtls" if security.tls_client_ca else ("tls" if security.tls else "off"),
                               "auth": "tokens" if security.auth_tokens else "off",
                               "reflection": security.reflection, "health_port": security.health_port or None,
                               "max_receive_bytes": max_receive_bytes})
    return RunningServer(server, bound, mport, health_servicer, names, health_server=health_server)


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
