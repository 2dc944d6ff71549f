"""The secured stack under hostile input: ``audiolime up --tls --auth-tokens FILE`` (three real
processes on loopback, TLS on every port, mTLS between services, bearer tokens on the explainer),
with small limits from the environment (4 MB, 30 s, 1 tag, 200 window-seconds: N <= 66; a real
explanation then costs ~150 tagger windows with its faithfulness checks, so the fuzzer's real
explanations stay a small share of the suite's time even where musicnn costs 80 ms a window).

* A hypothesis fuzzer sends generated requests: random and mutated real recordings (byte flips,
  truncations, splices, patched FLAC headers with extreme rates, channel counts and lengths),
  random bytes, raw unparsable messages, oversized messages, URIs, random field values and
  tokens, over all four RPCs. Every answer must be OK or one of the caller's-fault codes; the
  processes must live, stay SERVING, and the explainer's peak RSS must stay under its budget.
  ``--fuzz-examples`` sets the count (bench/fuzz_stack.py runs 20,000); ``--fuzz-report`` writes
  the counts and peak RSS as JSON.
* Decoding bombs (an hour of FLAC in ~600 KB; extreme headers) are refused with INVALID_ARGUMENT
  by the explainer and the separator while their peak RSS grows by less than 50 MB.
"""

from __future__ import annotations

import collections
import json
import re
import secrets
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiolime.processes import memory, metric_value, reset_peak, scrape
from conftest import ENV, HOST, REPO, Stack, audiolime_up, excerpt, flac_header, json_logs, many_channels_wav

pytestmark = pytest.mark.slow

MB = 1 << 20
LIMITS = {"AUDIOLIME_MAX_BYTES": str(4 * 10 ** 6), "AUDIOLIME_MAX_DURATION": "30", "AUDIOLIME_MAX_TAGS": "1",
          "AUDIOLIME_MAX_WINDOW_SECONDS": "200"}
ALLOWED = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "PERMISSION_DENIED", "UNAUTHENTICATED"}
RSS_BUDGET = 1024 * MB  # half the chart's 2 GiB limit of the explainer
BOMB_GROWTH = 50 * MB
SONGS = ["admiralbob77_-_Choice_-_Drum-bass.ogg", "Kevin_MacLeod_-_Vibe_Ace.ogg", "Karissa_Hobbs_-_Lets_Go_Fishin.ogg"]
TAGS = ["rock", "female vocalists", "guitar", "electronic", "Rock", "female vocalist", "", " ", "x" * 300]


class SecureStack:
    """The running ``audiolime up --tls --auth-tokens`` and what it takes to talk to it."""

    def __init__(self, up: Stack, tokens: dict[str, str]) -> None:
        from audiolime.tls import channel_credentials

        self.up, self.tokens, self.log, self.store = up, tokens, up.log, up.store
        self.ca = Path(re.search(r"CA (\S+\.pem)", up.lines[0]).group(1))
        # The backends accept only the explainer's client certificate: the tests call them as the explainer.
        self.client = (self.ca.parent / "explainer-client.pem", self.ca.parent / "explainer-client.key")
        self.tls = channel_credentials(self.ca)
        self.mtls = channel_credentials(self.ca, *self.client)
        self.other = channel_credentials(self.ca, self.ca.parent / "up.pem", self.ca.parent / "up.key")  # `up`'s own
        self.server_cert = channel_credentials(self.ca, self.ca.parent / "explainer.pem",  # serves only
                                               self.ca.parent / "explainer.key")
        self.ports = {"separator": up.separator, "explainer": up.explainer, "tagger": up.tagger}
        self.metrics = up.metrics
        self.pids = {name: up.pid(name) for name in self.ports}

    def channel(self, name: str, credentials=None) -> grpc.Channel:
        creds = credentials or (self.tls if name == "explainer" else self.mtls)
        return grpc.secure_channel(f"{HOST}:{self.ports[name]}", creds,
                                   options=[("grpc.max_send_message_length", 64 * MB)])


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared, models) -> SecureStack:
    tmp = tmp_path_factory.mktemp("secure-up")
    tokens = {"alice": secrets.token_urlsafe(24), "bob": secrets.token_urlsafe(24)}
    (tmp / "tokens").write_text("".join(f"{k}:{v}\n" for k, v in tokens.items()))
    with audiolime_up(tmp, "--tls", "--auth-tokens", str(tmp / "tokens"), env=LIMITS) as up:
        yield SecureStack(up, tokens)


