"""The Python client's one interceptor, in-process against a real gRPC server on loopback whose
Explainer records what each call carried: the bearer token on every method (cancel included),
the deadline (the method's own or the default), and failures raised as ``audiolime.errors``."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

from audiolime import errors
from audiolime.client import CALL_TIMEOUT_S, ExplainerClient
from audiolime.v1 import explainer_pb2, explainer_pb2_grpc


class Recorder(explainer_pb2_grpc.ExplainerServicer):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float | None]] = []

    def _record(self, name: str, context) -> None:
        token = dict(context.invocation_metadata()).get("authorization", "")
        self.calls.append((name, token, context.time_remaining()))

    def Explain(self, request, context):
        self._record("Explain", context)
        return explainer_pb2.Explanation(explanation_id="e1")

    def ExplainStream(self, request, context):
        self._record("ExplainStream", context)
        yield explainer_pb2.ExplainEvent(progress=explainer_pb2.ExplainProgress(stage="decode"))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy; retry later")

    def SubmitExplanation(self, request, context):
        self._record("SubmitExplanation", context)
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "top_k must be >= 1")

    def GetExplanation(self, request, context):
        self._record("GetExplanation", context)
        return explainer_pb2.ExplanationJob(job_id=request.job_id, state=explainer_pb2.ExplanationJob.RUNNING)

    def CancelExplanation(self, request, context):
        self._record("CancelExplanation", context)
        context.abort(grpc.StatusCode.NOT_FOUND, f"no explanation job {request.job_id!r}")


@pytest.fixture()
def server():
    recorder = Recorder()
    srv = grpc.server(futures.ThreadPoolExecutor(4))
    explainer_pb2_grpc.add_ExplainerServicer_to_server(recorder, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    yield f"127.0.0.1:{port}", recorder
    srv.stop(0)


def test_every_call_carries_the_token_and_a_deadline_and_fails_as_a_domain_error(server):
    """Explain (its own deadline), the stream, submit, get and cancel all send the token; calls
    without a deadline of their own get the default; status codes become the errors' classes."""
    target, recorder = server
    with ExplainerClient(target, timeout_s=600, token="secret-token-0123456789") as client:
        assert client.explain(explainer_pb2.ExplainRequest()).explanation_id == "e1"
        with pytest.raises(errors.ResourceExhausted, match="^RESOURCE_EXHAUSTED: busy; retry later"):
            list(client.explain_stream(explainer_pb2.ExplainRequest()))
        with pytest.raises(errors.InvalidInput, match="^INVALID_ARGUMENT: top_k must be >= 1"):
            client.submit(explainer_pb2.ExplainRequest())
        assert client.get("0" * 32).state == explainer_pb2.ExplanationJob.RUNNING
        with pytest.raises(errors.NotFound, match="^NOT_FOUND: no explanation job"):
            client.cancel("0" * 32)
    names = [c[0] for c in recorder.calls]
    assert names == ["Explain", "ExplainStream", "SubmitExplanation", "GetExplanation", "CancelExplanation"]
    assert {c[1] for c in recorder.calls} == {"Bearer secret-token-0123456789"}
    deadlines = dict((c[0], c[2]) for c in recorder.calls)
    assert 590 < deadlines["Explain"] <= 601 and 590 < deadlines["ExplainStream"] <= 601
    for name in ("SubmitExplanation", "GetExplanation", "CancelExplanation"):
        assert CALL_TIMEOUT_S - 10 < deadlines[name] <= CALL_TIMEOUT_S + 1  # gRPC rounds deadlines up


def test_without_a_token_nothing_is_sent_and_explain_has_no_deadline_unless_given(server, monkeypatch):
    target, recorder = server
    monkeypatch.delenv("AUDIOLIME_TOKEN", raising=False)
    with ExplainerClient(target) as client:
        client.explain(explainer_pb2.ExplainRequest())
        client.get("0" * 32)
    (_, token, deadline), (_, _, get_deadline) = recorder.calls
    assert token == "" and deadline > 1e9 and get_deadline <= CALL_TIMEOUT_S + 1  # no deadline: "infinite"


def test_a_token_never_goes_in_plaintext_off_the_machine(monkeypatch):
    """With a token and no CA the client refuses a remote target before making a channel (the token
    would cross the network in plaintext); loopback targets are this machine."""
    from audiolime import errors
    from audiolime.client import ExplainerClient, is_loopback

    monkeypatch.delenv("AUDIOLIME_TOKEN", raising=False)
    for target in ("10.1.2.3:50052", "explainer.example.com:443", "dns:///explainer:50052"):
        with pytest.raises(errors.InvalidInput, match="a bearer token is sent only over TLS"):
            ExplainerClient(target, token="t" * 32)
        assert not is_loopback(target)
    monkeypatch.setenv("AUDIOLIME_TOKEN", "t" * 32)
    with pytest.raises(errors.InvalidInput, match="only over TLS"):
        ExplainerClient("10.1.2.3:50052")
    assert all(is_loopback(t) for t in ("127.0.0.1:50052", "localhost:50052", "[::1]:50052", "dns:///localhost:1"))
