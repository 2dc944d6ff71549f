"""``audiolime.v1.Explainer`` gRPC server: its settings (:data:`audiolime.settings.EXPLAINER`),
wiring and lifecycle (the servicer is in :mod:`audiolime.explainer.servicer`, the API in
:mod:`audiolime.explainer.core`), plus, for a ``file://`` store, the HTTP server of its signed URLs.

Run: ``audiolime serve explainer --store file:///data --separator HOST:50051 --tagger HOST:8500``
(every flag has an environment fallback; see docs/service-contract.md and docs/security.md for
TLS, tokens and limits). Imports no TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from audiolime import inputs, settings
from audiolime.channels import make_channel
from audiolime.errors import InvalidInput, ResourceExhausted, Unavailable
from audiolime.explainer.core import ExplainerCore
from audiolime.explainer.http import make_http_server, parse_origins
from audiolime.explainer.jobs import JobRunner
from audiolime.explainer.jobstore import JobConfig, JobStore
from audiolime.explainer.remote import RemoteSeparator, RemoteTagger, RetryPolicy
from audiolime.explainer.service import ExplainerService, ServiceConfig
from audiolime.explainer.servicer import SERVICE_NAME, ExplainerServicer
from audiolime.server import logs, metrics, runtime, tracing
from audiolime.server.admission import Admission
from audiolime.server.interceptors import ClientMetricsInterceptor
from audiolime.store import ObjectStore, check_conditional_writes, open_store
from audiolime.v1 import explainer_pb2_grpc

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    return settings.parser("audiolime serve explainer",
                           "audiolime.v1.Explainer gRPC service: explanations through a separator and a tagger "
                           "(no TensorFlow)", settings.EXPLAINER)


def backend_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials of the channels to separator and tagger (None: plaintext)."""
    if args.tls_ca is None:
        if args.tls_client_cert or args.tls_client_key:
            raise InvalidInput("--tls-client-cert/--tls-client-key need --tls-ca")
        return None
    from audiolime.tls import channel_credentials

    return channel_credentials(args.tls_ca, args.tls_client_cert, args.tls_client_key)