@pytest.fixture(scope="module")
def clips(shared) -> dict[str, bytes]:
    """3.5 s excerpts of real recordings as OGG, FLAC and 16-bit WAV (generated, never committed)."""
    out = {}
    for i, name in enumerate(SONGS):
        for fmt, subtype in (("OGG", None), ("FLAC", "PCM_16"), ("WAV", "PCM_16")):
            out[f"{i}.{fmt.lower()}"] = excerpt(shared / "audio" / name, 3.5, 10.0 + i, fmt, subtype)
    return out


def explain_request(content: bytes | None = None, uri: str | None = None, filename: str = "clip.flac", **fields):
    from audiolime.v1 import common_pb2, explainer_pb2

    audio = common_pb2.AudioInput(uri=uri, filename=filename) if uri is not None else \
        common_pb2.AudioInput(content=content, filename=filename)
    base = dict(model="musicnn-msd", num_samples=13, segments=6, top_k=3)
    base.update(fields)
    return explainer_pb2.ExplainRequest(audio=audio, **base)


def bearer(token: str) -> tuple:
    return (("authorization", f"Bearer {token}"),)


def record(pytestconfig, key: str, value) -> None:
    """Add ``value`` under ``key`` to the --fuzz-report JSON file (when one is asked for)."""
    path = pytestconfig.getoption("--fuzz-report")
    if path:
        data = json.loads(Path(path).read_text()) if Path(path).exists() else {}
        data[key] = value
        Path(path).write_text(json.dumps(data, indent=2))


