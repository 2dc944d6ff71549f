"""OpenTelemetry traces across the fan-out, against a real OTLP receiver process
(tests/otlp_receiver.py serves opentelemetry-proto's TraceService): the three services as real
processes on loopback export to it; one short explanation (6 s of a real song, adaptive sampling
over 6 components) is one trace from the caller's ``traceparent`` through the explainer's stages to
the separator's and tagger's server spans, and an ExplainStream is one trace too (its explanation
runs in a worker thread). With tracing off nothing is exported."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import (
    BATCHING,
    DRUMS,
    HOST,
    REPO,
    excerpt,
    explainer_args,
    explainer_stub,
    json_logs,
    model_dir,
    shared_dir,
    start_server,
    tagger_args,
)

pytestmark = pytest.mark.slow

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
STREAM_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "00f067aa0ba902b7"
STAGES = ["decode", "scan", "separate", "predict", "fit", "fidelity", "store"]


@pytest.fixture
def receiver(tmp_path):
    """The OTLP/gRPC receiver as its own process: (endpoint, file of received spans)."""
    from audiolime.processes import terminate

    port_file, out = tmp_path / "otlp.port", tmp_path / "spans.jsonl"
    out.touch()
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "otlp_receiver.py"), str(port_file), str(out)],
                            stderr=open(tmp_path / "otlp.log", "wb"))
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "otlp.log").read_text()
            time.sleep(0.1)
        yield f"http://{HOST}:{port_file.read_text()}", out
    finally:
        terminate(proc, timeout_s=10)


def spans_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def stop(*servers) -> None:
    """SIGTERM and wait: a stopping server exports its buffered spans last."""
    for s in servers:
        s.proc.terminate()
    for s in servers:
        assert s.proc.wait(60) == 0, s.log.read_text()[-3000:]


def request(seed: int = 0):
    from audiolime.v1 import common_pb2, explainer_pb2

    audio = excerpt(shared_dir() / "audio" / DRUMS, 6.0)
    return explainer_pb2.ExplainRequest(audio=common_pb2.AudioInput(content=audio, filename="drums.flac"),
                                        model="musicnn-msd", tags=[], top_n=1, segments=3, num_samples=0,
                                        max_samples=64, seed=seed, top_k=2)


def test_one_trace_spans_explainer_separator_and_tagger(tmp_path, receiver, models):
    """The caller's trace id reaches every span; the explainer's server span is the caller's span's
    child; the separator's and tagger's server spans are children of the explainer's client spans
    (one per attempt, ``audiolime.attempt``), each under one span per call; the stages are spans of
    the explanation in order, the sampling rounds spans of ``predict``; every span names the request id."""
    endpoint, out = receiver
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    batching = tmp_path / "batching.config"
    batching.write_text(BATCHING)
    store = (tmp_path / "store").as_uri()
    with ThreadPoolExecutor(2) as pool:  # load Spleeter and musicnn at once
        sep_f = pool.submit(start_server, "audiolime.separator.server",
                            ["--model-dir", str(model_dir()), "--store", store], tmp_path / "separator.log", env)
        tag_f = pool.submit(start_server, "audiolime.tagger.server", tagger_args(batching), tmp_path / "tagger.log", env)
        separator, tagger = sep_f.result(), tag_f.result()
    explainer = start_server("audiolime.explainer.server", explainer_args(store, separator.port, tagger.port),
                             tmp_path / "explainer.log", {**env, "OTEL_SERVICE_NAME": "explainer-under-test"})
    try:
        resp = explainer_stub(explainer.port).Explain(
            request(), timeout=300, metadata=(("x-request-id", "trace-test-1"),
                                              ("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01")))
        assert resp.explanation_id
        streamed = list(explainer_stub(explainer.port).ExplainStream(
            request(seed=1), timeout=300, metadata=(("traceparent", f"00-{STREAM_TRACE_ID}-{CALLER_SPAN}-01"),)))
        assert streamed[-1].WhichOneof("event") == "result"
    finally:
        stop(explainer, separator, tagger)
    every = spans_of(out)
    # the stream: its server span ends after the last message; the explanation ran in a worker
    # thread under it; the separator's answer came from its cache this time
    stream = [s for s in every if s["trace_id"] == STREAM_TRACE_ID]
    (stream_server,) = [s for s in stream if s["name"] == "audiolime.v1.Explainer/ExplainStream"]
    assert stream_server["parent"] == CALLER_SPAN and stream_server["attributes"]["rpc.grpc.status_code"] == 0
    (stream_explanation,) = [s for s in stream if s["name"] == "explanation"]
    assert stream_explanation["parent"] == stream_server["span_id"]
    assert [s["attributes"]["audiolime.cache_hit"] for s in stream if s["name"] == "audiolime.v1.Separator/Separate"
            and s["kind"] == "SERVER"] == [True]
    spans = [s for s in every if s["trace_id"] != STREAM_TRACE_ID]
    by_id = {s["span_id"]: s for s in every}
    assert {s["trace_id"] for s in spans} == {TRACE_ID}
    assert {s["service"] for s in spans} == {"explainer-under-test", "audiolime-separator", "audiolime-tagger"}

    def one(name: str, service: str, kind: str) -> dict:
        (span,) = [s for s in spans if s["name"] == name and s["service"] == service and s["kind"] == kind]
        return span

    explain = one("audiolime.v1.Explainer/Explain", "explainer-under-test", "SERVER")
    assert explain["parent"] == CALLER_SPAN
    assert explain["attributes"]["audiolime.request_id"] == "trace-test-1"
    assert explain["attributes"]["rpc.grpc.status_code"] == 0 and explain["status"] == 0
    explanation = one("explanation", "explainer-under-test", "INTERNAL")
    assert explanation["parent"] == explain["span_id"]
    assert explanation["attributes"]["audiolime.explanation_id"] == resp.explanation_id
    stages = sorted((s for s in spans if s["name"].startswith("stage ")), key=lambda s: s["start"])
    assert [s["name"] for s in stages] == [f"stage {n}" for n in STAGES]
    assert {s["parent"] for s in stages} == {explanation["span_id"]}
    predict_stage = stages[STAGES.index("predict")]
    rounds = [s for s in spans if s["name"].startswith("round ")]
    assert rounds and {s["parent"] for s in rounds} == {predict_stage["span_id"]}
    assert rounds[0]["attributes"]["audiolime.masks"] > 0

    # explainer -> separator: call span > client attempt span > the separator's server span
    (sep_server,) = [s for s in spans if s["service"] == "audiolime-separator" and s["kind"] == "SERVER"]
    assert sep_server["name"] == "audiolime.v1.Separator/Separate"
    sep_client = by_id[sep_server["parent"]]
    assert (sep_client["kind"], sep_client["service"], sep_client["name"]) == (
        "CLIENT", "explainer-under-test", "audiolime.v1.Separator/Separate")
    assert sep_client["attributes"]["audiolime.attempt"] == 1
    assert by_id[sep_client["parent"]]["name"] == "separator Separate"
    assert by_id[by_id[sep_client["parent"]]["parent"]]["name"] == "stage separate"
    assert sep_server["attributes"]["audiolime.request_id"] == "trace-test-1"
    assert sep_server["attributes"]["audiolime.cache_hit"] is False and sep_server["attributes"]["audiolime.model"] == "2stems"

    # explainer -> tagger: every Predict batch is one call span whose attempt's client span is the
    # parent of exactly one tagger server span
    predicts = [s for s in spans if s["service"] == "audiolime-tagger" and s["kind"] == "SERVER"
                and s["name"] == "tensorflow.serving.PredictionService/Predict"]
    assert len(predicts) >= 4  # the labels, the scan, the rounds, the faithfulness checks
    clients = [by_id[s["parent"]] for s in predicts]
    assert all(c["kind"] == "CLIENT" and c["service"] == "explainer-under-test" for c in clients)
    assert len({c["span_id"] for c in clients}) == len(clients)
    assert all(c["attributes"]["audiolime.attempt"] == 1 for c in clients)
    calls = [by_id[c["parent"]] for c in clients]
    assert {c["name"] for c in calls} <= {"tagger Predict", "tagger labels"}
    homes = {by_id[c["parent"]]["name"] for c in calls}
    # the song scan's batches and each round's; the window's own prediction comes before the first
    # predict event (in separate), the tagger's labels are read in decode (the plan's tagger)
    assert {"stage scan", "round 1"} <= homes <= {"stage decode", "stage scan", "stage separate", "stage fidelity",
                                                   *(r["name"] for r in rounds)}
    assert all(s["attributes"]["audiolime.request_id"] == "trace-test-1" for s in predicts)
    assert {s["attributes"]["audiolime.model"] for s in predicts} == {"musicnn-msd"}
    assert all(s["attributes"]["audiolime.windows"] >= 1 for s in predicts if s["attributes"]["audiolime.signature"]
               == "serving_default")
    # every log line of the explanation's call carries the trace id
    access = [r for r in json_logs(explainer.log) if r.get("logger") == "audiolime.access"
              and r.get("grpc_method") == "Explain"]
    assert access and access[0]["trace_id"] == TRACE_ID
    assert [r.get("tracing") for r in json_logs(tagger.log) if r.get("message") == "serving"] == ["otlp"]


def test_tracing_off_exports_nothing(tmp_path, receiver):
    """Without an endpoint a server creates no exporter (its "serving" line says tracing off) and
    the receiver hears nothing, even when called with a traceparent; an empty variable is off too."""
    _, out = receiver
    explainer = start_server("audiolime.explainer.server",
                             explainer_args((tmp_path / "store").as_uri(), 1, 1), tmp_path / "explainer.log",
                             {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_BSP_SCHEDULE_DELAY": "200"})
    import grpc

    from audiolime.v1 import explainer_pb2

    try:
        with pytest.raises(grpc.RpcError) as err:
            explainer_stub(explainer.port).Explain(explainer_pb2.ExplainRequest(), timeout=30,
                                                   metadata=(("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01"),))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        stop(explainer)
    records = json_logs(explainer.log)
    assert [r.get("tracing") for r in records if r.get("message") == "serving"] == ["off"]
    assert not any(r.get("message") == "tracing on" or "trace_id" in r for r in records)
    assert spans_of(out) == []
