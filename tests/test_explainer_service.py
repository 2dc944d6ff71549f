"""The three services as real processes on loopback: ``audiolime up`` (local store), a second
explainer on an S3 endpoint (moto server), and a dedicated tagger + explainers for fault tests.

One explanation request is small (N = 128..256 masks, musicnn, 2stems) so the module runs in a
few minutes; the Spleeter run of the song happens once and is then served from the cache.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import grpc
import numpy as np
import pytest
import soundfile as sf

from conftest import (
    BATCHING,
    DRUMS,
    ENV,
    KARISSA,
    REPO,
    TAG,
    VIBE,
    Stack,
    audiolime_up,
    explainer_args,
    explainer_stub,
    http_get,
    model_dir,
    s3_client,
    serving,
    shared_dir,
    start_server,
    tagger_args,
)
from conftest import explain_request as request

N = 128
HOST = "127.0.0.1"
PY = sys.executable
stub = explainer_stub

pytestmark = pytest.mark.slow


# -- process helpers -------------------------------------------------------------------------------
import audiolime  # noqa: E402
from audiolime.processes import free_port, scrape, terminate  # noqa: E402
from audiolime.processes import metric_value as metric  # noqa: E402

URL_SECRET = "test-url-secret-0123456789abcdef"


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared, models) -> Stack:
    """``audiolime up`` on a free port range with a local store (signed-URL key :data:`URL_SECRET`);
    stopped with SIGTERM at the end."""
    with audiolime_up(tmp_path_factory.mktemp("up"), env={"AUDIOLIME_URL_SECRET": URL_SECRET}) as s:
        yield s


@pytest.fixture(scope="module")
def first(stack):
    """One Explain through the stack (the first for this song: the separator runs Spleeter)."""
    return stack.stub.Explain(request(), timeout=600)


@pytest.fixture(scope="module")
def second(stack, first):
    """The same audio again (served from the separator's cache)."""
    return stack.stub.Explain(request(seed=1), timeout=600)


@pytest.fixture(scope="module")
def s3_explainer(stack, moto_s3, tmp_path_factory):
    """An explainer storing results in s3://audiolime-test/results (moto), small input limits."""
    s3_client(moto_s3).create_bucket(Bucket="audiolime-test")
    with serving("audiolime.explainer.server",
                 explainer_args("s3://audiolime-test/results", stack.separator, stack.tagger, "--s3-endpoint", moto_s3,
                                "--max-duration", "60", "--max-bytes", "1500000"),
                 tmp_path_factory.mktemp("s3") / "explainer.log") as server:
        yield server.port, stub(server.port), server.proc


# -- the explanation ---------------------------------------------------------------------------------
def test_explain_ranks_vocals_for_female_vocalists(first):
    """Unary Explain on a real song: 'female vocalists' is explained mostly by the vocals stem."""
    assert first.explanation_id and first.model.name == "musicnn-msd" and first.model.version >= 1
    (target,) = first.targets
    assert target.tag == TAG
    assert target.components[0].source == "vocals"
    vocals = sum(c.weight for c in target.components if c.source == "vocals")
    accomp = sum(c.weight for c in target.components if c.source == "accompaniment")
    assert vocals > accomp and vocals > 0
    assert len(target.components) == 12 and [c.rank for c in target.components] == list(range(1, 13))
    assert [c.weight for c in target.components] == sorted((c.weight for c in target.components), reverse=True)
    assert first.num_samples == N and 12 < first.unique_samples <= N
    probs = {p.tag: p.probability for p in first.prediction}
    assert len(probs) == 50 and max(probs, key=probs.get) == TAG
    assert first.separator.model == "2stems" and list(first.separator.stems) == ["vocals", "accompaniment"]
    assert first.separator.residual_rel_rms < 1e-3
    assert set(first.timings_s) >= {"decode", "scan", "separate", "predict", "fit", "fidelity", "store"}


def test_every_url_serves_the_listenable_decomposition(stack, first, karissa):
    """Every presigned URL answers over HTTP; the WAVs decode; the window is the original excerpt and
    each component is its stem in its time range and the cross-fades around it (silence elsewhere);
    the manifest names them all."""
    (target,) = first.targets
    urls = [c.url for c in target.components if c.url]
    assert len(urls) == 3 and all(c.url == "" for c in target.components[3:])
    sr = karissa.sample_rate
    status, data = http_get(first.audio.window_url)
    assert status == 200
    window, wsr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    a = int(round(first.audio.window_start_s * sr))
    assert wsr == sr and window.shape == (3 * sr, 2)
    np.testing.assert_allclose(window.T, karissa.waveform[:, a:a + 3 * sr], atol=1 / 32767 + 1e-6)
    for comp, url in zip(target.components, urls):
        status, data = http_get(url)
        assert status == 200
        wave, csr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        assert csr == sr and wave.shape == (3 * sr, 2)
        s0 = int(round((comp.start_s - first.audio.window_start_s) * sr))
        s1 = int(round((comp.end_s - first.audio.window_start_s) * sr))
        half = int(round(first.edges.fade_s / 2 * sr)) + 64  # a fade reaches half its length past the edge
        assert first.edges.mode == "fade" and half > 64
        outside = np.concatenate([wave[:max(s0 - half, 0)], wave[s1 + half:]])
        assert np.abs(outside).max() == 0.0 and np.abs(wave[s0:s1]).max() > 1e-3
    status, data = http_get(target.fidelity.url)
    assert status == 200 and sf.read(io.BytesIO(data))[0].shape == (3 * sr, 2)
    status, data = http_get(first.manifest_url)
    doc = json.loads(data)
    assert status == 200 and doc["targets"][0]["tag"] == TAG
    assert [c["name"] for c in doc["targets"][0]["components"]] == [c.name for c in target.components]
    assert doc["targets"][0]["components"][0]["file"] == f"rank1_vocals-{target.components[0].segment}.wav"
    root = stack.store / "explanations" / first.explanation_id
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == sorted([*(u.split("/o/explanations/")[1].split("/", 1)[1].split("?")[0] for u in urls),
                            "explanation.html", "explanation.json", "topk_mix.wav", "rest_mix.wav", "window.wav",
                            "stem_vocals.wav", "stem_accompaniment.wav"])
    assert sorted(first.artifact_urls) == sorted(f for f in files if f.endswith(".wav"))
    heard = {n: sf.read(io.BytesIO(http_get(first.artifact_urls[n])[1]), dtype="float32")[0]
             for n in ("topk_mix.wav", "rest_mix.wav", "stem_vocals.wav", "stem_accompaniment.wav")}
    # the complement and the stems: each pair sums to the window (16-bit WAVs, separator residual 1e-5)
    assert np.abs(heard["topk_mix.wav"] + heard["rest_mix.wav"] - window).max() < 1e-3
    assert np.abs(heard["stem_vocals.wav"] + heard["stem_accompaniment.wav"] - window).max() < 1e-3


def test_expired_and_tampered_urls_are_refused(stack):
    """Local signed URLs: a tampered signature, another key under the same signature, a later expiry
    under the same signature and an expired URL (correctly signed, a second in the past: no waiting)
    all get 403; the untouched URL and one signed anew for the future work."""
    from audiolime.store import sign

    resp = stack.stub.Explain(request(url_ttl_s=600), timeout=600)
    url = resp.audio.window_url
    assert http_get(url)[0] == 200
    q = parse_qs(urlparse(url).query)
    sig = q["sig"][0]
    bad_sig = url.replace(f"sig={sig}", "sig=" + ("0" if sig[0] != "0" else "1") + sig[1:])
    assert http_get(bad_sig)[0] == 403
    other = url.replace("/window.wav?", "/topk_mix.wav?")
    assert http_get(other)[0] == 403
    later = url.replace(f"expires={q['expires'][0]}", f"expires={int(q['expires'][0]) + 3600}")
    assert http_get(later)[0] == 403
    key = unquote(urlparse(url).path.removeprefix("/o/"))
    base = url.split("?")[0]
    past, future = int(time.time()) - 1, int(time.time()) + 60
    assert http_get(f"{base}?expires={future}&sig={sign(URL_SECRET.encode(), key, future)}")[0] == 200
    assert http_get(f"{base}?expires={past}&sig={sign(URL_SECRET.encode(), key, past)}")[0] == 403
    assert resp.urls_expire_at.seconds <= int(q["expires"][0]) + 1


def test_the_url_secret_is_in_no_command_line(stack):
    """``audiolime up`` hands the signed-URL key to the explainer in its environment: neither up's
    nor any service's command line (readable by every user of the host) holds it."""
    from audiolime.processes import child_pids, cmdline

    pids = [stack.proc.pid, *child_pids(stack.proc.pid)]
    assert len(pids) >= 4 and any("audiolime.explainer.server" in cmdline(p) for p in pids)
    for pid in pids:
        assert URL_SECRET not in cmdline(pid)
        assert "--url-secret" not in cmdline(pid)


def test_second_explain_hits_the_separator_cache(stack, first, second):
    """The same audio twice: the second is served from the separator's cache (response + /metrics)."""
    assert not first.separator.cache_hit and second.separator.cache_hit
    text = scrape(stack.metrics["separator"])
    assert metric(text, "audiolime_separator_cache_requests_total", model="2stems", result="hit") >= 1
    assert metric(text, "audiolime_separator_cache_requests_total", model="2stems", result="miss") >= 1
    assert second.audio.sha256 == first.audio.sha256 and second.seed == 1


def test_explain_stream_progress_is_monotonic_and_ends_with_result(stack, first):
    """ExplainStream with adaptive sampling (num_samples 0): progress events in stage order with
    non-decreasing evaluated/total, one total per round, each round's interim ranking, then one
    result saying how it stopped, whose top-k is the last interim one."""
    stages = ["decode", "scan", "separate", "predict", "fit", "fidelity", "store"]
    events = list(stack.stub.ExplainStream(request(seed=2, num_samples=0, max_samples=600), timeout=600))
    assert events[-1].HasField("result") and all(e.WhichOneof("event") in ("progress", "interim") for e in events[:-1])
    interim = [e.interim for e in events if e.HasField("interim")]
    prog = [e.progress for e in events[:-1] if e.HasField("progress")]
    keys = [(stages.index(p.stage), p.total, p.evaluated) for p in prog]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    predict = [p for p in prog if p.stage == "predict"]
    result = events[-1].result
    assert predict and predict[-1].evaluated == predict[-1].total == result.unique_samples
    assert len({p.total for p in predict}) == result.stopping.rounds >= 1
    assert [i.round for i in interim] == list(range(1, result.stopping.rounds + 1))
    assert interim[-1].masks == result.num_samples and interim[-1].targets[0].tag == result.targets[0].tag
    top = result.targets[0].components[:result.top_k]
    assert [c.name for c in interim[-1].targets[0].top] == [c.name for c in top]
    assert interim[-1].targets[0].stability == pytest.approx(result.targets[0].faithfulness.stability)
    assert result.stopping.reason in ("stable", "max_samples") and result.num_samples <= 600
    assert result.sampling.num_samples == 0 and result.sampling.max_samples == 600
    assert len(result.targets[0].faithfulness.deletion.probabilities) == 13
    assert {"decode", "scan", "separate", "predict", "fit", "store"} <= {p.stage for p in prog}
    assert events[-1].result.targets[0].components[0].source == "vocals"


def test_async_job_round_trip(stack, first):
    """SubmitExplanation returns a job id at once; GetExplanation reports it running, then the result."""
    from audiolime.v1 import explainer_pb2

    job_id = stack.stub.SubmitExplanation(request(seed=3), timeout=30).job_id
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    # WatchExplanation follows it to the end (instead of polling); ListExplanations lists it
    watched = [m.job for m in stack.stub.WatchExplanation(explainer_pb2.WatchExplanationRequest(job_id=job_id),
                                                          timeout=600)]
    assert watched[0].state in (explainer_pb2.ExplanationJob.QUEUED, explainer_pb2.ExplanationJob.RUNNING)
    assert watched[-1].state == explainer_pb2.ExplanationJob.SUCCEEDED, watched[-1].error_message
    assert watched[-1].result.explanation_id == f"{job_id}-1" and len(watched) >= 3
    listed = stack.stub.ListExplanations(explainer_pb2.ListExplanationsRequest(page_size=1000), timeout=30)
    assert job_id in [j.job_id for j in listed.jobs] and not listed.jobs[0].HasField("result")
    states = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        job = stack.stub.GetExplanation(explainer_pb2.GetExplanationRequest(job_id=job_id), timeout=30)
        states.append(job.state)
        if job.state in (explainer_pb2.ExplanationJob.SUCCEEDED, explainer_pb2.ExplanationJob.FAILED):
            break
        time.sleep(0.5)
    assert job.state == explainer_pb2.ExplanationJob.SUCCEEDED, job.error_message
    assert job.result.explanation_id == f"{job_id}-1" and job.attempt == 1 and job.result.targets[0].tag == TAG
    assert http_get(job.result.manifest_url)[0] == 200
    with pytest.raises(grpc.RpcError) as exc:
        stack.stub.GetExplanation(explainer_pb2.GetExplanationRequest(job_id="0" * 32), timeout=30)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND and "no explanation job" in exc.value.details()


# -- service plumbing -------------------------------------------------------------------------------
def test_up_prints_addresses(stack):
    """``audiolime up`` prints every service's address and the explain command to try."""
    text = "\n".join(stack.lines)
    for name, port in (("separator", stack.separator), ("tagger", stack.tagger), ("explainer", stack.explainer)):
        assert re.search(rf"^{name}\s+grpc {HOST}:{port}\s+metrics http://{HOST}:{stack.metrics[name]}/metrics",
                         text, re.M), text
    assert f"audiolime explain --server {HOST}:{stack.explainer}" in text
    # every installed tagger is served (not only musicnn-msd)
    installed = sorted(p.name for p in (model_dir() / "serving").iterdir() if p.is_dir())
    assert {"fcn-msd", "musicnn-msd"} <= set(installed)
    assert re.search(rf"^taggers\s+{re.escape(', '.join(installed))} ", text, re.M), text
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    with grpc.insecure_channel(f"{HOST}:{stack.tagger}") as ch:
        status = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "fcn-msd"}), timeout=30)
    assert status.model_version_status and status.model_version_status[0].state == 30  # AVAILABLE