def url_secret(args: argparse.Namespace) -> str:
    """The signed-URL key: ``--url-secret-file``, else ``$AUDIOLIME_URL_SECRET``, else random (valid
    for this process only). Never a flag: a command line is readable by every user of the host."""
    if args.url_secret_argv:
        raise InvalidInput("--url-secret is not accepted (a command line is readable by every user of the host): "
                           "set $AUDIOLIME_URL_SECRET or --url-secret-file")
    if args.url_secret_file is not None:
        try:
            secret = Path(args.url_secret_file).read_text().strip()
        except OSError as exc:
            raise InvalidInput(f"--url-secret-file {args.url_secret_file}: {exc.strerror or exc}") from None
        if len(secret) < 16:
            raise InvalidInput(f"--url-secret-file {args.url_secret_file}: the key must be at least 16 characters")
        return secret
    if args.url_secret:
        return args.url_secret
    log.warning("no $AUDIOLIME_URL_SECRET or --url-secret-file: signed URLs are valid only for this process")
    return secrets.token_hex(32)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure_logging("explainer", args.log_level)
    tracing.configure("explainer", args.otlp_endpoint)
    if not args.store:  # what the bare image says: one line, like the separator's
        print("audiolime serve explainer: error: --store (or $AUDIOLIME_STORE) is required: s3://bucket/prefix "
              "or file:///path", file=sys.stderr)
        return 2
    try:
        security = runtime.Security.from_args(args)
        bounds = settings.limits_from(args)
        allowed = inputs.parse_locations(args.input_buckets)
        backend_tls = backend_credentials(args)
        job_config = JobConfig(lease_s=args.job_lease, poll_s=args.job_poll, ttl_s=args.job_ttl,
                               max_attempts=args.job_attempts, max_queued=args.max_queued,
                               sweep_s=min(60.0, max(args.job_poll, args.job_ttl / 4)))
        admission = Admission(args.max_concurrent, args.max_queued, metrics.EXPLANATIONS, "explainer", "explanations")
    except (InvalidInput, ValueError) as exc:
        log.error(f"bad configuration: {exc}")
        return 2
    if args.max_concurrent + args.max_queued >= args.max_workers:
        log.error("--max-concurrent + --max-queued must be below --max-workers: waiting and running explanations "
                  "each hold a gRPC handler thread, and GetExplanation needs one too",
                  extra={"max_concurrent": args.max_concurrent, "max_queued": args.max_queued,
                         "max_workers": args.max_workers})
        return 2
    is_local = not args.store.startswith("s3://")
    httpd = None
    if is_local:
        try:
            secret = url_secret(args)
            origins = parse_origins(args.cors_origins)
        except InvalidInput as exc:
            log.error(f"bad configuration: {exc}")
            return 2
        httpd = make_http_server(args.host, args.http_port, max(1, args.http_timeout), cors_origins=origins)
        public = args.public_url or f"http://127.0.0.1:{httpd.port}"
        store: ObjectStore = open_store(args.store, public_url=public, secret=secret)
    else:
        store = open_store(args.store, endpoint_url=args.s3_endpoint, region=args.s3_region)
    try:
        conditional = check_conditional_writes(store)
    except Exception as exc:  # noqa: BLE001 - unreachable store, bad credentials: one log line, exit 1
        log.error("cannot write to the object store", extra={"store": args.store, "error": str(exc)})
        return 1
    if not conditional:
        log.error("the object store does not honour conditional writes (S3 If-None-Match); job leases and "
                  "exactly-once publishing need them", extra={"store": args.store})
        return 1
    tagger_policy = RetryPolicy(timeout_s=args.tagger_timeout, retries=args.tagger_retries,
                                backoff_s=args.tagger_backoff, budgeted=True)
    # A busy separator answers RESOURCE_EXHAUSTED while one separation takes 5-70 s: wait longer.
    separator_policy = RetryPolicy(timeout_s=args.separator_timeout, retries=args.separator_retries,
                                   backoff_s=args.separator_backoff, backoff_cap_s=30.0)
    def outgoing(target: str) -> list:  # grpc_client_* metrics of every attempt; with tracing, its span
        traced = [tracing.ClientTracingInterceptor(target)] if tracing.enabled() else []
        return [ClientMetricsInterceptor(), *traced]

    tagger_channel = make_channel(args.tagger, backend_tls, outgoing(args.tagger))
    separator_channel = make_channel(args.separator, backend_tls, outgoing(args.separator))

    def tagger_factory(name: str, version: int | None) -> RemoteTagger:
        return RemoteTagger(tagger_channel, name, version, tagger_policy)

    separator = RemoteSeparator(separator_channel, store, separator_policy, args.s3_endpoint, args.s3_region)
    service = ExplainerService(store, tagger_factory, separator,
                               ServiceConfig(batch_size=args.batch_size, max_in_flight=args.max_in_flight,
                                             limits=bounds, tagger_retry_budget=args.tagger_retry_budget,
                                             memory_budget=args.memory_budget, cache=args.cache),
                               read_uri=inputs.InputReader(store, args.s3_endpoint, args.s3_region, allowed, bounds))
    worker_id = f"{socket.gethostname()}-{os.getpid()}"
    server: list[runtime.RunningServer] = []

    def on_failure(exc: BaseException) -> None:  # a bug in a background loop: restart this replica
        server[0].unhealthy(exc)

    def run_job(task, sink, explanation_id):  # waits for memory up to a lease, then is retried later
        try:
            return service.run(task, sink, explanation_id, memory_wait_s=args.job_lease)
        except ResourceExhausted as exc:
            raise Unavailable(str(exc)) from None

    jobs = JobRunner(JobStore(store, job_config), run_job, admission, worker_id, on_failure)
    core = ExplainerCore(service, jobs, admission, on_failure)
    servicer = ExplainerServicer(core)
    try:
        running = runtime.start(
            [runtime.Service(SERVICE_NAME, lambda s: explainer_pb2_grpc.add_ExplainerServicer_to_server(servicer, s))],
            args.host, args.port, args.metrics_port or None, args.max_workers, security=security,
            max_receive_bytes=bounds.max_receive_bytes,
            maximum_concurrent_rpcs=4 * args.max_workers)  # a flood beyond: RESOURCE_EXHAUSTED from gRPC
    except OSError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 1
    server.append(running)
    core.start()
    log.info("jobs", extra={"worker": worker_id, "lease_s": args.job_lease, "ttl_s": args.job_ttl,
                            "max_concurrent": args.max_concurrent, "max_queued": args.max_queued})
    if httpd is not None:
        httpd.store = store  # type: ignore[assignment]  # a file:// store is a LocalStore
        httpd.start()
        log.info("signed-URL HTTP server", extra={"http_port": httpd.port, "threads": httpd.threads,
                                                  "timeout_s": httpd.timeout_s,
                                                  "connection_limit": httpd.connection_limit})
        running.on_stop.append(httpd.stop)
    running.on_drain.append(core.drain)
    running.on_stop.insert(0, core.stop)
    running.on_stop.append(tagger_channel.close)
    running.on_stop.append(separator_channel.close)
    runtime.run_until_signalled(running, args.grace_period)
    return 0


if __name__ == "__main__":
    sys.exit(main())