# -- the secured stack ---------------------------------------------------------------------------
def test_up_secures_every_port(stack):
    """``up --tls --auth-tokens`` says so when it starts; every gRPC port refuses plaintext; the
    backends refuse a TLS client without a client certificate (mTLS) or with the explainer's server
    certificate (no client usage: no handshake), answer the explainer's client certificate, and
    refuse another client certificate of the same CA (``up``'s own) with PERMISSION_DENIED before
    reading the request (its health check aside); the explainer needs a token but its health check
    does not."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    assert stack.up.lines[0].startswith("security: TLS on every gRPC port, mTLS between services, CA ")
    assert "bearer tokens from" in stack.up.lines[0]
    check = lambda ch: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status  # noqa: E731
    for name, port in stack.ports.items():
        with grpc.insecure_channel(f"{HOST}:{port}") as plain, pytest.raises(grpc.RpcError) as exc:
            check(plain)
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE, name
        with stack.channel(name) as ch:
            assert check(ch) == health_pb2.HealthCheckResponse.SERVING
    for name in ("separator", "tagger"):
        with stack.channel(name, stack.tls) as anonymous, pytest.raises(grpc.RpcError) as exc:
            check(anonymous)
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE, name
        with stack.channel(name, stack.server_cert) as serving_only, pytest.raises(grpc.RpcError) as exc:
            check(serving_only)
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE, name
        with stack.channel(name, stack.other) as stranger:
            assert check(stranger) == health_pb2.HealthCheckResponse.SERVING  # health is exempt
    from audiolime.explainer.remote import PREDICT
    from audiolime.tfs import tfs_pb2
    from audiolime.v1 import common_pb2, separator_pb2, separator_pb2_grpc

    predict = tfs_pb2.PredictRequest()
    predict.model_spec.name = "no-such-model"
    calls = {"separator": lambda ch: separator_pb2_grpc.SeparatorStub(ch).Separate(separator_pb2.SeparateRequest(
                 audio=common_pb2.AudioInput(content=b"not audio", filename="x.wav")), timeout=30),
             "tagger": lambda ch: ch.unary_unary(PREDICT, request_serializer=tfs_pb2.PredictRequest.SerializeToString,
                                                 response_deserializer=tfs_pb2.PredictResponse.FromString)(
                 predict, timeout=30)}
    judged = {"separator": grpc.StatusCode.INVALID_ARGUMENT, "tagger": grpc.StatusCode.NOT_FOUND}
    for name, call in calls.items():
        before = metric_value(scrape(stack.metrics[name]), "audiolime_requests_refused_total", reason="client_name")
        with stack.channel(name, stack.other) as stranger, pytest.raises(grpc.RpcError) as exc:
            call(stranger)
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED, (name, exc.value.details())
        assert "'up'" in exc.value.details() and "--allowed-client-names" in exc.value.details()
        after = metric_value(scrape(stack.metrics[name]), "audiolime_requests_refused_total", reason="client_name")
        assert after - before == 1, name
        with stack.channel(name) as explainer, pytest.raises(grpc.RpcError) as exc:  # the explainer's: judged
            call(explainer)
        assert exc.value.code() == judged[name], (name, exc.value.details())
    from audiolime.v1 import explainer_pb2, explainer_pb2_grpc

    with stack.channel("explainer") as ch, pytest.raises(grpc.RpcError) as exc:
        explainer_pb2_grpc.ExplainerStub(ch).GetExplanation(explainer_pb2.GetExplanationRequest(job_id="x"),
                                                            timeout=10)
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_cli_explains_through_the_secured_stack(stack, clips, tmp_path):
    """``AUDIOLIME_TOKEN=... audiolime explain --server --ca`` explains a real excerpt end to end
    (explainer -> mTLS -> separator and tagger); the explainer logs the caller's name."""
    song = tmp_path / "clip.flac"
    song.write_bytes(clips["0.flac"])
    out = subprocess.run([str(REPO / ".venv" / "bin" / "audiolime"), "explain", "--server",
                          f"{HOST}:{stack.ports['explainer']}", "--ca", str(stack.ca), str(song),
                          "--num-samples", "64", "--json"], env={**ENV, "AUDIOLIME_TOKEN": stack.tokens["bob"]},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert doc["num_samples"] == 64 and len(doc["targets"]) == 1 and len(doc["targets"][0]["components"]) == 12
    published = [r for r in json_logs(stack.log) if r.get("message") == "explanation published"]
    assert any(r.get("caller") == "bob" for r in published)


# -- decoding bombs --------------------------------------------------------------------------------------
def test_decoding_bombs_are_refused_without_memory_growth(stack, decoding_bomb, clips, pytestconfig):
    """An hour of FLAC (~600 KB, 1.27 GB decoded), a FLAC header claiming 655350 Hz, a 64-channel WAV and
    hours are INVALID_ARGUMENT naming the limit, from the explainer and from the separator; the
    peak RSS of each grows by less than 50 MB (the old decoder needed 5 GB for the first). The
    time to the answer is recorded (--fuzz-report), not asserted."""
    from audiolime.v1 import common_pb2, explainer_pb2_grpc, separator_pb2, separator_pb2_grpc

    small = clips["0.flac"]
    bombs = {"hour.flac": (decoding_bomb, "3600.0 s is longer than the limit 30 s"),
             "rate.flac": (flac_header(small, rate=655350), "sample rate 655350 Hz is outside the limits"),
             "channels.wav": (many_channels_wav(), "64 channels; the limit is 8"),
             "hours.flac": (flac_header(small, frames=44100 * 3600 * 5), "18000.0 s is longer than the limit 30 s")}
    with stack.channel("explainer") as ech, stack.channel("separator") as sch:
        explain = explainer_pb2_grpc.ExplainerStub(ech).Explain
        separate = separator_pb2_grpc.SeparatorStub(sch).Separate
        calls = {"explainer": lambda name, data: explain(explain_request(data, filename=name), timeout=60,
                                                         metadata=bearer(stack.tokens["alice"])),
                 "separator": lambda name, data: separate(separator_pb2.SeparateRequest(
                     audio=common_pb2.AudioInput(content=data, filename=name)), timeout=60)}
        seconds: dict = {}
        growth: dict = {}
        for service, call in calls.items():
            pid = stack.pids[service]
            rss, _ = memory(pid)
            reset_peak(pid)
            for name, (data, message) in bombs.items():
                for _ in range(3):
                    t = time.perf_counter()
                    with pytest.raises(grpc.RpcError) as exc:
                        call(name, data)
                    took = time.perf_counter() - t
                    seconds[f"{service}/{name}"] = min(seconds.get(f"{service}/{name}", took), took)
                    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (service, name, exc.value.details())
                    assert exc.value.details().startswith(name) and message in exc.value.details(), exc.value.details()
            _, peak = memory(pid)
            growth[service] = peak - rss
            assert peak - rss < BOMB_GROWTH, (service, (peak - rss) / MB)
    record(pytestconfig, "bombs", {"refused_in_s": {k: round(v, 4) for k, v in seconds.items()},
                                   "peak_rss_growth_mb": {k: round(v / MB, 1) for k, v in growth.items()}})


# -- the fuzzer ----------------------------------------------------------------------------------------------
def mutations(clips: dict[str, bytes]):
    """Real excerpts, changed the ways broken or hostile files are: flipped bytes, cut, spliced,
    repeated chunks, inserted junk, patched FLAC headers."""
    names = sorted(clips)

    @st.composite
    def mutate(draw) -> tuple[str, bytes]:
        name = draw(st.sampled_from(names))
        data = bytearray(clips[name])
        kind = draw(st.sampled_from(["flip", "flip", "truncate", "splice", "repeat", "insert", "header", "header"]))
        if kind == "flip":
            for _ in range(draw(st.integers(1, 8))):
                at = draw(st.integers(0, len(data) - 1))
                data[at] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            data = data[:draw(st.integers(0, len(data)))]
        elif kind == "splice":
            other = clips[draw(st.sampled_from(names))]
            data = data[:draw(st.integers(0, len(data)))] + other[draw(st.integers(0, len(other))):]
        elif kind == "repeat":
            a = draw(st.integers(0, len(data) - 1))
            data = data[:a] + data[a:a + draw(st.integers(1, 4096))] * draw(st.integers(2, 50)) + data[a:]
        elif kind == "insert":
            at = draw(st.integers(0, len(data)))
            data = data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]
        else:
            flac = clips[draw(st.sampled_from([n for n in names if n.endswith(".flac")]))]
            data = flac_header(flac, rate=draw(st.sampled_from([None, 0, 1, 7999, 8000, 96000, 192001, 655350,
                                                                (1 << 20) - 1])),
                               channels=draw(st.sampled_from([None, 1, 3, 8])),
                               frames=draw(st.sampled_from([None, 0, 1, 4410, 4500, 44100, 44100 * 31, (1 << 36) - 1])))
        return f"{name}:{kind}", bytes(data)

    return mutate()


