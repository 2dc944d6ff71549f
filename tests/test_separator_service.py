"""Separator service: chunked Spleeter core in-process, and the gRPC server as a real process."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf

from audiolime.processes import metric_value, scrape
from conftest import exit_status, json_logs, model_dir, s3_client, serving, wait_metric

pytestmark = pytest.mark.slow  # real servers, processes or the chart tools

SONG = "admiralbob77_-_Choice_-_Drum-bass.ogg"  # 25 s, the shortest shared song


@contextlib.contextmanager
def serve(args: list[str], log_path: Path, env: dict[str, str] | None = None, timeout: float = 120.0):
    """The separator server until SERVING (always stopped); yields (process, channel, metrics port)."""
    with serving("audiolime.separator.server", ["--model-dir", str(model_dir()), *args], log_path, env,
                 timeout) as server, grpc.insecure_channel(server.target) as channel:
        yield server.proc, channel, server.metrics_port


def stub(channel):
    from audiolime.v1 import separator_pb2_grpc

    return separator_pb2_grpc.SeparatorStub(channel)


def request(content: bytes = b"", uri: str = "", model: str = ""):
    from audiolime.v1 import common_pb2, separator_pb2

    audio = common_pb2.AudioInput(uri=uri) if uri else common_pb2.AudioInput(content=content, filename="song.ogg")
    return separator_pb2.SeparateRequest(audio=audio, model=model)


def read_flac_uri(uri: str) -> tuple[np.ndarray, int]:
    from urllib.parse import unquote

    assert uri.startswith("file://"), uri
    data, sr = sf.read(unquote(uri[len("file://"):]), dtype="float32", always_2d=True)
    return data.T, sr


# ---------------------------------------------------------------- in-process core


@pytest.fixture(scope="module")
def spleeter(models: Path):
    from audiolime.separator.spleeter_separator import SpleeterSeparator

    sep = SpleeterSeparator(models / "spleeter", "2stems")
    yield sep
    sep.close()


def test_chunked_equals_unchunked(spleeter, karissa) -> None:
    """Chunked separation (segment-aligned, one-segment cross-fade) matches one Spleeter pass within 0.1% of the mixture RMS."""
    from audiolime.method.stems import ChunkPlan, separate_chunked

    x = karissa.waveform[:, 20 * 44100:80 * 44100]
    whole = spleeter.separate(x, 44100).stems
    parts: dict[str, list[np.ndarray]] = {k: [] for k in whole}
    mix_parts: list[np.ndarray] = []

    def sink(_, mix, stems):
        mix_parts.append(mix)
        for k, v in stems.items():
            parts[k].append(v)

    def run(a, b):
        return spleeter.separate(x[:, a:b], 44100).stems

    separate_chunked(run, x, ChunkPlan.for_seconds(24.0), sink)  # hop 2 segments (23.8 s) + 1 overlap: 3 chunks
    assert len(mix_parts) == 3
    np.testing.assert_array_equal(np.concatenate(mix_parts, 1), x)
    ref = np.sqrt(np.mean(np.square(x)))
    for k in whole:
        got = np.concatenate(parts[k], 1)
        assert got.shape == whole[k].shape
        assert np.sqrt(np.mean(np.square(got - whole[k]))) / ref < 1e-3, k  # measured 6e-5
    # a real bug (e.g. no cross-fade, misaligned chunks) is well above that bound (measured 8%)
    naive: dict[str, list[np.ndarray]] = {k: [] for k in whole}
    separate_chunked(run, x, ChunkPlan(15 * 44100, 44100), lambda _, m, s: [naive[k].append(v) for k, v in s.items()])
    assert np.sqrt(np.mean(np.square(np.concatenate(naive["vocals"], 1) - whole["vocals"]))) / ref > 0.02


def test_admission_rejects_beyond_queue() -> None:
    """With 1 running and 1 queued, a third concurrent separation is refused with ResourceExhausted."""
    from audiolime.errors import ResourceExhausted
    from audiolime.separator.service import Admission

    adm = Admission(max_concurrent=1, max_queued=1)
    release = threading.Event()

    def hold():
        with adm.slot():
            release.wait(60)

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while (adm.running, adm.waiting) != (1, 1):  # one holds the slot, the other waits for it
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(ResourceExhausted, match="busy"):
        with adm.slot():
            pass
    release.set()
    for t in threads:
        t.join()
    assert (adm.running, adm.waiting) == (0, 0)
    with adm.place() as place:  # a cache hit: waits (decode, lookup), never runs, gives its place back
        assert (adm.running, adm.waiting) == (0, 1)
    assert not place.ran and (adm.running, adm.waiting) == (0, 0)
    with adm.slot():  # free again
        assert (adm.running, adm.waiting) == (1, 0)


# ---------------------------------------------------------------- gRPC server, file:// store


@pytest.fixture(scope="module")
def file_server(models, tmp_path_factory):
    """A separator with a file:// store, the default limits (600 s, 200 MiB), and 2stems (the
    default) plus its 2stems+hpss variant."""
    store = tmp_path_factory.mktemp("stems")
    log = store.parent / "separator.log"
    with serve(["--store", store.as_uri(), "--grace-period", "60", "--reflection", "--models", "2stems,2stems+hpss"],
               log) as (proc, channel, mport):
        yield proc, channel, mport, store, log


def test_separate_stores_stems_and_hits_cache(file_server, shared) -> None:
    """Separate writes downloadable FLAC stems summing to the mixture; the repeat is a cache hit counted in /metrics."""
    from audiolime.audio import decode

    _, channel, mport, store, log = file_server
    content = (shared / "audio" / SONG).read_bytes()
    first = stub(channel).Separate(request(content), timeout=120, metadata=(("x-request-id", "sep-test-1"),))
    assert not first.cache_hit and first.model == "2stems"
    assert [s.name for s in first.stems] == ["vocals", "accompaniment"]
    mix = decode(content)
    assert first.audio_sha256 == mix.pcm_sha256()
    assert first.residual_rel_rms < 1e-3
    assert (store / "stems" / "2stems" / first.audio_sha256 / "manifest.json").is_file()
    total = 0
    for s in first.stems:
        data, sr = read_flac_uri(s.uri)
        assert (sr, data.shape) == (44100, (2, mix.num_samples)) == (s.sample_rate, (s.channels, s.num_samples))
        total = total + data
    err = np.sqrt(np.mean(np.square(total - mix.waveform))) / np.sqrt(np.mean(np.square(mix.waveform)))
    assert err < 1e-3  # 24-bit quantisation + Spleeter's own residual
    before = metric_value(scrape(mport), "audiolime_separator_cache_requests_total", model="2stems", result="hit")
    second = stub(channel).Separate(request(content), timeout=30)
    assert second.cache_hit
    assert [s.uri for s in second.stems] == [s.uri for s in first.stems]
    assert second.audio_sha256 == first.audio_sha256
    after = metric_value(scrape(mport), "audiolime_separator_cache_requests_total", model="2stems", result="hit")
    assert after == before + 1
    assert metric_value(scrape(mport), "audiolime_separation_duration_seconds_count", model="2stems") >= 1
    assert metric_value(scrape(mport), "grpc_server_handled_total", grpc_service="audiolime.v1.Separator",
                        grpc_method="Separate", grpc_code="OK") >= 2
    separated = [r for r in json_logs(log) if r.get("message") == "separated"]
    assert any(r["request_id"] == "sep-test-1" and r["audio_sha256"] == first.audio_sha256 and
               r["service"] == "separator" for r in separated), separated


def test_hpss_variant_is_served_and_cached_like_any_model(file_server, shared) -> None:
    """2stems+hpss over gRPC: three stems summing to the mixture, cached under its own name (the
    repeat is a hit), from the one 2stems graph the server loaded."""
    from audiolime.audio import decode

    _, channel, mport, store, log = file_server
    content = (shared / "audio" / SONG).read_bytes()
    first = stub(channel).Separate(request(content, model="2stems+hpss"), timeout=300)
    assert first.model == "2stems+hpss" and [s.name for s in first.stems] == ["vocals", "harmonic", "percussive"]
    assert (store / "stems" / "2stems+hpss" / first.audio_sha256 / "manifest.json").is_file()
    from audiolime.store import LocalStore

    local = LocalStore(store)  # how the explainer reads stems back: the URI names the stored object
    assert local.get(local.parse_uri(first.stems[0].uri)) == (store / local.parse_uri(first.stems[0].uri)).read_bytes()
    mix = decode(content)
    total = sum(read_flac_uri(s.uri)[0] for s in first.stems)
    err = np.sqrt(np.mean(np.square(total - mix.waveform))) / np.sqrt(np.mean(np.square(mix.waveform)))
    assert err < 1e-3
    assert stub(channel).Separate(request(content, model="2stems+hpss"), timeout=60).cache_hit
    assert metric_value(scrape(mport), "audiolime_separator_cache_requests_total", model="2stems+hpss",
                        result="hit") >= 1
    assert len([r for r in json_logs(log) if r.get("message") == "spleeter model loaded"]) == 1


def test_a_window_separates_only_its_chunks_and_equals_the_whole_recording_there(file_server, karissa,
                                                                                  tmp_path) -> None:
    """A window (a 22.05 kHz recording of 100 s, the window 61-64 s): only its chunks run, its stems
    are an entry of their own beginning at start_sample (> 0, the resampling margin before the
    window included), and they equal the whole recording's stems there (one chunk grid); once the
    whole recording is cached it serves the window. Bad windows are INVALID_ARGUMENT naming the field."""
    from audiolime.method.waveform import resample

    _, channel, _, store, _ = file_server
    rate = 22050
    song = resample(karissa.waveform[:, :100 * 44100], 44100, rate)
    path = tmp_path / "window.flac"
    sf.write(str(path), song.T, rate, subtype="PCM_24")
    content = path.read_bytes()
    start, end = 61 * rate, 64 * rate

    def separate(window=(0, 0)):
        req = request(content)
        req.window_start, req.window_end = window
        return stub(channel).Separate(req, timeout=300)

    win = separate((start, end))
    assert not win.cache_hit and abs(win.duration_s - 100) < 1e-3
    for s in win.stems:
        assert s.sample_rate == 44100 and 0 < s.start_sample <= 2 * start
        assert s.start_sample + s.num_samples >= 2 * end and s.num_samples < 5 * 44100
        assert f"/window-{start}-{end}/" in s.uri
    assert (store / "stems" / "2stems" / win.audio_sha256 / f"window-{start}-{end}" / "manifest.json").is_file()
    assert not (store / "stems" / "2stems" / win.audio_sha256 / "manifest.json").exists()  # no whole song
    assert separate((start, end)).cache_hit  # the window's own entry

    whole = separate()
    assert not whole.cache_hit and all(s.start_sample == 0 and s.num_samples == 100 * 44100 for s in whole.stems)
    for w, f in zip(win.stems, whole.stems, strict=True):
        part, full = read_flac_uri(w.uri)[0], read_flac_uri(f.uri)[0]
        there = full[:, w.start_sample:w.start_sample + w.num_samples]
        assert np.max(np.abs(part - there)) < 1e-4, w.name  # FLAC's 24 bits: the same separation
    again = separate((start, end))
    assert again.cache_hit and [s.uri for s in again.stems] == [s.uri for s in whole.stems]

    for window, field in (((5, 5), "window_end"), ((-1, 10), "window_start"), ((0, 101 * rate), "window_end")):
        with pytest.raises(grpc.RpcError) as info:
            separate(window)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in info.value.details(), window


def test_ten_minute_song_over_grpc(file_server, karissa, tmp_path) -> None:
    """A 10-minute 44.1 kHz stereo song (a shared song tiled, ~60 MiB FLAC inline) separates into full-length stems by reference."""
    _, channel, mport, store, _ = file_server
    n = 600 * 44100
    song = np.tile(karissa.waveform, (1, -(-n // karissa.num_samples)))[:, :n]
    path = tmp_path / "long.flac"
    sf.write(str(path), song.T, 44100, subtype="PCM_16")
    content = path.read_bytes()
    assert len(content) > 4 * 1024 * 1024  # beyond gRPC's default 4 MiB receive limit
    response = stub(channel).Separate(request(content), timeout=600)
    assert not response.cache_hit and abs(response.duration_s - 600) < 1e-6
    assert response.residual_rel_rms < 1e-3
    assert response.ByteSize() < 4096  # stems travel by reference, never inline
    for s in response.stems:
        info = sf.info(s.uri[len("file://"):])
        assert (s.num_samples, s.channels, s.sample_rate) == (n, 2, 44100)
        assert (info.frames, info.channels, info.samplerate, info.subtype) == (n, 2, 44100, "PCM_24")
    assert metric_value(scrape(mport), "audiolime_separator_separations", state="running") == 0


def test_undecodable_bytes_are_invalid_argument(file_server) -> None:
    """Bytes that are not audio fail with INVALID_ARGUMENT saying they are not readable audio."""
    with pytest.raises(grpc.RpcError) as info:
        stub(file_server[1]).Separate(request(b"definitely not audio" * 100), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a readable audio file (Format not recognised.)" in info.value.details()  # no Python repr leaks


def test_uri_inputs_are_refused_without_an_allow_list(file_server, shared) -> None:
    """Without --input-buckets every URI is PERMISSION_DENIED with one message, a file:// path
    outside the store, one inside it (missing or not: no existence oracle) alike."""
    store = file_server[3]
    for uri in ((shared / "audio" / SONG).as_uri(), (store / "in" / "missing.ogg").as_uri(),
                (store / "stems").as_uri() + "/x.flac"):
        with pytest.raises(grpc.RpcError) as info:
            stub(file_server[1]).Separate(request(uri=uri), timeout=30)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert info.value.details() == f"audio uri {uri!r} is not in an allowed input location (--input-buckets)"


def test_unknown_model_is_not_found(file_server, shared) -> None:
    """An unloaded separator model fails with NOT_FOUND listing the loaded ones."""
    content = (shared / "audio" / SONG).read_bytes()
    with pytest.raises(grpc.RpcError) as info:
        stub(file_server[1]).Separate(request(content, model="7stems"), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "7stems" in info.value.details() and "2stems" in info.value.details()


def test_health_and_reflection(file_server) -> None:
    """Health reports SERVING for the Separator service and reflection lists it."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    channel = file_server[1]
    status = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="audiolime.v1.Separator"), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "audiolime.v1.Separator" in services and "grpc.health.v1.Health" in services


