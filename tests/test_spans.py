"""Tracing in-process (the fast tier; tests/test_tracing.py runs the real services against a real
OTLP receiver): off creates nothing; with an in-memory exporter, a retried call is one span with an
attempt span per try and a retry event, the attempt's context reaches the server as traceparent;
an explanation's stages and rounds are spans in order, closed (and marked) when it fails."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from audiolime import errors
from audiolime.channels import make_channel
from audiolime.explainer import spans
from audiolime.explainer.remote import RetryPolicy
from audiolime.explainer.service import ExplainerService, ServiceConfig
from audiolime.method.events import Event
from audiolime.method.limits import Limits
from audiolime.server import context as callctx
from audiolime.server import interceptors, tracing
from audiolime.store import LocalStore
from conftest import FakeSeparator, FakeTagger
from conftest import fake_task as job

STAGES = ["decode", "scan", "separate", "predict", "fit", "fidelity", "store"]


@pytest.fixture
def exported(monkeypatch):
    """Tracing on, spans kept in memory (the process's global provider is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_provider", provider)
    yield exporter
    provider.shutdown()


def test_off_by_default_creates_nothing():
    """No endpoint: configure() does nothing, no interceptor is installed, the explanation's sink is
    the caller's own and no span is made."""
    assert not tracing.configure("explainer", None) and not tracing.configure("explainer", "")
    assert not tracing.enabled()
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)  # the API's proxy: no SDK, no exporter
    assert not any(isinstance(i, tracing.ServerTracingInterceptor) for i in interceptors.server_interceptors())
    assert any(isinstance(i, tracing.ServerTracingInterceptor)
               for i in interceptors.server_interceptors(traced=True))

    def sink(_):
        return None

    with spans.traced(sink) as wrapped, tracing.span("x") as current:
        assert wrapped is sink and current is None


def test_stopping_does_not_wait_for_an_unreachable_collector(monkeypatch):
    """An endpoint nobody answers on: the server's last flush gives up after its timeout (the
    exporter alone would retry for about a minute) and tracing is off again."""
    import time

    from audiolime.processes import free_port

    monkeypatch.setattr(trace, "set_tracer_provider", lambda provider: None)  # the process's global stays
    assert tracing.configure("tagger", f"http://127.0.0.1:{free_port()}", {"OTEL_SERVICE_NAME": "t"})
    try:
        with tracing.span("lost"):
            pass
        started = time.monotonic()
        tracing.shutdown(timeout_s=1.0)
        assert time.monotonic() - started < 3
    finally:
        tracing._provider = None
    assert not tracing.enabled()


def test_a_retried_call_is_one_span_with_an_attempt_span_per_try(exported):
    """UNAVAILABLE, then OK: the call's span has a ``retry`` event and two CLIENT children numbered
    1 and 2 (the first an error with code 14); each attempt's own context reached the server as
    ``traceparent``, next to the request id."""
    seen: list[dict] = []

    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen.append(dict(context.invocation_metadata()))
        if len(seen) == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return b"ok"

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Echo", {"Call": grpc.unary_unary_rpc_method_handler(handle)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = make_channel(f"127.0.0.1:{port}", interceptors=[tracing.ClientTracingInterceptor("echo")])
    token = callctx.set_request_id("rid-1")
    try:
        call = channel.unary_unary("/test.Echo/Call")
        assert RetryPolicy(timeout_s=5, retries=2, backoff_s=0.001, backoff_cap_s=0.002).call(
            call, b"hi", "echo Call") == b"ok"
    finally:
        callctx.reset_request_id(token)
        channel.close()
        server.stop(0)
    done = {s.name: s for s in exported.get_finished_spans() if s.name == "echo Call"}
    attempts = sorted((s for s in exported.get_finished_spans() if s.kind == trace.SpanKind.CLIENT),
                      key=lambda s: s.attributes["audiolime.attempt"])
    parent = done["echo Call"]
    assert [(a.attributes["audiolime.attempt"], a.attributes["rpc.grpc.status_code"]) for a in attempts] == \
        [(1, 14), (2, 0)]
    assert [a.status.status_code for a in attempts] == [trace.StatusCode.ERROR, trace.StatusCode.UNSET]
    assert {a.parent.span_id for a in attempts} == {parent.context.span_id}
    assert {a.context.trace_id for a in attempts} == {parent.context.trace_id}
    assert attempts[0].attributes["rpc.service"] == "test.Echo" and attempts[0].attributes["server.address"] == "echo"
    (retry,) = parent.events
    assert retry.name == "retry" and retry.attributes["audiolime.attempt"] == 1
    assert retry.attributes["rpc.grpc.status_code"] == 14
    for metadata, a in zip(seen, attempts):
        version, trace_id, span_id, flags = metadata["traceparent"].split("-")
        assert (trace_id, span_id) == (format(a.context.trace_id, "032x"), format(a.context.span_id, "016x"))
        assert metadata["x-request-id"] == a.attributes["audiolime.request_id"] == "rid-1"