def cases(clips: dict[str, bytes], store: Path):
    """One generated call: (rpc, request or raw bytes, who is calling, label)."""
    from audiolime.v1 import explainer_pb2

    audio = st.one_of(
        mutations(clips), mutations(clips), mutations(clips),
        st.sampled_from(sorted(clips)).map(lambda n: (f"{n}:pristine", clips[n])),
        st.binary(max_size=4096).map(lambda b: ("random", b)),
        st.sampled_from(sorted(clips)).flatmap(
            lambda n: st.integers(0, 200).map(lambda k: (f"{n}:header-only", clips[n][:k]))),
        st.just(("oversized", b"\0" * (6 * 10 ** 6))),
        st.just(("over-max-bytes", b"fLaC" + b"\0" * (4 * 10 ** 6))),
    )
    uri = st.sampled_from([
        "s3://private/secret.ogg", "s3://nowhere/x.flac", "s3://a/../b", "s3://bucket", "s3:///key", "file:///etc/passwd",
        (store / "explanations" / "0" / "window.wav").as_uri(), (store / ".." / "x.ogg").as_uri(),
        "http://127.0.0.1:1/x.ogg", "", "x" * 3000, "\u00e9\u00e8://\u2603",
    ])
    fields = st.fixed_dictionaries({}, optional={
        "model": st.sampled_from(["musicnn-msd", "musicnn-msd", "", "fcn-msd", "nope", "m" * 400]),
        "model_version": st.sampled_from([0, 1, 2, -1, 2 ** 62]),
        "tags": st.lists(st.sampled_from(TAGS), max_size=6),
        "top_n": st.integers(-3, 60),
        "window_start_s": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 5)),
        "window_duration_s": st.sampled_from([0.0, 3.0, 29.0, -1.0, float("nan"), float("inf"), 1e300]),
        "segments": st.one_of(st.integers(-2, 12), st.sampled_from([60, 61, 580, 100000, 2 ** 31 - 1])),
        "separator_model": st.sampled_from(["", "2stems", "2stems", "4stems", "5stems", "9stems", "../2stems"]),
        "num_samples": st.one_of(st.integers(-5, 130), st.sampled_from([2048, 65536, 65537, 2 ** 31 - 1])),
        "seed": st.integers(-(2 ** 63), 2 ** 63 - 1),
        "top_k": st.integers(-2, 30),
        "url_ttl_s": st.sampled_from([0, 1, 3600, 7 * 24 * 3600, 7 * 24 * 3600 + 1, -1, 2 ** 31 - 1]),
        "time_budget_s": st.sampled_from([0.0, 0.5, 5.0, 3600.0, 3600.5, -1.0, float("nan"), float("inf")]),
    })
    token = st.sampled_from(["alice"] * 16 + ["bob"] * 2 + ["none", "wrong", "basic", "empty"])

    @st.composite
    def case(draw):
        rpc = draw(st.sampled_from(["Explain"] * 6 + ["ExplainStream"] * 2 + ["Submit", "Get", "raw"]))
        metadata = draw(token)
        if rpc == "raw":
            return rpc, draw(st.binary(max_size=512)), metadata, "raw"
        if rpc == "Get":
            job = draw(st.one_of(st.just(""), st.text(max_size=100), st.integers(0, 10 ** 6).map(str)))
            return rpc, explainer_pb2.GetExplanationRequest(job_id=job), metadata, "get"
        if draw(st.integers(0, 9)) == 0:
            label, req = "uri", explain_request(uri=draw(uri), **draw(fields))
        else:
            label, data = draw(audio)
            req = explain_request(data, filename=draw(st.sampled_from(["clip.ogg", "", "a" * 300])), **draw(fields))
        return rpc, req, metadata, label

    return case()