@pytest.mark.parametrize("component,service", [("separator", "audiolime.v1.Separator"),
                                                ("tagger", "tensorflow.serving.PredictionService"),
                                                ("explainer", "audiolime.v1.Explainer")])
def test_health_and_reflection(stack, component, service):
    """Each service answers grpc.health.v1 (overall and by name) and lists itself via reflection."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    port = getattr(stack, component)
    with grpc.insecure_channel(f"{HOST}:{port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", service):
            assert health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status == \
                health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        (resp,) = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                 timeout=10))
        names = {s.name for s in resp.list_services_response.service}
        assert {service, "grpc.health.v1.Health"} <= names


CONTRACT = {
    "separator": ["audiolime_separator_cache_requests_total", "audiolime_separation_duration_seconds"],
    "tagger": ["audiolime_tagger_batch_size", "audiolime_tagger_queue_delay_seconds"],
    "explainer": ["audiolime_explanation_stage_duration_seconds", "audiolime_masks_evaluated_total",
                  "audiolime_explainer_cache_requests_total"],
}


@pytest.mark.parametrize("component", sorted(CONTRACT))
def test_metrics_expose_the_contract(stack, first, component):
    """/metrics of each service has the contract's names (docs/service-contract.md) with samples."""
    text = scrape(stack.metrics[component])
    for name in ["grpc_server_started_total", "grpc_server_handled_total", "grpc_server_handling_seconds",
                 "grpc_server_msg_received_total", "grpc_server_msg_sent_total",
                 "audiolime_grpc_in_flight_requests", *CONTRACT[component]]:
        assert re.search(rf"^{name}(_bucket|_count|_sum)?\{{", text, re.M), f"{component}: no samples of {name}"
    doc = (REPO / "docs" / "service-contract.md").read_text()
    assert all(f"`{n}`" in doc for names in CONTRACT.values() for n in names)
    assert metric(text, "audiolime_build_info", version=audiolime.__version__) == 1
    assert not re.search(r"^\w+_created[{ ]", text, re.M), "no *_created series"
    assert not re.search(r"[{,]service=", text), "no `service` label (it clashes with the target's)"
    if component == "explainer":
        assert metric(text, "grpc_server_handled_total", grpc_service="audiolime.v1.Explainer",
                      grpc_method="Explain", grpc_type="unary", grpc_code="OK") >= 1
        assert metric(text, "audiolime_masks_evaluated_total", model="musicnn-msd") >= first.unique_samples
        # grpc-ecosystem client metrics of the explainer's calls to its backends
        for service, method in (("tensorflow.serving.PredictionService", "Predict"), ("audiolime.v1.Separator", "Separate")):
            assert metric(text, "grpc_client_handled_total", grpc_service=service, grpc_method=method,
                          grpc_type="unary", grpc_code="OK") >= 1, method
            assert metric(text, "grpc_client_started_total", grpc_method=method) >= 1
        for stage in ("queue", "decode", "scan", "separate", "sample", "predict", "fit", "fidelity", "store"):
            assert metric(text, "audiolime_explanation_stage_duration_seconds_count", stage=stage) >= 1


