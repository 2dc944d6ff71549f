"""Server lifecycle: gRPC server with health (and reflection v1 and v1alpha with ``--reflection``), TLS/mTLS,
optional bearer-token authentication, metrics HTTP endpoint, and SIGTERM handling: report
NOT_SERVING, stop accepting RPCs, let in-flight RPCs and background work (``on_drain`` hooks, e.g.
the explainer's jobs) finish within one grace period, then run the ``on_stop`` hooks (close
channels last)."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from audiolime.channels import MAX_MESSAGE_BYTES
from audiolime.errors import InvalidInput
from audiolime.server import metrics, reflection, tracing
from audiolime.server.auth import AuthInterceptor, ClientNameInterceptor, TokenFile
from audiolime.server.interceptors import server_interceptors
from audiolime.server.wsgi import HTTPServer, metrics_server

log = logging.getLogger(__name__)

# Our channels ping every 30 s (channels.py: keepalive_time_ms) so a long, silent call (an
# ExplainStream in a long predict stage, a Separate of a long song) is not cut by a proxy. gRPC
# servers accept a ping only every 5 minutes by default and answer the third early one with
# GOAWAY "too_many_pings" (the call fails UNAVAILABLE): accept one every 10 s.
KEEPALIVE_ACCEPTED = [("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
                      ("grpc.keepalive_permit_without_calls", 1)]

# Thread pools of every server (docs/security.md "Threads and connections"): ``--max-workers``
# handler threads on the gRPC port; HEALTH_WORKERS on the health port; gRPC core's own poller
# threads hold connections, so an idle TCP connection or a slow TLS handshake costs no handler
# thread and is closed after HANDSHAKE_TIMEOUT_MS (no handshake) or MAX_CONNECTION_IDLE_MS (no call).
HEALTH_WORKERS = 2
HANDSHAKE_TIMEOUT_MS = 10_000
MAX_CONNECTION_IDLE_MS = 300_000
# With tokens, a stream's receive window stays at HTTP/2's initial 64 KiB (no BDP probing, which
# grew it to megabytes): what a refused caller's body can put into the server before the refusal.
AUTH_OPTIONS = [("grpc.http2.bdp_probe", 0)]
MAX_STREAMS_PER_CONNECTION = 64  # HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: calls at once on one connection
CONNECTION_OPTIONS = [("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
                      ("grpc.max_connection_idle_ms", MAX_CONNECTION_IDLE_MS),
                      ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION)]


WATCH_REFUSED = "grpc.health.v1.Health/Watch is not served (a stream per caller would hold a server thread); poll Check"


class CheckOnlyHealth(health_pb2_grpc.HealthServicer):
    """``grpc.health.v1.Health`` with ``Check`` only: ``Watch`` is UNIMPLEMENTED at once, on every
    port. Health needs no token, and a Watch stream is held open for as long as the caller likes:
    behind the interceptors (which drop gRPC's ``experimental_non_blocking``) each one held a handler
    thread, so 16 of them froze the server for everyone. Probes (kubelet, ``audiolime up``) use Check."""

    def __init__(self, statuses: health.HealthServicer) -> None:
        self._statuses = statuses

    def Check(self, request, context):  # noqa: N802 - gRPC API
        return self._statuses.Check(request, context)

    def Watch(self, request, context):  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, WATCH_REFUSED)  # also on the health port (no interceptors)


@dataclass(frozen=True)
class Security:
    """How a server is reached: TLS files (mTLS with a client CA), tokens, reflection, health port."""

    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_tokens: Path | None = None
    reflection: bool = False
    health_port: int = 0
    allowed_client_names: tuple[str, ...] = ()  # with tls_client_ca: only these client certificates

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Security:
        sec = cls(args.tls_cert, args.tls_key, args.tls_client_ca, getattr(args, "auth_tokens", None),
                  bool(args.reflection), int(args.health_port or 0), tuple(args.allowed_client_names or ()))
        if (sec.tls_cert is None) != (sec.tls_key is None):
            raise InvalidInput("--tls-cert and --tls-key go together")
        if sec.tls_client_ca is not None and sec.tls_cert is None:
            raise InvalidInput("--tls-client-ca (mTLS) needs --tls-cert and --tls-key")
        if sec.allowed_client_names and sec.tls_client_ca is None:
            raise InvalidInput("--allowed-client-names needs --tls-client-ca (mTLS): without client certificates "
                               "there is no name to check")
        if sec.tls_cert is not None and sec.tls_key is not None:  # fail at once on bad files, not after loading models
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
    metrics_http: HTTPServer | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    def unhealthy(self, exc: BaseException) -> None:
        """A background part of the server broke (a bug): report NOT_SERVING so it is restarted."""
        log.error("reporting NOT_SERVING after a failure", extra={"error": repr(exc)})
        for name in ["", *self.names]:
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new RPCs, let in-flight ones and the ``on_drain`` hooks
        finish within ``grace`` seconds (one deadline, ``time.monotonic()``), then ``on_stop``."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        started = time.monotonic()
        deadline = started + grace
        phases: dict[str, float] = {}  # seconds per phase, logged with "stopped": where a slow exit went

        def phase(name: str, since: float) -> float:
            now = time.monotonic()
            phases[name] = round(now - since, 3)
            return now

        self.health.enter_graceful_shutdown()
        log.info("draining", extra={"grace_period_s": grace})
        rpcs_done = self.server.stop(grace)
        t = started
        for drain in self.on_drain:
            drain(deadline)
        t = phase("on_drain", t)
        rpcs_done.wait()
        t = phase("rpcs", t)
        if self.health_server is not None:
            self.health_server.stop(0).wait()
        if self.metrics_http is not None:
            self.metrics_http.stop()
        t = phase("ports", t)
        for callback in self.on_stop:
            callback()
        tracing.shutdown()  # last: the spans of the drained calls are exported
        phase("on_stop", t)
        log.info("stopped", extra={"drain_s": round(time.monotonic() - started, 3), "phases_s": phases})


def start(services: Sequence[Service], host: str, port: int, metrics_port: int | None, max_workers: int = 16,
          security: Security = Security(),
          max_receive_bytes: int = MAX_MESSAGE_BYTES, maximum_concurrent_rpcs: int | None = None) -> RunningServer:
    """Start a gRPC server hosting ``services`` plus health (and reflection if asked).

    ``max_receive_bytes``: larger requests are refused by gRPC itself (RESOURCE_EXHAUSTED) before
    any handler runs; so are calls beyond ``maximum_concurrent_rpcs`` at once (instead of queueing
    for a handler thread without bound). TLS, mTLS and token files are read here: a bad one raises
    ``InvalidInput``."""
    auth: list[grpc.ServerInterceptor] = []  # the certificate's name first, then the token
    if security.allowed_client_names:
        auth.append(ClientNameInterceptor(security.allowed_client_names))
    if security.auth_tokens:
        auth.append(AuthInterceptor(TokenFile(security.auth_tokens)))
    if maximum_concurrent_rpcs is None:
        maximum_concurrent_rpcs = 4 * max_workers  # beyond: RESOURCE_EXHAUSTED from gRPC, not an unbounded queue
    credentials = None
    if security.tls_cert is not None and security.tls_key is not None:
        from audiolime.tls import ServerCertificates

        credentials = ServerCertificates(security.tls_cert, security.tls_key, security.tls_client_ca).credentials()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=server_interceptors(auth, traced=tracing.enabled()),
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
        options=[("grpc.max_receive_message_length", max_receive_bytes),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.so_reuseport", 0), *KEEPALIVE_ACCEPTED, *CONNECTION_OPTIONS,
                 *(AUTH_OPTIONS if auth else [])],
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)  # the statuses; served Check-only
    check_only = CheckOnlyHealth(health_servicer)
    health_pb2_grpc.add_HealthServicer_to_server(check_only, server)
    names = [s.name for s in services]
    for s in services:
        s.add(server)
    if security.reflection:
        reflection.enable([*names, health.SERVICE_NAME], server)  # v1 and v1alpha
    address = f"{host}:{port}"
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {address}")
    health_server = None
    if security.health_port:
        health_server = grpc.server(futures.ThreadPoolExecutor(max_workers=HEALTH_WORKERS, thread_name_prefix="health"),
                                    maximum_concurrent_rpcs=16 * HEALTH_WORKERS,
                                    options=[("grpc.so_reuseport", 0), *CONNECTION_OPTIONS])
        health_pb2_grpc.add_HealthServicer_to_server(check_only, health_server)
        if health_server.add_insecure_port(f"{host}:{security.health_port}") == 0:
            raise OSError(f"cannot bind health port {host}:{security.health_port}")
    mport, metrics_http = None, None
    if metrics_port is not None and metrics_port > 0:
        metrics.set_build_info()
        try:  # on --host, like the gRPC port: loopback stays loopback
            metrics_http = metrics_server(host, metrics_port)
        except OSError as exc:
            raise OSError(f"cannot bind metrics port {host}:{metrics_port}: {exc.strerror or exc}") from exc
        mport = metrics_http.port
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
                               "allowed_client_names": list(security.allowed_client_names) or None,
                               "reflection": security.reflection, "health_port": security.health_port or None,
                               "tracing": "otlp" if tracing.enabled() else "off",
                               "max_receive_bytes": max_receive_bytes})
    return RunningServer(server, bound, mport, health_servicer, names, health_server=health_server,
                         metrics_http=metrics_http)


SIGNAL_POLL_S = 0.5


def run_until_signalled(running: RunningServer, grace: float) -> None:
    """Block until SIGTERM/SIGINT, then drain gracefully."""
    done = threading.Event()

    def handle(signum, _frame) -> None:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        done.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    # SIGUSR1 writes every thread's stack to stderr (the pod log) and the process goes on: a
    # hung drain or exit can be read, not guessed (`kill -USR1 <pid>`; docs/operations.md).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Never an untimed wait: the kernel may deliver SIGTERM to any thread (gRPC's, TensorFlow's),
    # and Python runs its handler only when the main thread next executes bytecode; a main thread
    # blocked in an untimed Event.wait() then never drains (it happened in CI: the in-flight call
    # answered, the process never exited). Waking every SIGNAL_POLL_S bounds the delay.
    while not done.wait(SIGNAL_POLL_S):
        pass
    running.stop(grace)
