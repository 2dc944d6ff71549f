"""Tagger service: TF-Serving-compatible gRPC server as a real process with the real SavedModels,
called through the OFFICIAL tensorflow_serving client stubs (wire compatibility) and through the
explainer's RemoteTagger (our own audiolime.tfs messages); plus the batching core in-process."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from audiolime.processes import metric_value, scrape
from conftest import exit_status, model_dir, serving, shared_dir

pytestmark = pytest.mark.slow

SONG = "Karissa_Hobbs_-_Lets_Go_Fishin.ogg"  # 133 s
BATCHING = """# TF Serving BatchingParameters (text format), as deployed
max_batch_size { value: 8 }
batch_timeout_micros { value: 50000 }
num_batch_threads { value: 1 }
max_enqueued_batches { value: 100 }
"""
TOL = 1e-5


class Served(tuple):
    """(process, channel, port, metrics port), and ``log``: the server's stderr."""

    log: Path


@contextlib.contextmanager
def serve(args: list[str], log_path: Path, timeout: float = 240.0):
    """The tagger server until SERVING (always stopped); yields (process, channel, port, metrics port)."""
    with serving("audiolime.tagger.server", args, log_path, timeout=timeout) as server, grpc.insecure_channel(
            server.target, options=[("grpc.max_send_message_length", 1 << 28),
                                    ("grpc.max_receive_message_length", 1 << 28)]) as channel:
        served = Served((server.proc, channel, server.port, server.metrics_port))
        served.log = log_path
        yield served


def windows(n: int, offset: int = 0) -> np.ndarray:
    """``n`` consecutive 3 s windows of a real song (16 kHz mono float32)."""
    import soundfile as sf
    import soxr

    audio, sr = sf.read(str(shared_dir() / "audio" / SONG), dtype="float32", always_2d=True)
    audio = soxr.resample(audio.mean(axis=1), sr, 16000).astype(np.float32)
    w = 48000
    return np.ascontiguousarray(audio[offset * w:(offset + n) * w].reshape(n, w))


def predict_request(x: np.ndarray, name: str = "musicnn-msd", signature: str = "", version: int | None = None,
                    key: str = "waveform"):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    req.inputs[key].CopyFrom(tf.make_tensor_proto(x))
    return req


def prediction_stub(channel):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def model_stub(channel):
    from tensorflow_serving.apis import model_service_pb2_grpc

    return model_service_pb2_grpc.ModelServiceStub(channel)


def probabilities(resp, key: str = "probabilities") -> np.ndarray:
    import tensorflow as tf

    return tf.make_ndarray(resp.outputs[key])


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def song_windows(shared) -> np.ndarray:
    return windows(20, offset=10)


@pytest.fixture(scope="module")
def local(models):
    """In-process reference: the same SavedModel through LocalTagger."""
    from audiolime.tagger.savedmodel import LocalTagger

    return LocalTagger.load(models / "serving", "musicnn-msd")


@pytest.fixture(scope="module")
def expected(local, song_windows) -> np.ndarray:
    return np.concatenate([local.predict(song_windows[i:i + 1]) for i in range(len(song_windows))])


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    """Both models from one --model-config-file; musicnn-msd has versions 1 and 2 (2 served)."""
    tmp = tmp_path_factory.mktemp("tagger")
    base = tmp / "musicnn-msd"
    base.mkdir()
    for v in (1, 2):
        (base / str(v)).symlink_to(models / "serving" / "musicnn-msd" / "1", target_is_directory=True)
    (tmp / "models.config").write_text(
        'model_config_list {\n'
        f'  config {{ name: "musicnn-msd" base_path: "{base}" model_platform: "tensorflow" }}\n'
        f'  config {{ name: "fcn-msd" base_path: "{models / "serving" / "fcn-msd"}" model_platform: "tensorflow" }}\n'
        '}\n')
    (tmp / "batching.config").write_text(BATCHING)
    args = ["--model-config-file", str(tmp / "models.config"), "--enable-batching",
            "--batching-parameters-file", str(tmp / "batching.config"), "--max-workers", "32", "--reflection"]
    with serve(args, tmp / "tagger.log") as running:
        yield running