def _deploy_metric_names() -> set[str]:
    """The metric names the Grafana dashboard and alert rules query (parsed by tests/test_deploy.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_deploy_checks", Path(__file__).with_name("test_deploy.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.metric_names_used_in_deploy()


def test_dashboard_and_alert_metrics_are_exported_by_the_running_services(stack, first):
    """Every audiolime_* series the dashboard and alerts query is on some running service's /metrics
    (TF Serving's own names are checked against its documentation in tests/test_deploy.py)."""
    exported = set()
    for component in ("separator", "tagger", "explainer"):
        exported |= set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", scrape(stack.metrics[component]), re.M))
    used = {n for n in _deploy_metric_names() if n.startswith("audiolime_")}
    assert used, "the dashboard queries no audiolime metric?"
    missing = sorted(used - exported)
    assert not missing, f"dashboard/alerts query metrics no service exports: {missing}"


def test_concurrent_tagger_requests_are_batched(stack):
    """16 concurrent one-window Predicts to the tagger are merged: fewer model calls than requests."""
    from audiolime.channels import make_channel
    from audiolime.explainer.remote import RemoteTagger

    before = scrape(stack.metrics["tagger"])
    ch = make_channel(f"{HOST}:{stack.tagger}")
    tagger = RemoteTagger(ch, "musicnn-msd")
    x = np.random.default_rng(0).standard_normal((16, tagger.window_samples)).astype(np.float32) * 0.1
    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(lambda i: tagger.predict(x[i:i + 1]), range(16)))
    batched = np.concatenate(outs)
    np.testing.assert_allclose(batched, tagger.predict(x), atol=1e-5)
    after = scrape(stack.metrics["tagger"])
    ch.close()
    d_sum = metric(after, "audiolime_tagger_batch_size_sum") - metric(before, "audiolime_tagger_batch_size_sum")
    d_count = metric(after, "audiolime_tagger_batch_size_count") - metric(before, "audiolime_tagger_batch_size_count")
    assert d_sum == 32  # 16 single windows + one batch of 16
    assert d_count < 16  # some model calls carried several requests' windows
    assert metric(after, "audiolime_tagger_batch_size_bucket", le="1.0") < \
        metric(after, "audiolime_tagger_batch_size_count")