def test_busy_is_resource_exhausted_and_sigterm_drains(models, shared, tmp_path) -> None:
    """With 1 running and no queue a second song gets RESOURCE_EXHAUSTED; SIGTERM lets the running one finish OK, exit 0."""
    content = (shared / "audio" / "Kevin_MacLeod_-_Vibe_Ace.ogg").read_bytes()  # 61 s: long enough to be in flight
    args = ["--store", (tmp_path / "s").as_uri(), "--grace-period", "60", "--max-concurrency", "1", "--max-queue", "0"]
    with serve(args, tmp_path / "separator.log") as (proc, channel, mport):
        result: dict = {}

        def call():
            try:
                result["response"] = stub(channel).Separate(request(content), timeout=120)
            except grpc.RpcError as exc:
                result["error"] = exc

        t = threading.Thread(target=call)
        t.start()
        wait_metric(mport, "audiolime_separator_separations", 1, state="running")
        with pytest.raises(grpc.RpcError) as info:
            stub(channel).Separate(request((shared / "audio" / SONG).read_bytes()), timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "busy" in info.value.details()
        proc.send_signal(signal.SIGTERM)
        t.join(120)
        assert "error" not in result, result.get("error")
        assert len(result["response"].stems) == 2 and not result["response"].cache_hit
        assert exit_status(proc, 60, tmp_path / "separator.log") == 0


# ---------------------------------------------------------------- gRPC server, S3 (moto server mode)


LIMITS = {"AUDIOLIME_MAX_DURATION": "60", "AUDIOLIME_MAX_BYTES": "1500000",  # limits through the env fallbacks
          "AUDIOLIME_INPUT_BUCKETS": "audio/in"}


@pytest.fixture(scope="module")
def s3_server(models, moto_s3, tmp_path_factory):
    """A separator whose store is s3://audio/cache on moto, with 60 s / 1.5 MB limits and inputs from
    s3://audio/in/ only, all from the environment."""

    s3 = s3_client(moto_s3)
    s3.create_bucket(Bucket="audio")
    log = tmp_path_factory.mktemp("s3sep") / "separator.log"
    with serve(["--store", "s3://audio/cache", "--s3-endpoint", moto_s3], log, env=LIMITS) as (
            _, channel, _m):
        yield channel, s3


def test_s3_input_and_cache(s3_server, shared) -> None:
    """With an s3:// store the song is read from an s3:// URI, stems and manifest land in the bucket, the repeat hits; a missing allowed object is NOT_FOUND, anything outside the allowed location PERMISSION_DENIED."""
    channel, s3 = s3_server
    s3.put_object(Bucket="audio", Key="in/song.ogg", Body=(shared / "audio" / SONG).read_bytes())
    response = stub(channel).Separate(request(uri="s3://audio/in/song.ogg"), timeout=120)
    again = stub(channel).Separate(request(uri="s3://audio/in/song.ogg"), timeout=60)
    for uri, code in (("s3://audio/in/missing.ogg", grpc.StatusCode.NOT_FOUND),
                      ("s3://no-such-bucket/song.ogg", grpc.StatusCode.PERMISSION_DENIED)):
        with pytest.raises(grpc.RpcError) as info:
            stub(channel).Separate(request(uri=uri), timeout=60)
        assert info.value.code() == code, uri
        assert uri in info.value.details()
    assert not response.cache_hit and again.cache_hit
    prefix = f"cache/stems/2stems/{response.audio_sha256}/"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="audio", Prefix=prefix)["Contents"]}
    assert keys == {prefix + "vocals.flac", prefix + "accompaniment.flac", prefix + "manifest.json"}
    assert response.stems[0].uri == f"s3://audio/{prefix}vocals.flac"
    data, sr = sf.read(io.BytesIO(s3.get_object(Bucket="audio", Key=prefix + "vocals.flac")["Body"].read()))
    assert sr == 44100 and data.shape == (response.stems[0].num_samples, 2)