# ---------------------------------------------------------------- Predict


def test_predict_equals_local_tagger(server, song_windows, local) -> None:
    """Predict (official stubs, tensor_content) returns LocalTagger's probabilities for real windows."""
    _, channel, _, _ = server
    x = song_windows[:4]
    resp = prediction_stub(channel).Predict(predict_request(x), timeout=60)
    got = probabilities(resp)
    assert got.dtype == np.float32 and got.shape == (4, 50)
    assert np.max(np.abs(got - local.predict(x))) <= TOL
    assert resp.model_spec.name == "musicnn-msd" and resp.model_spec.version.value == 2
    assert resp.model_spec.signature_name == "serving_default"
    assert got.std() > 0.01  # real, varied probabilities, not a constant


def test_remote_tagger_over_our_messages(server, song_windows, local) -> None:
    """The explainer's RemoteTagger (audiolime.tfs messages) gets labels, version and predictions."""
    from audiolime.channels import make_channel
    from audiolime.explainer.remote import RemoteTagger

    _, _, port, _ = server
    channel = make_channel(f"127.0.0.1:{port}")
    try:
        remote = RemoteTagger(channel, "musicnn-msd")
        assert remote.version == 2 and remote.window_samples == 48000 and remote.sample_rate == 16000
        assert remote.labels == local.labels
        x = song_windows[4:7]
        assert np.max(np.abs(remote.predict(x) - local.predict(x))) <= TOL
    finally:
        channel.close()


def test_concurrent_requests_are_batched(server, song_windows, expected) -> None:
    """16 threads x batch 1: each gets its own window's result, and the server merged them (batch > 1)."""
    _, channel, _, mport = server
    before = scrape(mport)
    stub = prediction_stub(channel)
    results: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(16)

    def call(i: int) -> None:
        req = predict_request(song_windows[i:i + 1])
        barrier.wait()
        results[i] = probabilities(stub.Predict(req, timeout=120))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert sorted(results) == list(range(16))
    for i in range(16):
        assert np.max(np.abs(results[i] - expected[i:i + 1])) <= TOL, i
    after = scrape(mport)

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    calls = delta("audiolime_tagger_batch_size_count", model="musicnn-msd")
    singles = delta("audiolime_tagger_batch_size_bucket", model="musicnn-msd", le="1.0")
    rows = delta("audiolime_tagger_batch_size_sum", model="musicnn-msd")
    assert rows == 16 and calls < 16 and calls - singles >= 1, (calls, singles, rows)
    assert delta("audiolime_tagger_queue_delay_seconds_count", model="musicnn-msd") == 16
    assert delta("grpc_server_handled_total", grpc_service="tensorflow.serving.PredictionService",
                 grpc_method="Predict", grpc_code="OK") == 16


def test_large_request_is_split(server, song_windows, expected) -> None:
    """20 windows with max_batch_size 8 are split into model calls of <= 8 and reassembled in order."""
    _, channel, _, mport = server
    before = scrape(mport)
    got = probabilities(prediction_stub(channel).Predict(predict_request(song_windows), timeout=120))
    assert got.shape == (20, 50) and np.max(np.abs(got - expected)) <= TOL
    after = scrape(mport)
    over8 = [metric_value(t, "audiolime_tagger_batch_size_count", model="musicnn-msd")
             - metric_value(t, "audiolime_tagger_batch_size_bucket", model="musicnn-msd", le="8.0")
             for t in (before, after)]
    assert over8[1] == over8[0]  # no model call above max_batch_size


def test_other_signatures(server, song_windows, local) -> None:
    """spectrogram -> from_spectrogram equals serving_default; labels returns the tag names."""
    _, channel, _, _ = server
    stub = prediction_stub(channel)
    x = song_windows[:2]
    spec = probabilities(stub.Predict(predict_request(x, signature="spectrogram"), timeout=60), "spectrogram")
    assert spec.shape == (2, 187, 96)
    probs = probabilities(stub.Predict(predict_request(spec, signature="from_spectrogram", key="spectrogram"),
                                       timeout=60))
    assert np.max(np.abs(probs - local.predict(x))) <= TOL
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name, req.model_spec.signature_name = "musicnn-msd", "labels"
    resp = stub.Predict(req, timeout=60)
    assert [b.decode() for b in probabilities(resp, "labels")] == local.labels
    assert int(probabilities(resp, "sample_rate")) == 16000