def test_explainer_imports_no_tensorflow(stack):
    """The explainer's modules import without TensorFlow, and the running explainer has none mapped."""
    code = ("import sys, audiolime.explainer.server, audiolime.explainer.service, audiolime.explainer.remote, "
            "audiolime.client, audiolime.commands.up; "
            "sys.exit(1 if any(m.split('.')[0] == 'tensorflow' for m in sys.modules) else 0)")
    assert subprocess.run([PY, "-c", code], env=ENV).returncode == 0
    pids = subprocess.run(["pgrep", "-f", f"audiolime.explainer.server .*--port {stack.explainer} "],
                          capture_output=True, text=True).stdout.split()
    assert len(pids) == 1
    maps = Path(f"/proc/{pids[0]}/maps").read_text()
    assert "tensorflow" not in maps and "grpc" in maps


# -- bad input ---------------------------------------------------------------------------------------
BAD = [
    (dict(audio=b"not audio at all"), grpc.StatusCode.INVALID_ARGUMENT, "bad.ogg: not a readable audio file"),
    (dict(model="no-such-model"), grpc.StatusCode.NOT_FOUND, "no-such-model"),
    (dict(tags=["femal vocals"]), grpc.StatusCode.INVALID_ARGUMENT, "closest valid tags: female vocalist"),
    (dict(num_samples=5), grpc.StatusCode.INVALID_ARGUMENT, "num_samples must be between d'+1 = 13"),
    (dict(num_samples=70000), grpc.StatusCode.INVALID_ARGUMENT, "65536"),
    (dict(top_k=-1), grpc.StatusCode.INVALID_ARGUMENT, "top_k must be >= 1"),
    (dict(url_ttl_s=8 * 24 * 3600), grpc.StatusCode.INVALID_ARGUMENT, "url_ttl_s must be between 0 and 604800"),
    (dict(window_start_s=500.0), grpc.StatusCode.INVALID_ARGUMENT, "outside the audio"),
    (dict(window_duration_s=10.0), grpc.StatusCode.INVALID_ARGUMENT, "model's input length 3"),
    (dict(segments=100000), grpc.StatusCode.INVALID_ARGUMENT, "segments"),
    (dict(separator_model="9stems"), grpc.StatusCode.NOT_FOUND, "9stems"),
    (dict(separator_model="drums"), grpc.StatusCode.NOT_FOUND, "unknown separator model"),
    (dict(seed=-1), grpc.StatusCode.INVALID_ARGUMENT, "seed must be between 0"),
    (dict(audio=None), grpc.StatusCode.INVALID_ARGUMENT, "exactly one of content"),
    (dict(uri="s3://nowhere"), grpc.StatusCode.INVALID_ARGUMENT, "unsupported audio URI"),
]


