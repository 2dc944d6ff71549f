"""``audiolime.v1.Explainer`` gRPC server: flags, wiring and lifecycle (the servicer is in
:mod:`audiolime.explainer.servicer`, the core in :mod:`audiolime.explainer.service`), plus, for a
``file://`` store, the HTTP server of its signed URLs.

Run: ``python -m audiolime.explainer.server --store file:///data --separator HOST:50051
--tagger HOST:8500`` (every flag has an environment fallback; see docs/service-contract.md and
docs/security.md for TLS, tokens and limits). Imports no TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from audiolime import inputs
from audiolime.errors import InvalidInput
from audiolime.explain import limits
from audiolime.explain.limits import Limits
from audiolime.explainer.http import make_http_server
from audiolime.explainer.jobs import JobConfig, JobRunner
from audiolime.explainer.jobstore import JobStore
from audiolime.explainer.remote import RemoteSeparator, RemoteTagger, RetryPolicy, make_channel
from audiolime.explainer.service import ExplainerService, ServiceConfig
from audiolime.explainer.servicer import SERVICE_NAME, ExplainerServicer
from audiolime.server import logs, metrics, runtime
from audiolime.server.admission import Admission
from audiolime.store import ObjectStore, check_conditional_writes, open_store
from audiolime.v1 import explainer_pb2_grpc

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    env = runtime.env_default
    p = argparse.ArgumentParser(prog="audiolime-explainer", description=__doc__.splitlines()[0])
    runtime.add_common_flags(p, 50052)
    p.add_argument("--store", default=env("AUDIOLIME_STORE", None),
                   help="object store: s3://bucket/prefix or file:///path ($AUDIOLIME_STORE)")
    p.add_argument("--s3-endpoint", default=env("AWS_ENDPOINT_URL", None), help="($AWS_ENDPOINT_URL)")
    p.add_argument("--s3-region", default=env("AWS_REGION", None), help="($AWS_REGION)")
    p.add_argument("--separator", default=env("AUDIOLIME_SEPARATOR_TARGET", "localhost:50051"),
                   help="separator target ($AUDIOLIME_SEPARATOR_TARGET)")
    p.add_argument("--tagger", default=env("AUDIOLIME_TAGGER_TARGET", "localhost:8500"),
                   help="tagger target, round_robin over resolved addresses ($AUDIOLIME_TAGGER_TARGET)")
    p.add_argument("--batch-size", type=int, default=env("AUDIOLIME_BATCH_SIZE", 64, int))
    p.add_argument("--max-in-flight", type=int, default=env("AUDIOLIME_MAX_IN_FLIGHT", 4, int))
    p.add_argument("--tagger-timeout", type=float, default=env("AUDIOLIME_TAGGER_TIMEOUT", 30.0, float),
                   help="seconds per tagger call ($AUDIOLIME_TAGGER_TIMEOUT)")
    p.add_argument("--tagger-retries", type=int, default=env("AUDIOLIME_TAGGER_RETRIES", 5, int),
                   help="retries per tagger call on UNAVAILABLE/DEADLINE_EXCEEDED/RESOURCE_EXHAUSTED")
    p.add_argument("--tagger-backoff", type=float, default=env("AUDIOLIME_TAGGER_BACKOFF", 0.25, float),
                   help="first retry backoff in seconds, doubling up to 4 s, jittered ($AUDIOLIME_TAGGER_BACKOFF)")
    p.add_argument("--separator-timeout", type=float, default=env("AUDIOLIME_SEPARATOR_TIMEOUT", 900.0, float),
                   help="seconds per Separate call ($AUDIOLIME_SEPARATOR_TIMEOUT)")
    p.add_argument("--separator-retries", type=int, default=env("AUDIOLIME_SEPARATOR_RETRIES", 10, int),
                   help="retries of a Separate call on UNAVAILABLE/RESOURCE_EXHAUSTED, backoff doubling up to "
                        "30 s (default 10: about 3 minutes, several separations' worth of a busy separator) "
                        "($AUDIOLIME_SEPARATOR_RETRIES)")
    p.add_argument("--http-port", type=int, default=env("AUDIOLIME_HTTP_PORT", 8080, int),
                   help="signed-URL HTTP server for a file:// store ($AUDIOLIME_HTTP_PORT)")
    p.add_argument("--public-url", default=env("AUDIOLIME_PUBLIC_URL", None),
                   help="base of local signed URLs (default http://127.0.0.1:<http-port>)")
    p.add_argument("--url-secret", default=env("AUDIOLIME_URL_SECRET", None),
                   help="HMAC key of local signed URLs (default: random per process)")
    limits.add_flags(p, env)
    inputs.add_flags(p, env)
    p.add_argument("--auth-tokens", type=Path, default=env("AUDIOLIME_AUTH_TOKENS_FILE", None, Path),
                   help="bearer-token file (one token per line, optionally name:token); callers without a valid "
                        "token get UNAUTHENTICATED, health checks exempt ($AUDIOLIME_AUTH_TOKENS_FILE)")
    p.add_argument("--tls-ca", type=Path, default=env("AUDIOLIME_TLS_CA", None, Path),
                   help="PEM CA certificate of the separator's and tagger's TLS certificates: turns TLS on for "
                        "those channels ($AUDIOLIME_TLS_CA)")
    p.add_argument("--tls-client-cert", type=Path, default=env("AUDIOLIME_TLS_CLIENT_CERT", None, Path),
                   help="PEM certificate the explainer presents to separator and tagger that require client "
                        "certificates (mTLS) ($AUDIOLIME_TLS_CLIENT_CERT)")
    p.add_argument("--tls-client-key", type=Path, default=env("AUDIOLIME_TLS_CLIENT_KEY", None, Path),
                   help="PEM private key of --tls-client-cert ($AUDIOLIME_TLS_CLIENT_KEY)")
    p.add_argument("--max-concurrent", type=int, default=env("AUDIOLIME_MAX_CONCURRENT", 4, int),
                   help="explanations running at once on this replica: unary, stream and jobs "
                        "($AUDIOLIME_MAX_CONCURRENT)")
    p.add_argument("--max-queued", type=int, default=env("AUDIOLIME_MAX_QUEUED", 8, int),
                   help="unary/stream explanations waiting for a slot on this replica, and jobs waiting in the "
                        "store; beyond -> RESOURCE_EXHAUSTED ($AUDIOLIME_MAX_QUEUED)")
    p.add_argument("--job-lease", type=float, default=env("AUDIOLIME_JOB_LEASE", 30.0, float),
                   help="seconds a job's worker may go without renewing its lease before another replica "
                        "resumes the job ($AUDIOLIME_JOB_LEASE)")
    p.add_argument("--job-poll", type=float, default=env("AUDIOLIME_JOB_POLL", 1.0, float),
                   help="seconds between queue scans and cancellation checks ($AUDIOLIME_JOB_POLL)")
    p.add_argument("--job-attempts", type=int, default=env("AUDIOLIME_JOB_ATTEMPTS", 5, int),
                   help="attempts a job may lose to killed workers or unavailable backends (then retried after a "
                        "lease) before it fails ($AUDIOLIME_JOB_ATTEMPTS)")
    p.add_argument("--job-ttl", type=float, default=env("AUDIOLIME_JOB_TTL", 3600.0, float),
                   help="seconds a finished job (state and artifacts) is kept; unary results are kept as long, "
                        "or as long as their URLs live ($AUDIOLIME_JOB_TTL)")
    return p


def backend_credentials(args: argparse.Namespace):
    """TLS credentials of the channels to separator and tagger (None: plaintext)."""
    if args.tls_ca is None:
        if args.tls_client_cert or args.tls_client_key:
            raise InvalidInput("--tls-client-cert/--tls-client-key need --tls-ca")
        return None
    from audiolime.tls import channel_credentials

    return channel_credentials(args.tls_ca, args.tls_client_cert, args.tls_client_key)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure_logging("explainer", args.log_level)
    if not args.store:
        log.error("--store (or $AUDIOLIME_STORE) is required")
        return 2
    try:
        security = runtime.Security.from_args(args)
        bounds = Limits.from_args(args)
        allowed = inputs.parse_locations(args.input_buckets)
        backend_tls = backend_credentials(args)
        job_config = JobConfig(lease_s=args.job_lease, poll_s=args.job_poll, ttl_s=args.job_ttl,
                               max_attempts=args.job_attempts, max_queued=args.max_queued,
                               sweep_s=min(60.0, max(args.job_poll, args.job_ttl / 4))).check()
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
        httpd = make_http_server("0.0.0.0" if args.host in ("[::]", "0.0.0.0") else args.host, args.http_port)
        secret = args.url_secret
        if not secret:
            secret = secrets.token_hex(32)
            log.warning("no --url-secret: signed URLs are valid only for this process")
        public = args.public_url or f"http://127.0.0.1:{httpd.server_port}"
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
                                backoff_s=args.tagger_backoff)
    # A busy separator answers RESOURCE_EXHAUSTED while one separation takes 5-70 s: wait longer.
    separator_policy = RetryPolicy(timeout_s=args.separator_timeout, retries=args.separator_retries,
                                   backoff_s=max(args.tagger_backoff, 1.0), backoff_cap_s=30.0)
    tagger_channel = make_channel(args.tagger, backend_tls)
    separator_channel = make_channel(args.separator, backend_tls)

    def tagger_factory(name: str, version: int | None) -> RemoteTagger:
        return RemoteTagger(tagger_channel, name, version, tagger_policy)

    separator = RemoteSeparator(separator_channel, store, separator_policy, args.s3_endpoint, args.s3_region)
    service = ExplainerService(store, tagger_factory, separator,
                               ServiceConfig(batch_size=args.batch_size, max_in_flight=args.max_in_flight,
                                             limits=bounds),
                               read_uri=inputs.InputReader(store, args.s3_endpoint, args.s3_region, allowed, bounds))
    worker_id = f"{socket.gethostname()}-{os.getpid()}"
    jobs = JobRunner(JobStore(store, args.job_lease, args.job_ttl), service.explain, admission, worker_id, job_config)
    servicer = ExplainerServicer(service, jobs, admission)
    try:
        running = runtime.start(
            [runtime.Service(SERVICE_NAME, lambda s: explainer_pb2_grpc.add_ExplainerServicer_to_server(servicer, s))],
            args.host, args.port, args.metrics_port or None, args.max_workers, security=security,
            max_receive_bytes=bounds.max_receive_bytes,
            maximum_concurrent_rpcs=4 * args.max_workers)  # a flood beyond: RESOURCE_EXHAUSTED from gRPC
    except OSError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 1
    jobs.start()
    log.info("jobs", extra={"worker": worker_id, "lease_s": args.job_lease, "ttl_s": args.job_ttl,
                            "max_concurrent": args.max_concurrent, "max_queued": args.max_queued})
    if httpd is not None:
        httpd.store = store  # type: ignore[assignment]
        threading.Thread(target=httpd.serve_forever, name="signed-url-http", daemon=True).start()
        log.info("signed-URL HTTP server", extra={"http_port": httpd.server_port})
        running.on_stop.append(httpd.shutdown)

    def drain(deadline: float) -> None:
        admission.close()  # waiting requests give up (UNAVAILABLE: retry elsewhere); running ones go on
        jobs.drain(deadline)

    running.on_drain.append(drain)
    running.on_stop.insert(0, jobs.stop)
    running.on_stop.append(tagger_channel.close)
    running.on_stop.append(separator_channel.close)
    runtime.run_until_signalled(running, args.grace_period)
    return 0


if __name__ == "__main__":
    sys.exit(main())