def test_second_model_from_config_file(server, models) -> None:
    """fcn-msd (second config entry) is served with its own window size and 50 probabilities."""
    _, channel, _, _ = server
    from audiolime.tagger.savedmodel import LocalTagger

    fcn = LocalTagger.load(models / "serving", "fcn-msd")
    x = windows(1, offset=0)
    x = np.tile(x, (1, fcn.window_samples // 48000 + 1))[:, :fcn.window_samples]
    got = probabilities(prediction_stub(channel).Predict(predict_request(x, name="fcn-msd"), timeout=120))
    assert got.shape == (1, 50) and np.max(np.abs(got - fcn.predict(x))) <= TOL


# ---------------------------------------------------------------- metadata, status, health


def test_model_status_lists_versions(server) -> None:
    """GetModelStatus: every version on disk, AVAILABLE for the served (newest) one."""
    from tensorflow_serving.apis import get_model_status_pb2

    _, channel, _, _ = server
    state = get_model_status_pb2.ModelVersionStatus.State
    stub = model_stub(channel)
    resp = stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "musicnn-msd"}),
                               timeout=10)
    assert [(s.version, s.state) for s in resp.model_version_status] == [(1, state.END), (2, state.AVAILABLE)]
    assert resp.model_version_status[1].status.error_code == 0
    resp = stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "fcn-msd", "version": {"value": 1}}), timeout=10)
    assert [(s.version, s.state) for s in resp.model_version_status] == [(1, state.AVAILABLE)]


def test_model_metadata_signature_defs(server) -> None:
    """GetModelMetadata: a SignatureDefMap Any with serving_default waveform [-1, 48000] -> probabilities."""
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    _, channel, _, _ = server
    resp = prediction_stub(channel).GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": "musicnn-msd"}, metadata_field=["signature_def"]), timeout=10)
    assert resp.model_spec.name == "musicnn-msd" and resp.model_spec.version.value == 2
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sig_map)
    assert {"serving_default", "from_spectrogram", "spectrogram", "labels"} <= set(sig_map.signature_def)
    sd = sig_map.signature_def["serving_default"]
    assert sd.method_name == "tensorflow/serving/predict"
    assert [d.size for d in sd.inputs["waveform"].tensor_shape.dim] == [-1, 48000]
    assert sd.inputs["waveform"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in sd.outputs["probabilities"].tensor_shape.dim] == [-1, 50]