@pytest.mark.parametrize("change,code,message", BAD, ids=[m for _, _, m in BAD])
def test_bad_input_gets_a_clear_status(stack, first, change, code, message):
    """Bad requests fail with the right status and a message naming the problem; nothing is stored."""
    from audiolime.v1 import common_pb2

    req = request(num_samples=N)
    change = dict(change)
    key = next(iter(change))  # the field the change breaks
    if "audio" in change:
        audio = change.pop("audio")
        if audio is None:
            req.ClearField("audio")
        else:
            req.audio.CopyFrom(common_pb2.AudioInput(content=audio, filename="bad.ogg"))
    if "uri" in change:
        req.audio.CopyFrom(common_pb2.AudioInput(uri=change.pop("uri")))
    for k, v in change.items():
        if isinstance(v, list):
            del getattr(req, k)[:]
            getattr(req, k).extend(v)
        else:
            setattr(req, k, v)
    before = set((stack.store / "explanations").iterdir())
    with pytest.raises(grpc.RpcError) as exc:
        stack.stub.Explain(req, timeout=120)
    assert exc.value.code() == code, exc.value.details()
    assert message in exc.value.details()
    assert set((stack.store / "explanations").iterdir()) == before
    # google.rpc.BadRequest names the field at fault (none for an unsupported URI scheme)
    from audiolime import rpcstatus

    field, _ = rpcstatus.details_of(exc.value)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        # 100000 segments make d'+1 exceed num_samples' range: the message (and field) is num_samples
        assert field == {"uri": None, "segments": "num_samples"}.get(key, key), (field, exc.value.details())
        err = rpcstatus.from_rpc_error(exc.value)
        assert err.field == field  # type: ignore[attr-defined]
    else:
        assert field is None


