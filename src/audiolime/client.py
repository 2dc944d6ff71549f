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
from collections.abc import Iterator
from pathlib import Path

import grpc

from audiolime import errors, wire
from audiolime.explain.artifacts import write_files
from audiolime.explain.document import Document
from audiolime.v1 import explainer_pb2, explainer_pb2_grpc


def _translate(exc: grpc.RpcError) -> errors.AudiolimeError:
    return errors.from_status(exc.code().name, exc.details() or "")


class ExplainerClient:
    """Thin wrapper of the ``audiolime.v1.Explainer`` stub; use as a context manager."""

    def __init__(self, target: str, timeout_s: float | None = None, token: str | None = None,
                 ca: Path | str | None = None, cert: Path | str | None = None, key: Path | str | None = None) -> None:
        options = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]
        if ca is not None or cert is not None:
            from audiolime.tls import channel_credentials

            self.channel = grpc.secure_channel(target, channel_credentials(ca, cert, key), options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.stub = explainer_pb2_grpc.ExplainerStub(self.channel)
        self.timeout_s = timeout_s
        token = os.environ.get("AUDIOLIME_TOKEN") if token is None else token
        self.metadata = (("authorization", f"Bearer {token.strip()}"),) if token and token.strip() else None

    def __enter__(self) -> ExplainerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def explain(self, request: explainer_pb2.ExplainRequest) -> explainer_pb2.Explanation:
        try:
            return self.stub.Explain(request, timeout=self.timeout_s, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise _translate(exc) from None

    def explain_stream(self, request: explainer_pb2.ExplainRequest) -> Iterator[explainer_pb2.ExplainEvent]:
        try:
            yield from self.stub.ExplainStream(request, timeout=self.timeout_s, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise _translate(exc) from None

    def submit(self, request: explainer_pb2.ExplainRequest) -> str:
        try:
            return self.stub.SubmitExplanation(request, timeout=self.timeout_s, metadata=self.metadata).job_id
        except grpc.RpcError as exc:
            raise _translate(exc) from None

    def get(self, job_id: str) -> explainer_pb2.ExplanationJob:
        try:
            return self.stub.GetExplanation(explainer_pb2.GetExplanationRequest(job_id=job_id), timeout=30,
                                          metadata=self.metadata)
        except grpc.RpcError as exc:
            raise _translate(exc) from None

    def cancel(self, job_id: str) -> explainer_pb2.ExplanationJob:
        """Stop a job (queued: at once; running: at its next batch); returns its state."""
        try:
            return self.stub.CancelExplanation(explainer_pb2.CancelExplanationRequest(job_id=job_id), timeout=30)
        except grpc.RpcError as exc:
            raise _translate(exc) from None

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