def test_health_and_reflection(server) -> None:
    """Health SERVING overall and for the PredictionService; reflection lists and describes it."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    _, channel, _, _ = server
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    reqs = [reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="tensorflow.serving.PredictionService")]
    listed, described = list(refl.ServerReflectionInfo(iter(reqs), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"} <= names
    assert described.file_descriptor_response.file_descriptor_proto  # the service's file is resolvable
    # Reflection v1 too (grpcurl >= 1.9 asks it first): the same messages, wire-identical.
    from google.protobuf import descriptor_pb2

    v1 = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                               request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                               response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    reqs = [*reqs, reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection")]
    listed, described, itself = list(v1(iter(reqs), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {"tensorflow.serving.PredictionService", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection", "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto
    files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in itself.file_descriptor_response.file_descriptor_proto]
    v1_file = next(f for f in files if f.package == "grpc.reflection.v1")
    assert v1_file.name == "grpc/reflection/v1/reflection.proto"
    assert v1_file.service[0].method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"


# ---------------------------------------------------------------- errors


def _error(fn, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(request, timeout=30)
    return info.value


def test_unknown_model_or_version_is_not_found(server, song_windows) -> None:
    """Unknown model, a version on disk but not served, and a missing version -> NOT_FOUND."""
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

    _, channel, _, _ = server
    stub = prediction_stub(channel)
    x = song_windows[:1]
    e = _error(stub.Predict, predict_request(x, name="no-such-model"))
    assert e.code() == grpc.StatusCode.NOT_FOUND and "no-such-model" in e.details()
    for version in (1, 7):
        e = _error(stub.Predict, predict_request(x, version=version))
        assert e.code() == grpc.StatusCode.NOT_FOUND and f"Specific(musicnn-msd, {version})" in e.details()
    e = _error(stub.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": "musicnn-msd", "version": {"value": 7}}, metadata_field=["signature_def"]))
    assert e.code() == grpc.StatusCode.NOT_FOUND
    e = _error(model_stub(channel).GetModelStatus, get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "no-such-model"}))
    assert e.code() == grpc.StatusCode.NOT_FOUND


RFC3339_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def test_one_access_log_line_per_rpc(server, song_windows) -> None:
    """Every RPC, failed or not, leaves exactly one ``audiolime.access`` line with its method, code,
    duration, request id, caller, peer and sizes; a caller's request id is kept only when it is at
    most 128 printable characters; every line's time is RFC 3339 UTC. The metrics port listens on
    the service's --host only (127.0.0.1 here, not 127.0.0.2)."""
    import socket

    from conftest import json_logs

    proc, channel, _, mport = server
    stub = prediction_stub(channel)
    marker = f"access-{time.monotonic_ns()}"
    ok = predict_request(song_windows[:2])
    resp, call = stub.Predict.with_call(ok, timeout=60, metadata=(("x-request-id", f"{marker}-ok"),))
    assert dict(call.trailing_metadata())["x-request-id"] == f"{marker}-ok"
    long_id, spaced_id = marker + "x" * 200, f"{marker} with spaces"
    for rid in (long_id, spaced_id):
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(predict_request(song_windows[:1], name="no-such-model"), timeout=30,
                         metadata=(("x-request-id", rid),))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        echoed = dict(info.value.trailing_metadata())["x-request-id"]
        assert echoed != rid and len(echoed) <= 128 and " " not in echoed
    ours = [r for r in json_logs(server.log) if r.get("logger") == "audiolime.access"]
    assert all(re.fullmatch(RFC3339_UTC, r["time"]) for r in json_logs(server.log))
    mine = [r for r in ours if r["request_id"] == f"{marker}-ok"]
    assert len(mine) == 1, mine
    line = mine[0]
    assert line["message"] == "rpc" and line["grpc_service"] == "tensorflow.serving.PredictionService"
    assert line["grpc_method"] == "Predict" and line["grpc_type"] == "unary" and line["grpc_code"] == "OK"
    assert line["request_bytes"] == ok.ByteSize() and line["response_bytes"] == resp.ByteSize() > 0
    assert line["request_messages"] == line["response_messages"] == 1
    assert 0 < line["duration_s"] < 60 and line["peer"].startswith(("ipv4:127.0.0.1:", "ipv6:"))
    assert line["caller"] == "" and line["service"] == "tagger"
    failed = [r for r in ours if r["grpc_code"] == "NOT_FOUND" and "no-such-model" in r.get("details", "")]
    assert len(failed) >= 2 and all(r["request_id"] not in (long_id, spaced_id) for r in failed)
    assert all(len(r["request_id"]) <= 128 for r in ours)
    assert not any(marker in r["request_id"] for r in failed)  # replaced, not truncated
    with socket.create_connection(("127.0.0.1", mport), timeout=5):
        pass
    with pytest.raises(OSError), socket.create_connection(("127.0.0.2", mport), timeout=5):
        pass
    text = scrape(mport)
    assert metric_value(text, "audiolime_build_info") == 1
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/monitoring/prometheus/metrics", timeout=10) as resp:
        assert "grpc_server_handled_total" in resp.read().decode()  # TF Serving's metrics path too
    assert metric_value(text, "grpc_server_started_total", grpc_method="Predict", grpc_type="unary") >= 3
    assert metric_value(text, "grpc_server_msg_received_total", grpc_method="Predict") >= 3
    assert not re.search(r"^\w+_created[{ ]", text, re.M)