# -- S3 -------------------------------------------------------------------------------------------
def test_s3_store_presigned_urls(s3_explainer, moto_s3):
    """With an S3 store (moto server): results under the prefix, one namespace per explanation,
    presigned URLs with the requested TTL that serve decodable WAVs and the manifest."""

    port, s3stub, _ = s3_explainer
    resp = s3stub.Explain(request(DRUMS, tags=[], top_n=1, url_ttl_s=900), timeout=600)
    urls = [resp.manifest_url, resp.audio.window_url, resp.targets[0].fidelity.url,
            *(c.url for c in resp.targets[0].components if c.url)]
    assert len(urls) == 6
    with urllib.request.urlopen(resp.report_url, timeout=30) as page:  # S3 serves the type it was put with
        assert page.headers["Content-Type"] == "text/html; charset=utf-8" and b"<!DOCTYPE html>" in page.read()
    for url in urls:
        u = urlparse(url)
        assert url.startswith(moto_s3) and u.path.startswith(f"/audiolime-test/results/explanations/{resp.explanation_id}/")
        assert parse_qs(u.query)["X-Amz-Expires"] == ["900"]
        status, data = http_get(url)
        assert status == 200
        if u.path.endswith(".wav"):
            wave, sr = sf.read(io.BytesIO(data), always_2d=True)
            assert sr == 44100 and wave.shape == (3 * 44100, 2) and np.abs(wave).max() > 1e-3
        else:
            assert json.loads(data)["audio"]["sha256"] == resp.audio.sha256
    s3 = s3_client(moto_s3)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="audiolime-test", Prefix="results/")["Contents"]]
    # besides the explanation: when to delete it (TTL), the cache's pointer to it and the song's scan
    results = [k for k in keys if not k.startswith(("results/expiry/", "results/cache/", "results/scans/"))]
    assert len([k for k in keys if k.startswith("results/scans/") and k.endswith(".npz")]) == 1
    assert all(k.startswith(f"results/explanations/{resp.explanation_id}/") for k in results) and len(results) == 10
    pointers = [k for k in keys if k.startswith("results/cache/")]
    assert len(pointers) == 1 and pointers[0].endswith(".json")
    entry = json.loads(s3.get_object(Bucket="audiolime-test", Key=pointers[0])["Body"].read())
    assert resp.explanation_id in json.dumps(entry)
    assert [k.rsplit("-", 1)[-1] for k in keys if k.startswith("results/expiry/")] == [resp.explanation_id]


