"""``audiolime.v1.Explainer`` gRPC server: a thin servicer over ``service.ExplainerService``, plus
(for a ``file://`` store) the HTTP server that serves the local store's signed URLs.

Run: ``python -m audiolime.explainer.server --store file:///data --separator HOST:50051
--tagger HOST:8500`` (every flag has an environment fallback; see docs/service-contract.md).
Imports no TensorFlow.
"""

from __future__ import annotations

import argparse
import contextvars
import logging
import mimetypes
import queue
import secrets
import sys
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import grpc

from audiolime import errors
from audiolime.explainer import convert
from audiolime.explainer.remote import RemoteSeparator, RemoteTagger, RetryPolicy, make_channel, read_object
from audiolime.explainer.service import ExplainerService, JobTable, ServiceConfig
from audiolime.server import logs, runtime
from audiolime.server.interceptors import status_of
from audiolime.store import LocalStore, ObjectStore, open_store
from audiolime.v1 import explainer_pb2, explainer_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "audiolime.v1.Explainer"
_DONE = object()


class _Cancelled(Exception):
    """The ExplainStream caller cancelled; the worker stops at its next progress report."""


def error_status(exc: BaseException) -> tuple[str, str]:
    """Status code name and public message of a failed job (internal details hidden)."""
    code = status_of(exc)
    if code is None:
        return "INTERNAL", "internal error"
    return code.name, str(exc)


class ExplainerServicer(explainer_pb2_grpc.ExplainerServicer):
    """Translates protos to the service core and back; raises domain errors only."""

    def __init__(self, service: ExplainerService, jobs: JobTable) -> None:
        self.service = service
        self.jobs = jobs

    def Explain(self, request, context):
        return convert.explanation_to_proto(self.service.explain(convert.spec_from_proto(request)))

    def ExplainStream(self, request, context) -> Iterator[explainer_pb2.ExplainEvent]:
        spec = convert.spec_from_proto(request)
        self.service.validate(spec)  # bad requests fail before the stream starts
        events: queue.Queue = queue.Queue()
        outcome: dict = {}

        def on_progress(*p) -> None:
            if not context.is_active():  # the caller went away: stop spending tagger time
                raise _Cancelled()
            events.put(p)

        def run() -> None:
            try:
                outcome["result"] = self.service.explain(spec, on_progress)
            except _Cancelled:
                log.info("explanation cancelled by the caller")
            except BaseException as exc:  # noqa: BLE001 - re-raised in the RPC thread
                outcome["error"] = exc
            finally:
                events.put(_DONE)

        worker = threading.Thread(target=contextvars.copy_context().run, args=(run,), name="explain-stream",
                                  daemon=True)
        worker.start()
        while (item := events.get()) is not _DONE:
            yield explainer_pb2.ExplainEvent(progress=convert.progress_to_proto(*item))
        if "error" in outcome:
            raise outcome["error"]
        if "result" not in outcome:
            return
        yield explainer_pb2.ExplainEvent(result=convert.explanation_to_proto(outcome["result"]))

    def SubmitExplanation(self, request, context):
        job_id = self.jobs.submit(convert.spec_from_proto(request), validate=self.service.validate)
        return explainer_pb2.SubmitExplanationResponse(job_id=job_id)

    def GetExplanation(self, request, context):
        if not request.job_id:
            raise errors.InvalidInput("job_id is required")
        return convert.job_to_proto(self.jobs.get(request.job_id), error_status)


# -- signed-URL HTTP server for the local store --------------------------------------------------
class SignedURLServer(ThreadingHTTPServer):
    """Serves ``self.store`` (set after binding: the store's public URL needs the bound port)."""

    daemon_threads = True
    store: LocalStore | None = None


def make_http_server(host: str, port: int, store: LocalStore | None = None) -> SignedURLServer:
    """``GET /o/<key>?expires=..&sig=..``: 403 on a bad or expired signature, 404 when missing."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "audiolime-explainer"

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            self._serve(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(body=False)

        def _serve(self, body: bool) -> None:
            url = urlparse(self.path)
            if not url.path.startswith("/o/"):
                return self._reply(404, b"not found\n", "text/plain", body)
            key = unquote(url.path[3:])
            store = self.server.store
            q = parse_qs(url.query)
            try:
                ok = store.verify(key, q.get("expires", [""])[0], q.get("sig", [""])[0])
            except errors.InvalidInput:
                ok = False
            if not ok:
                return self._reply(403, b"forbidden: bad or expired signature\n", "text/plain", body)
            try:
                data = store.get(key)
            except errors.NotFound:
                return self._reply(404, b"not found\n", "text/plain", body)
            ctype = mimetypes.guess_type(key)[0] or "application/octet-stream"
            self._reply(200, data, ctype, body)

        def _reply(self, status: int, data: bytes, ctype: str, body: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "private, max-age=60")
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_message(self, fmt: str, *args) -> None:
            log.debug("http " + fmt, *args)

    httpd = SignedURLServer((host, port), Handler)
    httpd.store = store
    return httpd


# -- main --------------------------------------------------------------------------------------
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
    p.add_argument("--max-duration", type=float, default=env("AUDIOLIME_MAX_DURATION", 600.0, float))
    p.add_argument("--max-bytes", type=int, default=env("AUDIOLIME_MAX_BYTES", 200 * 1024 * 1024, int))
    p.add_argument("--max-jobs", type=int, default=env("AUDIOLIME_MAX_JOBS", 64, int),
                   help="jobs remembered (queued, running, finished) ($AUDIOLIME_MAX_JOBS)")
    p.add_argument("--job-workers", type=int, default=env("AUDIOLIME_JOB_WORKERS", 2, int),
                   help="background explanations run at once ($AUDIOLIME_JOB_WORKERS)")
    p.add_argument("--job-ttl", type=float, default=env("AUDIOLIME_JOB_TTL", 3600.0, float),
                   help="seconds a finished job stays readable ($AUDIOLIME_JOB_TTL)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure_logging("explainer", args.log_level)
    if not args.store:
        log.error("--store (or $AUDIOLIME_STORE) is required")
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
    tagger_channel = make_channel(args.tagger)
    separator_channel = make_channel(args.separator)

    def tagger_factory(name: str, version: int | None, request_id: str | None) -> RemoteTagger:
        return RemoteTagger(tagger_channel, name, version, tagger_policy, request_id)

    separator = RemoteSeparator(separator_channel, store, separator_policy, args.s3_endpoint, args.s3_region)
    service = ExplainerService(store, tagger_factory, separator,
                               ServiceConfig(batch_size=args.batch_size, max_in_flight=args.max_in_flight,
                                             max_duration_s=args.max_duration, max_bytes=args.max_bytes),
                               read_uri=lambda uri: read_object(uri, store, args.s3_endpoint, args.s3_region))
    jobs = JobTable(lambda spec, progress, job_id: service.explain(spec, progress, job_id),
                    workers=args.job_workers, max_jobs=args.max_jobs, ttl_s=args.job_ttl)
    servicer = ExplainerServicer(service, jobs)
    try:
        running = runtime.start(
            [runtime.Service(SERVICE_NAME, lambda s: explainer_pb2_grpc.add_ExplainerServicer_to_server(servicer, s))],
            args.host, args.port, args.metrics_port or None, args.max_workers)
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