@pytest.mark.parametrize("case, needle", [
    ("name", "missing: waveform; unexpected: audio"),
    ("dtype", "must be float32 (DT_FLOAT), got float64 (DT_DOUBLE)"),
    ("shape", "must have shape [-1, 48000] (-1: any size), got [2, 16000]"),
    ("rank", "got [48000]"),
    ("signature", "serving signature key 'classify' not found"),
    ("output_filter", "output_filter names ['logits']"),
    ("content", "'waveform' is not a valid TensorProto"),
    ("metadata_field", "metadata_field 'graph' is not supported"),
    ("empty", "empty batch (0 rows)"),
])
def test_bad_input_is_invalid_argument(server, song_windows, case, needle) -> None:
    """Wrong input name / dtype / shape / signature / filter / bytes / empty batch -> INVALID_ARGUMENT, naming it."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    _, channel, _, _ = server
    stub = prediction_stub(channel)
    x = song_windows[:2]
    call = stub.Predict
    if case == "name":
        req = predict_request(x, key="audio")
    elif case == "dtype":
        req = predict_request(x.astype(np.float64))
    elif case == "shape":
        req = predict_request(x[:, :16000])
    elif case == "rank":
        req = predict_request(x[0])
    elif case == "signature":
        req = predict_request(x, signature="classify")
    elif case == "output_filter":
        req = predict_request(x)
        req.output_filter.append("logits")
    elif case == "empty":
        req = predict_request(x[:0])
    elif case == "content":
        req = predict_request(x)
        req.inputs["waveform"].tensor_content = req.inputs["waveform"].tensor_content[:-4]
    else:
        call = stub.GetModelMetadata
        req = get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "musicnn-msd"},
                                                            metadata_field=["graph"])
    e = _error(call, req)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details())
    assert needle in e.details(), e.details()


def test_unimplemented_rpcs(server) -> None:
    """Classify, Regress, MultiInference and HandleReloadConfigRequest -> UNIMPLEMENTED."""
    from tensorflow_serving.apis import classification_pb2, inference_pb2, model_management_pb2, regression_pb2

    _, channel, _, _ = server
    stub, mstub = prediction_stub(channel), model_stub(channel)
    for fn, req in [(stub.Classify, classification_pb2.ClassificationRequest()),
                    (stub.Regress, regression_pb2.RegressionRequest()),
                    (stub.MultiInference, inference_pb2.MultiInferenceRequest()),
                    (mstub.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest())]:
        e = _error(fn, req)
        assert e.code() == grpc.StatusCode.UNIMPLEMENTED and "not supported" in e.details()


# ---------------------------------------------------------------- lifecycle, config errors


def test_sigterm_drains_in_flight_request(models, song_windows, expected, tmp_path) -> None:
    """TF Serving flag spellings; SIGUSR1 writes the thread stacks to the log and changes nothing;
    SIGTERM during a 20-window Predict: it completes correctly, exit 0, the log saying how long
    each shutdown phase took. SIGTERM right behind SIGUSR1 lands on a thread other than the main
    one (which is in the SIGUSR1 handler): with an untimed wait in the main thread the server then
    never drained (CI's separator hang, reproduced this way every time)."""
    (tmp_path / "batching.config").write_text(BATCHING)
    args = [f"--model_base_path={models / 'serving' / 'musicnn-msd'}", "--model_name=musicnn-msd",
            "--enable_batching=true", f"--batching_parameters_file={tmp_path / 'batching.config'}",
            "--rest_api_port=0", "--grace-period", "120"]
    with serve(args, tmp_path / "tagger.log") as (proc, channel, _, mport):
        result: dict = {}

        def call() -> None:
            try:
                result["response"] = prediction_stub(channel).Predict(predict_request(song_windows), timeout=180)
            except grpc.RpcError as exc:
                result["error"] = exc

        t = threading.Thread(target=call)
        t.start()
        deadline = time.monotonic() + 60
        while metric_value(scrape(mport), "audiolime_grpc_in_flight_requests", grpc_method="Predict") < 1:
            assert time.monotonic() < deadline and t.is_alive(), "the Predict never showed up in flight"
            time.sleep(0.02)
        proc.send_signal(signal.SIGUSR1)
        proc.send_signal(signal.SIGTERM)
        t.join(180)
        assert "error" not in result, result.get("error")
        assert np.max(np.abs(probabilities(result["response"]) - expected)) <= TOL
        assert exit_status(proc, 60, tmp_path / "tagger.log") == 0
    text = (tmp_path / "tagger.log").read_text()
    assert "Current thread" in text and "in run_until_signalled" in text  # faulthandler's dump
    stopped = [json.loads(line) for line in text.splitlines() if '"message": "stopped"' in line]
    assert stopped and set(stopped[0]["phases_s"]) == {"on_drain", "rpcs", "ports", "on_stop"}


@pytest.mark.parametrize("case, needle", [
    ("batching", "batching parameters file"),
    ("model_path", "is not a directory"),
    ("no_model", "one of --model-base-path or --model-config-file is required"),
    ("model_config", "model config file"),
])
def test_bad_configuration_exits_with_one_line(case, needle, tmp_path) -> None:
    """A bad batching file / model path / model config -> one-line error, non-zero exit, no traceback."""
    (tmp_path / "batching.config").write_text("max_batch_size { value: 8 }\nbatch_size_limit: 3\n")
    (tmp_path / "models.config").write_text('model_config_list { config { name: "x" base_path: "/nope" '
                                            'model_platform: "pytorch" } }')
    base = ["--model-base-path", str(model_dir() / "serving" / "musicnn-msd"), "--model-name", "musicnn-msd"]
    args = {
        "batching": [*base, "--enable-batching", "--batching-parameters-file", str(tmp_path / "batching.config")],
        "model_path": ["--model-base-path", str(tmp_path / "missing"), "--model-name", "m"],
        "no_model": [],
        "model_config": ["--model-config-file", str(tmp_path / "models.config")],
    }[case]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIOLIME_")}
    proc = subprocess.run([sys.executable, "-m", "audiolime.tagger.server", "--port", "0", "--metrics-port", "0",
                           *args], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("audiolime serve tagger: error:")]
    assert len(ours) == 1 and needle in ours[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- batching core, in-process


def test_batching_parameters_parser() -> None:
    """A real TF Serving batching_parameters.txt parses to the same numbers; bad files say why."""
    from audiolime.tagger.config import ConfigError, parse_batching_parameters

    text = """max_batch_size { value: 128 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1000000 }
num_batch_threads { value: 8 }
allowed_batch_sizes: 32
allowed_batch_sizes: 64
allowed_batch_sizes: 128
"""
    o = parse_batching_parameters(text)
    assert (o.max_batch_size, o.batch_timeout_s, o.max_enqueued_batches, o.num_batch_threads) == (128, 0.0, 1000000, 8)
    assert o.allowed_batch_sizes == (32, 64, 128) and o.enable_large_batch_splitting
    o = parse_batching_parameters("max_batch_size { value: 4 } batch_timeout_micros { value: 2500 } "
                                  "enable_large_batch_splitting { value: false }")
    assert o.batch_timeout_s == 0.0025 and not o.enable_large_batch_splitting and o.max_enqueued_batches == 10
    for bad, why in [("max_batch_size: 4", "BatchingParameters text proto"),
                     ("max_batch_size { value: 0 }", "max_batch_size must be >= 1"),
                     ("max_batch_size { value: 64 } allowed_batch_sizes: 8 allowed_batch_sizes: 32",
                      "must equal max_batch_size (64)")]:
        with pytest.raises(ConfigError, match=r".*") as info:
            parse_batching_parameters(bad, "f.txt")
        assert why in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_batcher_queue_full_padding_and_splitting() -> None:
    """Queue beyond max_enqueued_batches x max_batch_size -> RESOURCE_EXHAUSTED 'queue full';
    allowed_batch_sizes pads the model call and drops the padding; oversize requests are split or rejected."""
    from audiolime import errors
    from audiolime.tagger.batching import Batcher
    from audiolime.tagger.config import BatchingOptions

    gate, entered = threading.Event(), threading.Event()
    shapes: list[int] = []

    def fn(inputs):
        x = inputs["x"]
        shapes.append(len(x))
        entered.set()
        gate.wait(30)
        return {"y": x * 2}

    opts = BatchingOptions(max_batch_size=4, batch_timeout_s=0.0, num_batch_threads=1, max_enqueued_batches=1,
                           allowed_batch_sizes=(2, 4))
    b = Batcher(fn, opts, model="unit-test")
    try:
        out: dict[str, np.ndarray] = {}
        first = threading.Thread(target=lambda: out.setdefault("a", b.run({"x": np.arange(3.0)[:, None]})["y"]))
        first.start()
        assert entered.wait(30)  # the first batch is running and blocks the only batch thread
        second = threading.Thread(target=lambda: out.setdefault("b", b.run({"x": np.full((4, 1), 5.0)})["y"]))
        second.start()
        deadline = time.monotonic() + 30
        while b._queued < 4:  # the second request fills the queue (capacity 1 x 4 rows)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(errors.ResourceExhausted, match="queue full"):
            b.run({"x": np.ones((1, 1))})
        gate.set()
        first.join(30)
        second.join(30)
        assert np.array_equal(out["a"], np.arange(3.0)[:, None] * 2) and np.array_equal(out["b"], np.full((4, 1), 10.0))
        assert shapes == [4, 4]  # 3 rows padded to the allowed size 4
        assert np.array_equal(b.run({"x": np.arange(1.0)[:, None]})["y"], [[0.0]]) and shapes[-1] == 2
    finally:
        gate.set()
        b.close()
    split = Batcher(lambda i: {"y": i["x"] + 1}, BatchingOptions(max_batch_size=4, num_batch_threads=1), "unit-test")
    try:
        assert np.array_equal(split.run({"x": np.arange(10.0)[:, None]})["y"], np.arange(1.0, 11.0)[:, None])
    finally:
        split.close()
    strict = Batcher(lambda i: i, BatchingOptions(max_batch_size=4, num_batch_threads=1,
                                                  enable_large_batch_splitting=False), "unit-test")
    try:
        with pytest.raises(errors.InvalidInput, match="exceeds max_batch_size 4"):
            strict.run({"x": np.zeros((5, 1))})
    finally:
        strict.close()


def test_model_flags_resolve_like_tf_serving(models, tmp_path, monkeypatch) -> None:
    """Model flags: one model's dir or a base of models, a config file with relative paths,
    version policy and labels; environment fallbacks as the chart sets them."""
    from audiolime.tagger.server import build_parser, model_configs

    def parse(*argv: str):
        return model_configs(build_parser().parse_args(list(argv)))

    serving = models / "serving"
    [c] = parse("--model_base_path", str(serving / "musicnn-msd"), "--model_name", "musicnn-msd")
    assert (c.name, c.base_path, c.policy) == ("musicnn-msd", serving / "musicnn-msd", ("latest", 1))
    [c] = parse("--model-base-path", str(serving), "--model-name", "fcn-msd")
    assert c.base_path == serving / "fcn-msd"
    (tmp_path / "m.config").write_text(
        'model_config_list { config { name: "a" base_path: "serving/musicnn-msd" model_platform: "tensorflow" '
        'model_version_policy { specific { versions: 1 } } version_labels { key: "stable" value: 1 } } }')
    monkeypatch.setenv("AUDIOLIME_MODEL_CONFIG_FILE", str(tmp_path / "m.config"))
    monkeypatch.setenv("AUDIOLIME_MODEL_BASE_PATH", str(models))
    monkeypatch.setenv("AUDIOLIME_ENABLE_BATCHING", "true")
    assert build_parser().parse_args([]).enable_batching is True
    [c] = parse()
    assert (c.name, c.base_path, c.policy, c.version_labels) == ("a", serving / "musicnn-msd", ("specific", 1),
                                                                  {"stable": 1})
