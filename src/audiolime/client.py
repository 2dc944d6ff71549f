"""Client of the explainer service: ``ExplainerClient`` and ``audiolime explain --server``.

gRPC failures become ``audiolime.errors`` exceptions whose message is ``<CODE>: <details>``, so the
CLI prints one line ``audiolime: error: INVALID_ARGUMENT: ...`` and exits 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc

from audiolime import errors
from audiolime.v1 import common_pb2, explainer_pb2, explainer_pb2_grpc

MANIFEST = "explanation.json"
_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidInput,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
}


class RemoteError(errors.AudiolimeError):
    """A gRPC failure without a more specific domain error (``code`` is the status name)."""


def _domain_error(code_name: str, details: str) -> errors.AudiolimeError:
    code = getattr(grpc.StatusCode, code_name, None)
    return _ERRORS.get(code, RemoteError)(f"{code_name}: {details}")


def _translate(exc: grpc.RpcError) -> errors.AudiolimeError:
    return _domain_error(exc.code().name, exc.details() or "")


class ExplainerClient:
    """Thin wrapper of the ``audiolime.v1.Explainer`` stub; use as a context manager."""

    def __init__(self, target: str, timeout_s: float | None = None) -> None:
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 256 << 20),
                                                              ("grpc.max_send_message_length", 256 << 20)])
        self.stub = explainer_pb2_grpc.ExplainerStub(self.channel)
        self.timeout_s = timeout_s

    def __enter__(self) -> ExplainerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def explain(self, request: explainer_pb2.ExplainRequest) -> explainer_pb2.Explanation:
        try:
            return self.stub.Explain(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _translate(exc) from None

    def explain_stream(self, request: explainer_pb2.ExplainRequest) -> Iterator[explainer_pb2.ExplainEvent]:
        try:
            yield from self.stub.ExplainStream(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _translate(exc) from None

    def submit(self, request: explainer_pb2.ExplainRequest) -> str:
        try:
            return self.stub.SubmitExplanation(request, timeout=self.timeout_s).job_id
        except grpc.RpcError as exc:
            raise _translate(exc) from None

    def get(self, job_id: str) -> explainer_pb2.ExplanationJob:
        try:
            return self.stub.GetExplanation(explainer_pb2.GetExplanationRequest(job_id=job_id), timeout=30)
        except grpc.RpcError as exc:
            raise _translate(exc) from None

    def wait(self, job_id: str, timeout_s: float | None = None, poll_s: float = 0.5) -> explainer_pb2.Explanation:
        """Poll a job until it finishes; its error is raised as a domain error."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.get(job_id)
            if job.state == explainer_pb2.ExplanationJob.SUCCEEDED:
                return job.result
            if job.state == explainer_pb2.ExplanationJob.FAILED:
                raise _domain_error(job.error_code or "UNKNOWN", job.error_message)
            if deadline is not None and time.monotonic() > deadline:
                raise errors.Unavailable(f"DEADLINE_EXCEEDED: job {job_id} not finished after {timeout_s:g} s")
            time.sleep(poll_s)


def fetch(url: str, timeout_s: float = 60.0) -> bytes:
    """GET a presigned URL."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - our own presigned URLs
            return resp.read()
    except OSError as exc:
        raise errors.Unavailable(f"cannot download {url.split('?')[0]}: {exc}") from None


def download(explanation: explainer_pb2.Explanation, out_dir: Path) -> dict:
    """Download every artifact and the manifest into ``out_dir`` (the manifest last, staged like
    the in-process writer); return the manifest document."""
    from audiolime.explainer.convert import urls_by_file

    urls = urls_by_file(explanation)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        names = [n for n in urls if n != MANIFEST] + [MANIFEST]
        for name in names:
            path = stage / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(fetch(urls[name]))
        out_dir.mkdir(exist_ok=True)
        (out_dir / MANIFEST).unlink(missing_ok=True)
        for name in names:  # manifest last
            dest = out_dir / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            (stage / name).replace(dest)
        return json.loads((out_dir / MANIFEST).read_text())
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def request_from_args(args: argparse.Namespace) -> explainer_pb2.ExplainRequest:
    song = Path(args.song)
    if not song.is_file():
        raise errors.InvalidInput(f"{song}: no such file")
    req = explainer_pb2.ExplainRequest(
        audio=common_pb2.AudioInput(content=song.read_bytes(), filename=str(args.song)),
        model=args.tagger, tags=args.tag or [], top_n=1, segments=args.segments, separator_model=args.separator,
        num_samples=args.num_samples, seed=args.seed, top_k=args.top_k)
    if args.start is not None:
        req.window_start_s = args.start
    return req


def explain_remote(args: argparse.Namespace) -> int:
    """``audiolime explain --server HOST:PORT SONG ...``: same output as the in-process command."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    request = request_from_args(args)
    result = None
    err = Console(stderr=True)
    with ExplainerClient(args.server) as client, Progress(TextColumn("{task.description}"), BarColumn(),
                                                           MofNCompleteColumn(), console=err, transient=True,
                                                           disable=not err.is_terminal) as bar:
        task = bar.add_task("connecting", total=None)
        for event in client.explain_stream(request):
            if event.HasField("result"):
                result = event.result
            else:
                p = event.progress
                bar.update(task, description=p.stage, completed=p.evaluated, total=p.total or None)
    if result is None:
        raise RemoteError("UNKNOWN: the stream ended without a result")
    doc = download(result, args.out) if args.out else json.loads(fetch(result.manifest_url))
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        from audiolime.report import print_document

        print_document(doc, Console(), str(args.out) if args.out else None)
    return 0
