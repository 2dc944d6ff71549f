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
import secrets
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from audiolime.explainer.http import make_http_server
from audiolime.explainer.jobs import JobTable
from audiolime.explainer.remote import RemoteSeparator, RemoteTagger, RetryPolicy, make_channel
from audiolime.explainer.service import ExplainerService, ServiceConfig
from audiolime.explainer.servicer import SERVICE_NAME, ExplainerServicer
from audiolime import inputs
from audiolime.errors import InvalidInput
from audiolime.explain import limits
from audiolime.explain.limits import Limits
from audiolime.server import logs, runtime
from audiolime.store import ObjectStore, open_store
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
    p.add_argument("--max-jobs", type=int, default=env("AUDIOLIME_MAX_JOBS", 64, int),
                   help="jobs remembered (queued, running, finished) ($AUDIOLIME_MAX_JOBS)")
    p.add_argument("--job-workers", type=int, default=env("AUDIOLIME_JOB_WORKERS", 2, int),
                   help="background explanations run at once ($AUDIOLIME_JOB_WORKERS)")
    p.add_argument("--job-ttl", type=float, default=env("AUDIOLIME_JOB_TTL", 3600.0, float),
                   help="seconds a finished job stays readable ($AUDIOLIME_JOB_TTL)")
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
    except InvalidInput as exc:
        log.error(f"bad configuration: {exc}")
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
    jobs = JobTable(service.explain,
                    workers=args.job_workers, max_jobs=args.max_jobs, ttl_s=args.job_ttl)
    servicer = ExplainerServicer(service, jobs)
    try:
        running = runtime.start(
            [runtime.Service(SERVICE_NAME, lambda s: explainer_pb2_grpc.add_ExplainerServicer_to_server(servicer, s))],
            args.host, args.port, args.metrics_port or None, args.max_workers, security=security,
            max_receive_bytes=bounds.max_receive_bytes)
    except OSError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 1
    if httpd is not None:
        httpd.store = store  # type: ignore[assignment]
        threading.Thread(target=httpd.serve_forever, name="signed-url-http", daemon=True).start()
        log.info("signed-URL HTTP server", extra={"http_port": httpd.server_port})
        running.on_stop.append(httpd.shutdown)
    running.on_stop.append(lambda: jobs.shutdown(wait=False))
    running.on_stop.append(tagger_channel.close)
    running.on_stop.append(separator_channel.close)
    runtime.run_until_signalled(running, args.grace_period)
    return 0


if __name__ == "__main__":
    sys.exit(main())