def test_limits_are_invalid_argument(s3_server, shared) -> None:
    """Songs over --max-duration or --max-bytes (set through the env fallbacks) fail with INVALID_ARGUMENT naming the limit."""
    for song, expect in [("Kevin_MacLeod_-_Vibe_Ace.ogg", "61.5 s is longer than the limit 60 s (--max-duration)"),
                         ("Karissa_Hobbs_-_Lets_Go_Fishin.ogg", "more than the limit 1500000 bytes (--max-bytes)")]:
        with pytest.raises(grpc.RpcError) as info:
            stub(s3_server[0]).Separate(request((shared / "audio" / song).read_bytes()), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert expect in info.value.details()


def test_bad_configuration_is_one_line_error(tmp_path) -> None:
    """A missing or unsupported --store, an impossible --max-concurrency or a malformed env value exit with one line, no traceback."""
    cases = [([], "--store (or $AUDIOLIME_STORE) is required"),
             (["--store", "ftp://host/x"], "unsupported store URL"),
             (["--store", tmp_path.as_uri(), "--max-concurrency", "0"], "--max-concurrent must be >= 1")]
    for args, expect in cases:
        proc = subprocess.run([sys.executable, "-m", "audiolime.separator.server", "--port", "0", "--metrics-port", "0",
                               *args], env={**os.environ, "AUDIOLIME_STORE": ""}, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert f"audiolime serve separator: error: {expect}" in proc.stderr
        assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "audiolime.separator.server", "--store", tmp_path.as_uri()],
                          env={**os.environ, "AUDIOLIME_SEPARATOR_MAX_QUEUE": "eight"}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "$AUDIOLIME_SEPARATOR_MAX_QUEUE='eight' is not a valid int" in proc.stderr
