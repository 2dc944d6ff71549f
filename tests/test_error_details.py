"""google.rpc error details over real gRPC on loopback: the servers' error interceptor adds a
BadRequest field violation to INVALID_ARGUMENT and RetryInfo to RESOURCE_EXHAUSTED; the Python
client maps them back onto the domain errors (``field``, ``retry_after_s``). The status code and
message are unchanged, so clients that ignore details see what they saw before."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from audiolime import errors, rpcstatus
from audiolime.client import ExplainerClient
from audiolime.server.interceptors import server_interceptors
from audiolime.v1 import explainer_pb2

FAILURES = {
    "inferred": errors.InvalidInput("num_samples must be between d'+1 = 13 and 65536, got 5"),
    "named": errors.InvalidInput("song.ogg: not a readable audio file", field="audio"),
    "nofield": errors.InvalidInput("unsupported audio URI 'ftp://x'"),
    "busy": errors.ResourceExhausted("explainer busy: 4 running and 8 queued; retry later", retry_after_s=2.5),
    "queue": errors.ResourceExhausted("queue full; retry later"),
    "missing": errors.NotFound("job 42 not found"),
}


@pytest.fixture(scope="module")
def target():
    """An Explainer whose Explain raises the failure its request's `model` names, behind the real
    server interceptors."""

    def explain(request: explainer_pb2.ExplainRequest, context) -> explainer_pb2.Explanation:
        raise FAILURES[request.model]

    handler = grpc.unary_unary_rpc_method_handler(
        explain, request_deserializer=explainer_pb2.ExplainRequest.FromString,
        response_serializer=explainer_pb2.Explanation.SerializeToString)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=server_interceptors())
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("audiolime.v1.Explainer",
                                                                          {"Explain": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def _raw(target: str, model: str) -> grpc.RpcError:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/audiolime.v1.Explainer/Explain",
                                   request_serializer=explainer_pb2.ExplainRequest.SerializeToString,
                                   response_deserializer=explainer_pb2.Explanation.FromString)
        with pytest.raises(grpc.RpcError) as info:
            call(explainer_pb2.ExplainRequest(model=model), timeout=10)
    return info.value


@pytest.mark.parametrize("model, field", [("inferred", "num_samples"), ("named", "audio"), ("nofield", None)])
def test_invalid_argument_carries_a_field_violation(target, model, field):
    exc = _raw(target, model)
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and exc.details() == str(FAILURES[model])
    status = rpc_status.from_call(exc)
    violations = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        violations += [(v.field, v.description) for v in bad.field_violations]
    assert violations == ([(field, str(FAILURES[model]))] if field else [])


@pytest.mark.parametrize("model, seconds", [("busy", 2.5), ("queue", errors.ResourceExhausted.DEFAULT_RETRY_AFTER_S)])
def test_resource_exhausted_carries_retry_info(target, model, seconds):
    exc = _raw(target, model)
    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry later" in exc.details()
    info = error_details_pb2.RetryInfo()
    assert rpc_status.from_call(exc).details[0].Unpack(info)
    assert info.retry_delay.seconds + info.retry_delay.nanos / 1e9 == pytest.approx(seconds)


def test_other_errors_carry_no_details(target):
    exc = _raw(target, "missing")
    assert exc.code() == grpc.StatusCode.NOT_FOUND and rpcstatus.details_of(exc) == (None, None)


def test_the_client_maps_details_onto_domain_errors(target):
    """ExplainerClient raises InvalidInput with its field and ResourceExhausted with its delay."""
    with ExplainerClient(target, token="") as client:
        with pytest.raises(errors.InvalidInput) as bad:
            client.explain(explainer_pb2.ExplainRequest(model="inferred"))
        assert bad.value.field == "num_samples" and str(bad.value).startswith("INVALID_ARGUMENT: num_samples")
        with pytest.raises(errors.ResourceExhausted) as busy:
            client.explain(explainer_pb2.ExplainRequest(model="busy"))
        assert busy.value.retry_after_s == pytest.approx(2.5)
        with pytest.raises(errors.NotFound):
            client.explain(explainer_pb2.ExplainRequest(model="missing"))