@pytest.mark.parametrize("name,message", [(KARISSA, "more than the limit 1500000"),
                                          (VIBE, "longer than the limit 60 s")])
def test_size_and_duration_limits(s3_explainer, name, message):
    """Audio over the configured size or duration -> INVALID_ARGUMENT naming the limit."""
    _, s3stub, _ = s3_explainer
    with pytest.raises(grpc.RpcError) as exc:
        s3stub.Explain(request(name), timeout=120)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in exc.value.details()


# -- faults -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def faulty(stack, first, tmp_path_factory):
    """A dedicated tagger (to kill) and two explainers on it: a patient one and an impatient one."""
    tmp = tmp_path_factory.mktemp("faults")
    batching = tmp / "batching.txt"
    batching.write_text(BATCHING)
    state = {"tagger": start_server("audiolime.tagger.server", tagger_args(batching), tmp / "tagger.log")}
    tport = state["tagger"].port
    explainers = {}
    for name, retries in (("patient", "12"), ("impatient", "2")):
        store = tmp / f"store-{name}"
        server = start_server("audiolime.explainer.server", explainer_args(
            store.as_uri(), stack.separator, tport, "--batch-size", "16", "--max-in-flight", "2", "--tagger-retries",
            retries, "--tagger-backoff", "0.5", "--http-port", str(free_port())),
            tmp / f"explainer-{name}.log")
        explainers[name] = (stub(server.port), store, server.proc)
    restart = lambda: start_server("audiolime.tagger.server", tagger_args(batching), tmp / "tagger.log",  # noqa: E731
                                   port=tport)
    yield state, restart, explainers
    for _, _, proc in explainers.values():
        terminate(proc)
    terminate(state["tagger"].proc)


def stream_until_predicting(stub_, req):
    """Start ExplainStream; return (iterator, events so far) once masks are being evaluated."""
    it = stub_.ExplainStream(req, timeout=600)
    seen = []
    for ev in it:
        seen.append(ev)
        if ev.HasField("progress") and ev.progress.stage == "predict" and ev.progress.evaluated > 0:
            return it, seen
    raise AssertionError(f"stream ended before the predict stage: {seen}")


def test_tagger_killed_and_restarted_mid_explanation_completes(faulty):
    """SIGKILL the tagger while masks are evaluated, start it again: the explanation completes."""
    state, restart, explainers = faulty
    stub_, store, _ = explainers["patient"]
    it, seen = stream_until_predicting(stub_, request(num_samples=256))
    state["tagger"].proc.kill()
    state["tagger"].proc.wait()
    state["tagger"] = restart()
    rest = list(it)
    assert rest[-1].HasField("result")
    result = rest[-1].result
    assert result.num_samples == 256 and result.targets[0].components[0].source == "vocals"
    assert (store / "explanations" / result.explanation_id / "explanation.json").is_file()
    # the restarted tagger served part of it
    assert metric(scrape(state["tagger"].metrics_port), "grpc_server_handled_total", grpc_method="Predict", grpc_code="OK") >= 1


def test_tagger_down_for_good_is_unavailable_and_leaves_nothing(faulty):
    """Tagger killed mid-explanation and not restarted: UNAVAILABLE after the retry budget, and
    nothing is left in the store."""
    state, restart, explainers = faulty
    stub_, store, _ = explainers["impatient"]
    if state["tagger"].proc.poll() is not None:
        state["tagger"] = restart()
    it, _ = stream_until_predicting(stub_, request(num_samples=256))
    state["tagger"].proc.kill()
    state["tagger"].proc.wait()
    with pytest.raises(grpc.RpcError) as exc:
        list(it)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "tagger" in exc.value.details() and "attempts" in exc.value.details()
    leftovers = [p for p in (store / "explanations").rglob("*")] if (store / "explanations").exists() else []
    assert leftovers == []


