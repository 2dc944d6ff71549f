"""Client of the explainer service: ``ExplainerClient`` and ``audiolime explain --server``.

gRPC failures become ``audiolime.errors`` exceptions whose message is ``<CODE>: <details>``, so the
CLI prints one line ``audiolime: error: INVALID_ARGUMENT: ...`` and exits 2.

Security: ``ca`` (a PEM file) turns TLS on, ``cert``/``key`` add a client certificate for a server
that requires one (mTLS); ``token`` (default: ``$AUDIOLIME_TOKEN``) is sent as
``authorization: Bearer <token>`` on every call.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc

from audiolime import errors, rpcstatus, wire
from audiolime.artifacts import write_files
from audiolime.channels import make_channel, with_default_port
from audiolime.explanation.document import Document
from audiolime.settings import PORTS
from audiolime.v1 import explainer_pb2, explainer_pb2_grpc

CALL_TIMEOUT_S = 30.0  # the deadline of a call that has none of its own (submit, get, cancel)
SERVICE = "/audiolime.v1.Explainer/"


class CallOptions(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """What every call of a channel carries and how it fails: the bearer token, a deadline (the
    method's own, else ``default_timeout_s``), and gRPC failures raised as ``audiolime.errors``
    (message ``<CODE>: <details>``)."""

    def __init__(self, token: str | None = None, default_timeout_s: float | None = CALL_TIMEOUT_S,
                 timeouts: Mapping[str, float | None] | None = None) -> None:
        self.metadata = (("authorization", f"Bearer {token.strip()}"),) if token and token.strip() else ()
        self.default_timeout_s = default_timeout_s
        self.timeouts = dict(timeouts or {})

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        timeout = details.timeout
        if timeout is None:
            timeout = self.timeouts.get(details.method, self.default_timeout_s)
        metadata = (*(details.metadata or ()), *self.metadata)
        return _Details(details.method, timeout, metadata, details.credentials, details.wait_for_ready,
                        details.compression)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        outcome = continuation(self._details(client_call_details), request)
        try:
            outcome.result()
        except grpc.RpcError as exc:
            raise _translate(exc) from None
        return outcome

    def intercept_unary_stream(self, continuation, client_call_details, request):
        responses = continuation(self._details(client_call_details), request)

        def translated() -> Iterator[Any]:
            try:
                yield from responses
            except grpc.RpcError as exc:
                raise _translate(exc) from None

        return translated()


class _Details(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression) -> None:
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = credentials, wait_for_ready, compression


def _translate(exc: grpc.RpcError) -> errors.AudiolimeError:
    return rpcstatus.from_rpc_error(exc)


def is_loopback(target: str) -> bool:
    """Whether a gRPC target names this machine (``localhost``, ``127.x``, ``[::1]``, a unix socket)."""
    import ipaddress

    t = target.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
    if t.startswith("unix:"):
        return True
    host = t.rsplit(":", 1)[0] if not t.startswith("[") else t[1:t.index("]")] if "]" in t else t
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ExplainerClient:
    """The ``audiolime.v1.Explainer`` stub over a channel with :class:`CallOptions`; use as a
    context manager. ``timeout_s``: the deadline of Explain and ExplainStream (None: none)."""

    def __init__(self, target: str, timeout_s: float | None = None, token: str | None = None,
                 ca: Path | str | None = None, cert: Path | str | None = None, key: Path | str | None = None) -> None:
        credentials = None
        if ca is not None or cert is not None:
            from audiolime.tls import channel_credentials

            credentials = channel_credentials(ca, cert, key)
        token = os.environ.get("AUDIOLIME_TOKEN") if token is None else token
        if token and token.strip() and credentials is None and not is_loopback(target):
            raise errors.InvalidInput(f"a bearer token is sent only over TLS: give the server's CA (ca=, --ca) to "
                                      f"reach {target}, or no token (plaintext is for loopback)")
        options = CallOptions(token, CALL_TIMEOUT_S, {SERVICE + "Explain": timeout_s,
                                                      SERVICE + "ExplainStream": timeout_s,
                                                      SERVICE + "WatchExplanation": timeout_s})
        self.channel = make_channel(with_default_port(target, PORTS["explainer"]), credentials, [options])
        self.stub = explainer_pb2_grpc.ExplainerStub(self.channel)

    def __enter__(self) -> ExplainerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def explain(self, request: explainer_pb2.ExplainRequest) -> explainer_pb2.Explanation:
        return self.stub.Explain(request)

    def explain_stream(self, request: explainer_pb2.ExplainRequest) -> Iterator[explainer_pb2.ExplainEvent]:
        return self.stub.ExplainStream(request)

    def submit(self, request: explainer_pb2.ExplainRequest) -> str:
        return self.stub.SubmitExplanation(request).job_id

    def get(self, job_id: str) -> explainer_pb2.ExplanationJob:
        return self.stub.GetExplanation(explainer_pb2.GetExplanationRequest(job_id=job_id))

    def cancel(self, job_id: str) -> explainer_pb2.ExplanationJob:
        """Stop a job (queued: at once; running: at its next batch); returns its state."""
        return self.stub.CancelExplanation(explainer_pb2.CancelExplanationRequest(job_id=job_id))

    def list(self, page_size: int = 0) -> Iterator[explainer_pb2.ExplanationJob]:
        """Every job of this caller, newest first (each without its result), page by page."""
        token = ""
        while True:
            page = self.stub.ListExplanations(explainer_pb2.ListExplanationsRequest(page_size=page_size,
                                                                                     page_token=token))
            yield from page.jobs
            if not (token := page.next_page_token):
                return

    def watch(self, job_id: str) -> Iterator[explainer_pb2.ExplanationJob]:
        """The job as it changes (state, progress), the finished job last (deadline: ``timeout_s``)."""
        for event in self.stub.WatchExplanation(explainer_pb2.WatchExplanationRequest(job_id=job_id)):
            yield event.job

    def wait(self, job_id: str, timeout_s: float | None = None, poll_s: float = 0.5) -> explainer_pb2.Explanation:
        """Poll a job until it finishes; its error is raised as a domain error."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.get(job_id)
            if job.state == explainer_pb2.ExplanationJob.SUCCEEDED:
                return job.result
            if job.state in (explainer_pb2.ExplanationJob.FAILED, explainer_pb2.ExplanationJob.CANCELLED):
                raise errors.from_status(job.error_code or "UNKNOWN", job.error_message)
            if deadline is not None and time.monotonic() > deadline:
                raise errors.DeadlineExceeded(f"DEADLINE_EXCEEDED: job {job_id} not finished after {timeout_s:g} s")
            time.sleep(poll_s)


def fetch(url: str, timeout_s: float = 60.0) -> bytes:
    """GET a presigned URL."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - our own presigned URLs
            return resp.read()
    except OSError as exc:
        raise errors.Unavailable(f"cannot download {url.split('?')[0]}: {exc}") from None


def download(explanation: explainer_pb2.Explanation, out_dir: Path) -> dict:
    """Download every artifact and the manifest into ``out_dir`` with the one artifact writer
    (artifacts first, then the listening report, rendered here so that it plays the local files
    and not URLs that expire, the manifest last, nothing left on failure); return the document."""
    from audiolime.store import LocalStore

    manifest_bytes = fetch(explanation.manifest_url)
    manifest = Document.loads(manifest_bytes)
    urls = wire.urls_by_file(manifest, explanation)
    write_files(LocalStore(Path(out_dir)), "", ((name, fetch(url), "audio/wav") for name, url in urls.items()),
                manifest, manifest_bytes)
    return json.loads(manifest_bytes)