def send(stack: SecureStack, stub, raw_call, case) -> str:
    """Send one case; the status code name (of a submitted job: how the job ended)."""
    from audiolime.v1 import explainer_pb2

    rpc, request, who, _ = case
    metadata = bearer(stack.tokens[who]) if who in stack.tokens else {
        "none": (), "wrong": bearer("w" * 32), "basic": (("authorization", "Basic YWxpY2U6cHc="),),
        "empty": (("authorization", ""),)}[who]
    try:
        if rpc == "Explain":
            stub.Explain(request, timeout=300, metadata=metadata)
        elif rpc == "ExplainStream":
            for _ in stub.ExplainStream(request, timeout=300, metadata=metadata):
                pass
        elif rpc == "Submit":
            job = stub.SubmitExplanation(request, timeout=60, metadata=metadata).job_id
            deadline = time.monotonic() + 600
            while True:  # the job's own outcome counts (the table forgets old jobs, so wait now)
                state = stub.GetExplanation(explainer_pb2.GetExplanationRequest(job_id=job), timeout=60,
                                            metadata=metadata)
                if state.state in (explainer_pb2.ExplanationJob.SUCCEEDED, explainer_pb2.ExplanationJob.FAILED):
                    return state.error_code or "OK"
                assert time.monotonic() < deadline, f"job {job} never finished"
                time.sleep(0.1)
        elif rpc == "Get":
            stub.GetExplanation(request, timeout=60, metadata=metadata)
        else:
            raw_call(request, timeout=60, metadata=metadata)
    except grpc.RpcError as exc:
        return exc.code().name
    return "OK"


def test_fuzzed_requests_get_only_caller_fault_statuses(stack, clips, pytestconfig):
    """Thousands of generated requests (--fuzz-examples): every answer is OK or a caller's-fault
    code (never INTERNAL, UNKNOWN, UNAVAILABLE...; a submitted job counts as how it ended), every
    code of the allowed set is reached, the three processes live and stay SERVING, and the
    explainer's peak RSS stays under 1 GiB."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from audiolime.v1 import explainer_pb2_grpc

    examples = pytestconfig.getoption("--fuzz-examples")
    counts: collections.Counter = collections.Counter()
    labels: collections.Counter = collections.Counter()
    bad: list = []
    start = time.monotonic()
    with stack.channel("explainer") as channel:
        stub = explainer_pb2_grpc.ExplainerStub(channel)
        raw_call = channel.unary_unary("/audiolime.v1.Explainer/Explain", request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)

        @settings(max_examples=examples, deadline=None, database=None, derandomize=True, print_blob=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=cases(clips, stack.store))
        def fuzz(case) -> None:
            code = send(stack, stub, raw_call, case)
            counts[code] += 1
            if code == "OK" and case[0] != "Get":
                labels[case[3].split(":")[-1]] += 1  # a real explanation, by kind of audio
            if code not in ALLOWED:
                bad.append((code, case[0], case[3]))
            assert code in ALLOWED, (code, case[0], case[3])

        fuzz()
    elapsed = time.monotonic() - start
    total = sum(counts.values())
    assert total >= min(examples, 2000) and not bad, (total, bad)
    assert set(counts) == ALLOWED, counts  # the fuzzer reached every kind of answer, real explanations too
    for name, pid in stack.pids.items():
        assert stack.up.proc.poll() is None and Path(f"/proc/{pid}").exists(), f"{name} died"
        with stack.channel(name) as ch:
            assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
                health_pb2.HealthCheckResponse.SERVING
    peaks = {name: memory(pid)[1] for name, pid in stack.pids.items()}
    assert peaks["explainer"] < RSS_BUDGET, peaks["explainer"] / MB
    text = scrape(stack.metrics["explainer"])
    report = {"requests": total, "seconds": round(elapsed, 1), "codes": dict(counts),
              "explanations": sum(labels.values()), "explained_audio": dict(labels), "peak_rss_mb": {k: round(v / MB) for k, v in peaks.items()},
              "refused": {r: metric_value(text, "audiolime_requests_refused_total", reason=r)
                          for r in ("missing_token", "invalid_token", "input_location")}}
    record(pytestconfig, "fuzz", report)
    assert report["refused"]["input_location"] >= 1 and report["refused"]["invalid_token"] >= 1
    assert report["explanations"] >= 1