# -- CLI ----------------------------------------------------------------------------------------------
def test_cli_explain_server_writes_what_in_process_writes(stack, first, tmp_path):
    """``audiolime explain --server`` and the in-process command give the same explanation: the same
    stems (one stem source on one chunk grid; only the cache's 24-bit FLAC differs), so the same
    ranking, weights within 1e-4, the same files and the same document."""
    exe = str(REPO / ".venv" / "bin" / "audiolime")
    path = str(shared_dir() / "audio" / KARISSA)
    common = ["--tag", TAG, "--num-samples", str(N), "--start", "117", "--json", "--model-dir", str(model_dir())]
    out_r, out_l = tmp_path / "remote", tmp_path / "local"
    r = subprocess.run([exe, "explain", "--server", f"{HOST}:{stack.explainer}", path, "--out", str(out_r), *common],
                       env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    l_ = subprocess.run([exe, "explain", path, "--out", str(out_l), *common], env=ENV, capture_output=True,
                        text=True, timeout=900)
    assert l_.returncode == 0, l_.stderr[-2000:]
    remote, local = json.loads(r.stdout), json.loads(l_.stdout)
    assert json.loads((out_r / "explanation.json").read_text()) == remote
    files = lambda d: sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(out_r) == files(out_l)
    assert len(files(out_l)) == 10 and {"explanation.json", "explanation.html", "topk_mix.wav", "rest_mix.wav",
                                        "window.wav", "stem_vocals.wav"} <= set(files(out_l))
    assert "sig=" not in (out_r / "explanation.html").read_text()  # the download's report plays local files
    rt, lt = remote["targets"][0], local["targets"][0]
    assert [c["name"] for c in rt["components"]] == [c["name"] for c in lt["components"]]
    assert max(abs(a["weight"] - b["weight"]) for a, b in zip(rt["components"], lt["components"])) < 1e-4
    assert rt["components"][0]["source"] == "vocals"
    assert rt["fidelity"]["components"] == lt["fidelity"]["components"]
    assert max(abs(remote["prediction"][k] - local["prediction"][k]) for k in local["prediction"]) < 1e-4
    rf, lf = rt["faithfulness"], lt["faithfulness"]
    for curve in ("deletion", "insertion"):
        assert np.abs(np.subtract(rf[curve]["probabilities"], lf[curve]["probabilities"])).max() < 1e-4
        assert abs(rf[curve]["auc"] - lf[curve]["auc"]) < 1e-4
    assert abs(rf["drop_top_k"]["target_probability"] - lf["drop_top_k"]["target_probability"]) < 1e-4
    for doc in (remote, local):
        doc.pop("timings_s"), doc["separator"].pop("residual_rel_rms"), doc["faithfulness_cost"].pop("seconds")
        for t in doc["targets"]:
            for c in t["components"]:
                c.pop("weight")
            t.pop("surrogate_r2"), t.pop("intercept"), t["fidelity"].pop("target_probability")
            f = t["faithfulness"]
            f.pop("deletion"), f.pop("insertion"), f["drop_top_k"].pop("target_probability")
        doc.pop("prediction")
    assert remote == local
    assert sf.read(out_r / "window.wav")[0].tolist() == sf.read(out_l / "window.wav")[0].tolist()
    for name in files(out_l):
        if name.startswith("rank"):
            a, b = sf.read(out_r / name)[0], sf.read(out_l / name)[0]
            assert np.abs(a - b).max() <= 2 / 32768, name  # the same component audio (16-bit WAV)
    bad = subprocess.run([exe, "explain", "--server", f"{HOST}:{stack.explainer}", path, "--tag", "no such tag"],
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("audiolime: error: INVALID_ARGUMENT: unknown tag")
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


# -- shutdown (last: stops the stack) ----------------------------------------------------------------------
def test_up_forwards_sigterm_and_stops_every_service(stack):
    """SIGTERM to ``audiolime up`` stops all three services and it exits 0."""
    stack.proc.send_signal(signal.SIGTERM)
    assert stack.proc.wait(90) == 0
    for port in (stack.separator, stack.tagger, stack.explainer, stack.http):
        with contextlib.closing(socket.socket()) as s:
            assert s.connect_ex((HOST, port)) != 0, f"port {port} still accepting"



def test_the_bare_explainer_says_what_it_needs_in_one_line():
    """`audiolime serve explainer` with no store (the image run bare) exits 2 with one plain line
    naming --store and its two forms, no traceback and no JSON log record."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIOLIME_")}
    proc = subprocess.run([sys.executable, "-m", "audiolime.explainer.server", "--port", "0", "--metrics-port", "0"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "audiolime serve explainer: error: --store (or $AUDIOLIME_STORE) is required: s3://bucket/prefix or file:///path"]