@pytest.fixture
def service(tmp_path):
    store = LocalStore(tmp_path / "store", public_url="http://127.0.0.1:9/", secret=b"k")
    tagger = FakeTagger()
    return ExplainerService(store, lambda name, version: tagger, FakeSeparator(),
                            ServiceConfig(batch_size=16, max_in_flight=4, limits=Limits(max_bytes=10 ** 7)))


def test_stages_and_rounds_are_spans_of_the_explanation(exported, service):
    """Adaptive sampling: the explanation's span has the stages in order as children, the rounds
    are children of predict (one per ranking, with the masks so far), and the result's id and
    timings are the explanation's attributes; the caller's sink still hears every event."""
    heard = []
    published = service.run(job(num_samples=0, max_samples=200, segments=5), heard.append)
    finished = exported.get_finished_spans()
    (root,) = [s for s in finished if s.name == "explanation"]
    stages = sorted((s for s in finished if s.name.startswith("stage ")), key=lambda s: s.start_time)
    assert [s.name for s in stages] == [f"stage {n}" for n in STAGES]
    assert {s.parent.span_id for s in stages} == {root.context.span_id}
    predict = stages[STAGES.index("predict")]
    rounds = sorted((s for s in finished if s.name.startswith("round ")), key=lambda s: s.start_time)
    assert len(rounds) == published.document.stopping.rounds >= 1
    assert [s.name for s in rounds] == [f"round {i}" for i in range(1, len(rounds) + 1)]
    assert {s.parent.span_id for s in rounds} == {predict.context.span_id}
    assert rounds[-1].attributes["audiolime.masks"] == published.document.num_samples
    assert root.attributes["audiolime.explanation_id"] == published.explanation_id
    assert root.attributes["audiolime.timing.predict_s"] > 0 and root.attributes["audiolime.cache_hit"] is False
    assert [e.stage for e in heard if isinstance(e, Event)][0] == "decode" and len(heard) > len(STAGES)
    assert trace.get_current_span() is trace.INVALID_SPAN  # every span detached again


def test_a_stopped_explanation_closes_its_spans_as_errors(exported, service):
    """A sink that stops the work (a caller gone) in predict: the open round, its stage and the
    explanation end, marked as errors, and nothing stays attached."""
    def stop_in_predict(event):
        if isinstance(event, Event) and event.stage == "predict" and event.done:
            raise errors.Cancelled("the caller cancelled")

    with pytest.raises(errors.Cancelled):
        service.run(job(), stop_in_predict)
    finished = {s.name: s for s in exported.get_finished_spans()}
    assert {"explanation", "stage predict", "round 1"} <= finished.keys() and "stage fit" not in finished
    assert all(finished[n].status.status_code == trace.StatusCode.ERROR
               for n in ("explanation", "stage predict", "round 1"))
    assert finished["stage scan"].status.status_code == trace.StatusCode.UNSET
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_a_job_runs_in_a_trace_of_its_own_linked_to_its_submission(exported, service):
    """SubmitExplanation keeps its trace context with the job; the run (later, on any replica) is a
    root span ``job`` linked to it, over the explanation and its stages."""
    import time

    from audiolime.explainer.core import ExplainerCore
    from audiolime.explainer.jobs import JobRunner
    from audiolime.explainer.jobstore import SUCCEEDED, JobConfig, JobStore
    from audiolime.server import metrics
    from audiolime.server.admission import Admission

    admission = Admission(2, 8, metrics.EXPLANATIONS, "explainer", "explanations")
    jobs = JobStore(service.store, JobConfig(lease_s=1.5, poll_s=0.05))
    core = ExplainerCore(service, JobRunner(jobs, service.run, admission, "w1"), admission).start()
    try:
        with tracing.span("SubmitExplanation") as submit:
            job_id = core.submit(job())
        deadline = time.monotonic() + 60
        while core.job(job_id).view.state != SUCCEEDED:
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.05)
    finally:
        core.stop()
    assert jobs.load(job_id).traceparent.split("-")[1:3] == [format(submit.context.trace_id, "032x"),
                                                              format(submit.context.span_id, "016x")]
    finished = exported.get_finished_spans()
    (run,) = [s for s in finished if s.name == "job"]
    assert run.parent is None and run.context.trace_id != submit.context.trace_id
    assert [link.context.span_id for link in run.links] == [submit.context.span_id]
    assert run.attributes["audiolime.job_id"] == job_id and run.attributes["audiolime.attempt"] == 1
    (explanation,) = [s for s in finished if s.name == "explanation"]
    assert explanation.parent.span_id == run.context.span_id
