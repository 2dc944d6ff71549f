"""Authentication and TLS on real explainer processes on loopback (no backends needed: every call
here is refused, or answered, before the explainer would reach its separator or tagger).

Certificates come from a throwaway CA made with ``audiolime.certs``; tokens are random.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from audiolime.processes import free_port, metric_value, scrape
from conftest import ENV, HOST, REPO, json_logs, serving, shared_dir

pytestmark = pytest.mark.slow  # real servers, processes or the chart tools

SONG = "admiralbob77_-_Choice_-_Drum-bass.ogg"


# -- material ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two throwaway CAs: ``main`` (server and client certificates) and ``other`` (a stranger)."""
    from audiolime.certs import Authority

    root = tmp_path_factory.mktemp("pki")
    main, other = Authority(root / "main"), Authority(root / "other")
    return {"ca": main.cert, "server": main.issue("server"), "client": main.issue("client"),
            "other_ca": other.cert, "other_client": other.issue("client"), "authority": main, "other": other}


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    alice, bob = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    path.write_text(f"# callers of the explainer\nalice:{alice}\n\n{bob}\n")
    return {"path": path, "alice": alice, "bob": bob}


def explainer_args(tmp: Path, *extra: str) -> list[str]:
    """An explainer whose backends do not exist (nothing here gets that far)."""
    return ["--store", (tmp / "store").as_uri(), "--separator", f"{HOST}:1", "--tagger", f"{HOST}:1",
            "--http-port", str(free_port()), *extra]


def tls_channel(port: int, ca: Path, pair=None) -> grpc.Channel:
    from audiolime.tls import channel_credentials

    creds = channel_credentials(ca, pair.cert, pair.key) if pair else channel_credentials(ca)
    return grpc.secure_channel(f"{HOST}:{port}", creds)


@pytest.fixture(scope="module")
def secured(pki, tokens, tmp_path_factory):
    """An explainer with TLS, bearer tokens, reflection and a plaintext health port."""
    from audiolime.tls import channel_credentials

    tmp = tmp_path_factory.mktemp("secured")
    health_port = free_port()
    args = explainer_args(tmp, "--tls-cert", str(pki["server"].cert), "--tls-key", str(pki["server"].key),
                          "--auth-tokens", str(tokens["path"]), "--reflection", "--health-port", str(health_port))
    with serving("audiolime.explainer.server", args, tmp / "explainer.log",
                 credentials=channel_credentials(pki["ca"])) as server:
        server.health_port = health_port
        yield server


def stub(channel: grpc.Channel):
    from audiolime.v1 import explainer_pb2_grpc

    return explainer_pb2_grpc.ExplainerStub(channel)


def get_job(channel: grpc.Channel, metadata=None, job_id: str = "0" * 32) -> grpc.StatusCode:
    """GetExplanation of an unknown job: NOT_FOUND once past authentication."""
    from audiolime.v1 import explainer_pb2

    try:
        stub(channel).GetExplanation(explainer_pb2.GetExplanationRequest(job_id=job_id), timeout=10,
                                     metadata=metadata)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def bearer(token: str) -> tuple:
    return (("authorization", f"Bearer {token}"),)


def health(channel: grpc.Channel, service: str = "") -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def list_services(channel: grpc.Channel, metadata=None) -> set[str]:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    req = reflection_pb2.ServerReflectionRequest(list_services="")
    (resp,) = list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([req]), timeout=10, metadata=metadata))
    return {s.name for s in resp.list_services_response.service}


# -- tokens --------------------------------------------------------------------------------------------
def test_calls_without_a_valid_token_are_unauthenticated(secured, pki, tokens):
    """Every Explainer RPC without a token, with a wrong token or another scheme is UNAUTHENTICATED
    (counted by reason in /metrics); a listed token, named or bare, gets through to the service."""
    from audiolime.v1 import common_pb2, explainer_pb2

    before = scrape(secured.metrics_port)
    request = explainer_pb2.ExplainRequest(audio=common_pb2.AudioInput(content=b"x", filename="a.ogg"))
    with tls_channel(secured.port, pki["ca"]) as ch:
        s = stub(ch)
        calls = [lambda md: s.Explain(request, timeout=10, metadata=md),
                 lambda md: list(s.ExplainStream(request, timeout=10, metadata=md)),
                 lambda md: s.SubmitExplanation(request, timeout=10, metadata=md),
                 lambda md: s.GetExplanation(explainer_pb2.GetExplanationRequest(job_id="x"), timeout=10, metadata=md)]
        bad = [None, bearer("not-a-token-but-long-enough"), bearer(tokens["alice"] + "x"),
               (("authorization", f"Basic {tokens['alice']}"),), (("authorization", "Bearer"),)]
        for call in calls:
            for md in bad:
                with pytest.raises(grpc.RpcError) as exc:
                    call(md)
                assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED, (md, exc.value.details())
                assert "bearer token" in exc.value.details()
        for token in (tokens["alice"], tokens["bob"]):
            with pytest.raises(grpc.RpcError) as exc:
                s.Explain(request, timeout=10, metadata=bearer(token))
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # the request itself is judged now
            assert get_job(ch, bearer(token)) == grpc.StatusCode.NOT_FOUND
    after = scrape(secured.metrics_port)
    refused = lambda text, reason: metric_value(text, "audiolime_requests_refused_total", reason=reason)  # noqa: E731
    assert refused(after, "missing_token") - refused(before, "missing_token") == 4
    assert refused(after, "invalid_token") - refused(before, "invalid_token") == 16
    assert metric_value(after, "grpc_server_handled_total", grpc_method="Explain", grpc_code="UNAUTHENTICATED") >= 5


def test_unauthenticated_bodies_are_never_read(secured, pki, tokens):
    """16 concurrent 50 MB Explain requests without a token (or with a wrong one): all
    UNAUTHENTICATED, and the explainer's peak RSS grows by less than 50 MB (VmHWM, reset before):
    the token is checked from the metadata before gRPC receives or parses the message (one such
    call used to grow it by 171 MB, 12 by 431 MB). With a token, the same call is judged."""
    from concurrent.futures import ThreadPoolExecutor

    from audiolime.processes import memory, reset_peak
    from audiolime.v1 import common_pb2, explainer_pb2

    body = explainer_pb2.ExplainRequest(model="musicnn-msd", audio=common_pb2.AudioInput(
        content=b"\0" * (50 * 10 ** 6), filename="a.wav")).SerializeToString()
    with tls_channel(secured.port, pki["ca"]) as ch:
        explain = ch.unary_unary("/audiolime.v1.Explainer/Explain")  # bytes as they are: one copy in the client
        assert get_job(ch, bearer(tokens["alice"])) == grpc.StatusCode.NOT_FOUND  # warm: the connection is up
        before, _ = memory(secured.proc.pid)
        reset_peak(secured.proc.pid)

        def call(i: int) -> grpc.StatusCode:
            try:
                explain(body, timeout=60, metadata=None if i % 2 else bearer("x" * 32))
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(call, range(16)))
        _, peak = memory(secured.proc.pid)
        assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 16
        assert peak - before < 50 * 2 ** 20, f"peak RSS grew by {(peak - before) / 2 ** 20:.0f} MiB"
        with pytest.raises(grpc.RpcError) as exc:  # authenticated: received, parsed and judged
            explain(body, timeout=60, metadata=bearer(tokens["alice"]))
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_hostile_request_ids_are_replaced_and_metrics_bind_to_the_host(secured, pki, tokens):
    """A caller's x-request-id of 7 000 characters (or with spaces and markup) is replaced by a
    new id (echoed, logged and propagated instead); a tracing id is kept. /metrics listens on
    --host (127.0.0.1 here), not on every address."""
    from audiolime.v1 import explainer_pb2

    def echoed(request_id: str) -> str:
        with tls_channel(secured.port, pki["ca"]) as ch:
            try:
                stub(ch).GetExplanation(explainer_pb2.GetExplanationRequest(job_id="0" * 32), timeout=10,
                                        metadata=bearer(tokens["alice"]) + (("x-request-id", request_id),))
            except grpc.RpcError as exc:
                return dict(exc.trailing_metadata())["x-request-id"]
        raise AssertionError("expected NOT_FOUND")

    long_id = "r" * 7000
    for bad in (long_id, "two words", "<script>alert(1)</script>"):
        got = echoed(bad)
        assert got != bad and len(got) == 32 and int(got, 16) >= 0
    assert echoed("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == \
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert long_id not in secured.log.read_text()
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.rsplit(":", 1)
            if state == "0A" and int(port, 16) == secured.metrics_port:  # LISTEN
                listening.add(address)
    assert listening == {"0100007F"}, listening  # 127.0.0.1 only


def test_the_caller_is_named_in_the_logs_never_the_token(secured, pki, tokens):
    """An authenticated call logs the caller's name (``alice``, or ``token-<sha256 prefix>`` for a
    bare token) with its request id; no log line contains a token."""
    import hashlib

    with tls_channel(secured.port, pki["ca"]) as ch:
        assert get_job(ch, bearer(tokens["alice"]) + (("x-request-id", "rid-alice"),)) == grpc.StatusCode.NOT_FOUND
        assert get_job(ch, bearer(tokens["bob"]) + (("x-request-id", "rid-bob"),)) == grpc.StatusCode.NOT_FOUND
    bob = "token-" + hashlib.sha256(tokens["bob"].encode()).hexdigest()[:8]
    deadline = time.monotonic() + 30
    while True:
        records = json_logs(secured.log)
        seen = {(r.get("request_id"), r.get("caller")) for r in records if r.get("message") == "authenticated call"}
        if {("rid-alice", "alice"), ("rid-bob", bob)} <= seen or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {("rid-alice", "alice"), ("rid-bob", bob)} <= seen
    text = secured.log.read_text()
    assert tokens["alice"] not in text and tokens["bob"] not in text


def test_health_is_exempt_and_reflection_needs_a_token(secured, pki, tokens):
    """Health answers without a token, on the TLS port and on the plaintext health port (which
    serves nothing else); reflection, when on, is an authenticated call like any other."""
    from grpc_health.v1 import health_pb2

    with tls_channel(secured.port, pki["ca"]) as ch:
        assert health(ch) == health(ch, "audiolime.v1.Explainer") == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as exc:
            list_services(ch)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "audiolime.v1.Explainer" in list_services(ch, bearer(tokens["alice"]))
    with grpc.insecure_channel(f"{HOST}:{secured.health_port}") as plain:
        assert health(plain) == health_pb2.HealthCheckResponse.SERVING
        assert get_job(plain, bearer(tokens["alice"])) == grpc.StatusCode.UNIMPLEMENTED


def test_unauthenticated_streams_and_idle_connections_hold_no_server_thread(secured, pki, tokens):
    """32 Watch streams without a token on the TLS port (and 32 on the health port), 32 idle TCP
    connections to each, and 16 reflection streams that never send a message: an authenticated
    call and health Check still answer (each Watch used to hold one of the 16 handler threads for
    as long as it stayed open, freezing the server while its probes said SERVING). Watch is
    refused at once (UNIMPLEMENTED, poll Check)."""
    import socket
    import threading

    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2_grpc

    idle = [socket.create_connection((HOST, port)) for port in (secured.port, secured.health_port) for _ in range(32)]
    forever = threading.Event()
    with tls_channel(secured.port, pki["ca"]) as attacker, grpc.insecure_channel(
            f"{HOST}:{secured.health_port}") as plain, tls_channel(secured.port, pki["ca"]) as ch:
        watches = [health_pb2_grpc.HealthStub(c).Watch(health_pb2.HealthCheckRequest(), timeout=120)
                   for c in (attacker, plain) for _ in range(32)]

        def silent():  # a request stream that never sends
            forever.wait(120)
            yield from ()

        reflections = [reflection_pb2_grpc.ServerReflectionStub(attacker).ServerReflectionInfo(silent(), timeout=120)
                       for _ in range(16)]
        try:
            for _ in range(3):
                assert get_job(ch, bearer(tokens["alice"])) == grpc.StatusCode.NOT_FOUND
                assert health(ch) == health_pb2.HealthCheckResponse.SERVING
                assert health(plain) == health_pb2.HealthCheckResponse.SERVING
            for watch in watches:
                with pytest.raises(grpc.RpcError) as exc:
                    next(watch)
                assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
                assert "poll Check" in exc.value.details()
            for stream in reflections:
                with pytest.raises(grpc.RpcError) as exc:
                    next(stream)
                assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            forever.set()
            for sock in idle:
                sock.close()


def test_uri_inputs_never_name_the_store_itself(secured, pki, tokens, tmp_path):
    """Without --input-buckets every URI is PERMISSION_DENIED (the secured explainer). With an
    allow-list naming the whole file:// store, other callers' uploads (``inputs/``), jobs, stems and
    results are PERMISSION_DENIED with one message whether they exist or not (no existence
    oracle), before anything is read; the rest of the store is an input like any other."""
    from audiolime.v1 import common_pb2, explainer_pb2

    def explain(s, uri: str, metadata=None) -> grpc.RpcError | None:
        request = explainer_pb2.ExplainRequest(model="musicnn-msd", tags=["rock"],
                                               audio=common_pb2.AudioInput(uri=uri))
        try:
            s.Explain(request, timeout=30, metadata=metadata)
        except grpc.RpcError as exc:
            return exc
        return None

    with tls_channel(secured.port, pki["ca"]) as ch:
        own = (Path(secured.log).parent / "store").as_uri()
        for uri in (own + "/uploads/song.ogg", own + "/inputs/" + "0" * 64, "s3://bucket/song.ogg"):
            exc = explain(stub(ch), uri, bearer(tokens["alice"]))
            assert exc is not None and exc.code() == grpc.StatusCode.PERMISSION_DENIED, uri
    store = tmp_path / "store"
    song = (shared_dir() / "audio" / SONG).read_bytes()
    for key in ("inputs/" + "a" * 64, "jobs/" + "b" * 32 + "/job.json", "stems/2stems/" + "c" * 64 + "/vocals.flac",
                "explanations/" + "d" * 32 + "/window.wav", "claims/" + "b" * 32 + ".000001", "uploads/song.ogg"):
        (store / key).parent.mkdir(parents=True, exist_ok=True)
        (store / key).write_bytes(song)
    args = explainer_args(tmp_path, "--input-buckets", store.as_uri(), "--tagger-retries", "0")
    with serving("audiolime.explainer.server", args, tmp_path / "explainer.log") as server, \
            grpc.insecure_channel(server.target) as ch:
        answers = set()
        for key in ("inputs/" + "a" * 64, "inputs/" + "e" * 64, "jobs/" + "b" * 32 + "/job.json",
                    "jobs/" + "f" * 32 + "/job.json", "stems/2stems/" + "c" * 64 + "/vocals.flac",
                    "explanations/" + "d" * 32 + "/window.wav", "claims/" + "b" * 32 + ".000001", "queue/x"):
            uri = (store / key).as_uri()
            exc = explain(stub(ch), uri)
            assert exc is not None and exc.code() == grpc.StatusCode.PERMISSION_DENIED, key
            answers.add(exc.details().replace(uri, "URI"))
        assert answers == {"audio uri 'URI' is not in an allowed input location (--input-buckets)"}
        exc = explain(stub(ch), (store / "uploads" / "song.ogg").as_uri())  # read and probed; no tagger here
        assert exc is not None and exc.code() == grpc.StatusCode.UNAVAILABLE, exc
        text = scrape(server.metrics_port)
        assert metric_value(text, "audiolime_requests_refused_total", reason="input_location") == 8


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def test_signed_urls_serve_only_results_and_keep_their_secret(tmp_path):
    """The local URL server serves only ``explanations/``: URLs signed with the real key for jobs,
    inputs, stems or claims are 403 (the same answer as a bad signature); the signature covers
    ``key NUL expires`` (the old ``key + expires`` form is refused); the key comes from the
    environment or --url-secret-file and is in no process's argv."""
    import urllib.parse

    from audiolime.store import sign
    from conftest import http_get

    secret = secrets.token_hex(16)
    store = tmp_path / "store"
    for key in ("explanations/" + "a" * 32 + "/window.wav", "jobs/" + "b" * 32 + "/job.json", "inputs/" + "c" * 64,
                "stems/2stems/" + "d" * 64 + "/vocals.flac", "claims/" + "b" * 32 + ".000001"):
        (store / key).parent.mkdir(parents=True, exist_ok=True)
        (store / key).write_bytes(b"RIFF" + key.encode())
    http_port = free_port()
    base = f"http://{HOST}:{http_port}/o/"
    args = ["--store", store.as_uri(), "--separator", f"{HOST}:1", "--tagger", f"{HOST}:1", "--http-port",
            str(http_port)]
    expires = int(time.time()) + 600

    def url(key: str, sig: str | None = None) -> str:
        return f"{base}{urllib.parse.quote(key)}?expires={expires}&sig={sig or sign(secret.encode(), key, expires)}"

    with serving("audiolime.explainer.server", args, tmp_path / "explainer.log",
                 env={"AUDIOLIME_URL_SECRET": secret}) as server:
        result = "explanations/" + "a" * 32 + "/window.wav"
        assert http_get(url(result)) == (200, b"RIFF" + result.encode())
        for key in ("jobs/" + "b" * 32 + "/job.json", "inputs/" + "c" * 64, "stems/2stems/" + "d" * 64 + "/vocals.flac",
                    "claims/" + "b" * 32 + ".000001", "jobs/" + "e" * 32 + "/job.json"):
            assert http_get(url(key)) == (403, b"forbidden: bad or expired signature\n"), key
        import hashlib
        import hmac

        old_form = hmac.new(secret.encode(), f"{result}{expires}".encode(), hashlib.sha256).hexdigest()
        assert http_get(url(result, old_form))[0] == 403
        assert secret not in Path(f"/proc/{server.proc.pid}/cmdline").read_text()
    key_file = tmp_path / "url.key"
    key_file.write_text(secret + "\n")
    with serving("audiolime.explainer.server", [*args, "--url-secret-file", str(key_file)],
                 tmp_path / "explainer-file.log") as server:
        assert http_get(url(result))[0] == 200
    proc = subprocess.run([sys.executable, "-m", "audiolime.explainer.server", "--url-secret", secret, *args],
                          env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--url-secret is not accepted" in proc.stderr and secret not in proc.stderr


def test_slow_clients_cost_no_thread_and_are_closed(tmp_path):
    """100 connections to the URL server that send nothing or half a request line: the explainer's
    thread count does not grow, a real request is still answered, and the server closes every one
    of them after --http-timeout (the standard library's server kept +1 thread per connection, open
    forever). 500 connections: bench/slow_clients.py."""
    import socket

    from conftest import http_get

    http_port = free_port()
    args = ["--store", (tmp_path / "store").as_uri(), "--separator", f"{HOST}:1", "--tagger", f"{HOST}:1",
            "--http-port", str(http_port), "--http-timeout", "2"]
    with serving("audiolime.explainer.server", args, tmp_path / "explainer.log") as server:
        baseline = threads_of(server.proc.pid)
        socks = []
        for i in range(100):
            sock = socket.create_connection((HOST, http_port))
            if i % 2:
                sock.sendall(b"GET /o/explanations/x HTTP/1.1\r\nHost: a")  # never finished
            socks.append(sock)
        assert http_get(f"http://{HOST}:{http_port}/o/jobs/x?expires=1&sig=0", timeout=10)[0] == 403
        assert threads_of(server.proc.pid) <= baseline
        for sock in socks:
            sock.settimeout(30)
            assert sock.recv(1024) == b"", "the server should close an idle connection"  # EOF: closed by the server
            sock.close()
        assert threads_of(server.proc.pid) <= baseline


def test_tokens_rotate_without_a_restart(pki, tmp_path):
    """Rewriting the token file takes effect on the running server: the removed token is refused,
    the added one accepted; a broken file refuses every token (counted in /metrics) until fixed."""
    from audiolime.tls import channel_credentials

    path = tmp_path / "tokens"
    old, new = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    path.write_text(f"ci:{old}\n")
    args = explainer_args(tmp_path, "--tls-cert", str(pki["server"].cert), "--tls-key", str(pki["server"].key),
                          "--auth-tokens", str(path))
    with serving("audiolime.explainer.server", args, tmp_path / "explainer.log",
                 credentials=channel_credentials(pki["ca"])) as server, tls_channel(server.port, pki["ca"]) as ch:
        assert get_job(ch, bearer(old)) == grpc.StatusCode.NOT_FOUND
        assert get_job(ch, bearer(new)) == grpc.StatusCode.UNAUTHENTICATED
        path.write_text(f"ci:{new}\n")
        wait_until(lambda: get_job(ch, bearer(new)) == grpc.StatusCode.NOT_FOUND)
        assert get_job(ch, bearer(old)) == grpc.StatusCode.UNAUTHENTICATED
        path.write_text("ci:short\n")  # invalid: nobody gets in
        wait_until(lambda: get_job(ch, bearer(new)) == grpc.StatusCode.UNAUTHENTICATED)
        assert any("cannot be used" in r.get("message", "") for r in json_logs(server.log))
        text = scrape(server.metrics_port)
        assert metric_value(text, "audiolime_auth_token_file_errors_total") == 1
        assert metric_value(text, "audiolime_auth_tokens") == 0
        path.unlink()  # deleted: still nobody
        path.write_text(f"ci:{new}\n")
        wait_until(lambda: get_job(ch, bearer(new)) == grpc.StatusCode.NOT_FOUND)
        assert metric_value(scrape(server.metrics_port), "audiolime_auth_tokens") == 1


def wait_until(condition, timeout: float = 30.0) -> None:
    """Poll ``condition`` until true (a synchronisation point, not a timing)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.2)


# -- TLS -------------------------------------------------------------------------------------------------
def test_tls_port_refuses_plaintext_and_unknown_servers(secured, pki, tokens):
    """A plaintext client cannot talk to the TLS port, and a client trusting another CA refuses
    the server's certificate (both UNAVAILABLE: no handshake, no call)."""
    with grpc.insecure_channel(f"{HOST}:{secured.port}") as plain:
        assert get_job(plain, bearer(tokens["alice"])) == grpc.StatusCode.UNAVAILABLE
    with tls_channel(secured.port, pki["other_ca"]) as stranger:
        assert get_job(stranger, bearer(tokens["alice"])) == grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_clients_without_a_certificate_of_the_ca(pki, tmp_path):
    """With --tls-client-ca the server refuses clients without a certificate or with one from
    another CA; a certificate of the CA is let in (no token needed: this server has none)."""
    from audiolime.tls import channel_credentials

    args = explainer_args(tmp_path, "--tls-cert", str(pki["server"].cert), "--tls-key", str(pki["server"].key),
                          "--tls-client-ca", str(pki["ca"]))
    creds = channel_credentials(pki["ca"], pki["client"].cert, pki["client"].key)
    with serving("audiolime.explainer.server", args, tmp_path / "explainer.log", credentials=creds) as server:
        with tls_channel(server.port, pki["ca"]) as anonymous:
            assert get_job(anonymous) == grpc.StatusCode.UNAVAILABLE
        with tls_channel(server.port, pki["ca"], pki["other_client"]) as stranger:
            assert get_job(stranger) == grpc.StatusCode.UNAVAILABLE
        with tls_channel(server.port, pki["ca"], pki["client"]) as member:
            assert get_job(member) == grpc.StatusCode.NOT_FOUND


def test_the_separator_accepts_only_the_named_client_certificate(pki, tmp_path):
    """A separator with --tls-client-ca and --allowed-client-names explainer: eight concurrent 50 MB
    Separate calls with another certificate of the same CA are PERMISSION_DENIED naming it, before
    the body is read (peak RSS grows by less than 50 MB), counted as client_name refusals and, in
    the gRPC metrics, as the unary calls they are; its health check answers (exempt); the same call
    with the explainer's certificate is received and judged (INVALID_ARGUMENT: not audio)."""
    from concurrent.futures import ThreadPoolExecutor

    from audiolime.processes import memory, reset_peak
    from audiolime.tls import channel_credentials
    from audiolime.v1 import common_pb2, separator_pb2
    from conftest import model_dir

    explainer = pki["authority"].issue("explainer")
    args = ["--model-dir", str(model_dir()), "--store", (tmp_path / "store").as_uri(),
            "--tls-cert", str(pki["server"].cert), "--tls-key", str(pki["server"].key),
            "--tls-client-ca", str(pki["ca"]), "--allowed-client-names", "explainer"]
    body = separator_pb2.SeparateRequest(audio=common_pb2.AudioInput(
        content=b"\0" * (50 * 10 ** 6), filename="a.wav")).SerializeToString()
    stranger_creds = channel_credentials(pki["ca"], pki["client"].cert, pki["client"].key)  # CN=client, same CA
    with serving("audiolime.separator.server", args, tmp_path / "separator.log",
                 credentials=stranger_creds) as server:  # started = its health check answered the stranger
        before_metrics = scrape(server.metrics_port)
        with tls_channel(server.port, pki["ca"], pki["client"]) as stranger:
            separate = stranger.unary_unary("/audiolime.v1.Separator/Separate")
            rss, _ = memory(server.proc.pid)
            reset_peak(server.proc.pid)

            def call(_: int) -> tuple[grpc.StatusCode, str]:
                try:
                    separate(body, timeout=60)
                except grpc.RpcError as exc:
                    return exc.code(), exc.details()
                return grpc.StatusCode.OK, ""

            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(call, range(8)))
            _, peak = memory(server.proc.pid)
        assert {code for code, _ in answers} == {grpc.StatusCode.PERMISSION_DENIED}, answers
        assert all("'client'" in details and "--allowed-client-names" in details for _, details in answers)
        assert peak - rss < 50 * 2 ** 20, f"peak RSS grew by {(peak - rss) / 2 ** 20:.0f} MiB"
        after = scrape(server.metrics_port)
        refused = lambda text: metric_value(text, "audiolime_requests_refused_total", reason="client_name")  # noqa: E731
        assert refused(after) - refused(before_metrics) == 8
        assert metric_value(after, "grpc_server_handled_total", grpc_method="Separate", grpc_type="unary",
                            grpc_code="PERMISSION_DENIED") == 8
        with tls_channel(server.port, pki["ca"], pki["other_client"]) as other_ca:  # not even a handshake
            with pytest.raises(grpc.RpcError) as exc:
                other_ca.unary_unary("/audiolime.v1.Separator/Separate")(b"", timeout=30)
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        with tls_channel(server.port, pki["ca"], explainer) as ch:
            with pytest.raises(grpc.RpcError) as exc:
                ch.unary_unary("/audiolime.v1.Separator/Separate")(body, timeout=60)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
        refusals = [r for r in json_logs(server.log) if r.get("reason") == "client_name"]
        assert len(refusals) == 8 and all(r["client_name"] == "client" for r in refusals)


def test_client_names_refuse_every_kind_of_call_before_the_token(pki, tokens, tmp_path):
    """An explainer with mTLS, --allowed-client-names and tokens: another certificate of the CA is
    PERMISSION_DENIED on a unary call and a server-streaming one, with a valid token too (the
    certificate is checked first); reflection is refused the same way, health is not; a name the
    certificate carries as a subject alternative name (localhost) lets it in, to its token check."""
    from audiolime.tls import channel_credentials
    from audiolime.v1 import explainer_pb2

    args = explainer_args(tmp_path, "--tls-cert", str(pki["server"].cert), "--tls-key", str(pki["server"].key),
                          "--tls-client-ca", str(pki["ca"]), "--allowed-client-names", "explainer-client,team",
                          "--auth-tokens", str(tokens["path"]), "--reflection")
    creds = channel_credentials(pki["ca"], pki["client"].cert, pki["client"].key)
    with serving("audiolime.explainer.server", args, tmp_path / "explainer.log", credentials=creds) as server:
        with tls_channel(server.port, pki["ca"], pki["client"]) as ch:
            assert get_job(ch, bearer(tokens["alice"])) == grpc.StatusCode.PERMISSION_DENIED
            streamed = stub(ch).ExplainStream(explainer_pb2.ExplainRequest(model="musicnn-msd"), timeout=30,
                                              metadata=bearer(tokens["alice"]))
            with pytest.raises(grpc.RpcError) as exc:
                list(streamed)
            assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.RpcError) as exc:
                list_services(ch, bearer(tokens["alice"]))
            assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert health(ch) == 1  # SERVING
        text = scrape(server.metrics_port)
        assert metric_value(text, "grpc_server_handled_total", grpc_method="ExplainStream", grpc_type="server_stream",
                            grpc_code="PERMISSION_DENIED") == 1
    args[args.index("explainer-client,team")] = "localhost"  # every certificate of pki carries it: only for the test
    with serving("audiolime.explainer.server", args, tmp_path / "explainer2.log", credentials=creds) as server:
        with tls_channel(server.port, pki["ca"], pki["client"]) as ch:
            assert get_job(ch) == grpc.StatusCode.UNAUTHENTICATED
            assert get_job(ch, bearer(tokens["alice"])) == grpc.StatusCode.NOT_FOUND


def test_the_explainer_reports_a_backend_refusing_its_certificate_as_unavailable(pki, tmp_path):
    """A backend that refuses the explainer's client certificate by name (a deployment's mistake,
    e.g. a renamed certificate) is UNAVAILABLE to the explainer's caller (a server fault, which the
    error-ratio alerts count), never the caller's PERMISSION_DENIED; a PERMISSION_DENIED of the
    backend's own (an input URI) still passes through as the caller's. Real gRPC with TLS, the
    servers' interceptors, and the explainer's separator client."""
    from audiolime import errors
    from audiolime.explainer.remote import RemoteSeparator, RetryPolicy
    from audiolime.inputs import AudioSource
    from audiolime.server import runtime
    from audiolime.store import open_store
    from audiolime.tls import channel_credentials
    from audiolime.v1 import separator_pb2_grpc

    class Separator(separator_pb2_grpc.SeparatorServicer):
        def Separate(self, request, context):  # noqa: N802 - gRPC API
            raise errors.PermissionDenied("audio URI outside --input-buckets")

    explainer = pki["authority"].issue("explainer-client")
    security = runtime.Security(pki["server"].cert, pki["server"].key, pki["ca"],
                                allowed_client_names=("explainer-client",))
    service = runtime.Service("audiolime.v1.Separator",
                              lambda server: separator_pb2_grpc.add_SeparatorServicer_to_server(Separator(), server))
    running = runtime.start([service], HOST, 0, None, max_workers=4, security=security)
    store = open_store((tmp_path / "store").as_uri())
    audio = AudioSource(uri="s3://elsewhere/song.ogg")
    try:
        cases = ((pki["client"], errors.Unavailable, "the client certificate ('client') is not one this server accepts"),
                 (explainer, errors.PermissionDenied, "audio URI outside --input-buckets"))
        for pair, expected, message in cases:
            with grpc.secure_channel(f"{HOST}:{running.port}", channel_credentials(pki["ca"], pair.cert, pair.key)) \
                    as channel:
                with pytest.raises(errors.AudiolimeError) as exc:
                    RemoteSeparator(channel, store, RetryPolicy(timeout_s=10, retries=0)).separate(audio, "2stems")
            assert type(exc.value) is expected and message in str(exc.value), (type(exc.value), str(exc.value))
    finally:
        running.server.stop(0)


def test_certificates_rotate_without_a_restart(pki, tmp_path):
    """Replacing the certificate and key files is picked up for new connections: clients of the
    new CA get in, clients that trust only the old CA no longer do."""
    from audiolime.certs import Authority
    from audiolime.tls import channel_credentials

    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(pki["server"].cert, cert)
    shutil.copy(pki["server"].key, key)
    args = explainer_args(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    with serving("audiolime.explainer.server", args, tmp_path / "explainer.log",
                 credentials=channel_credentials(pki["ca"])) as server:
        with tls_channel(server.port, pki["ca"]) as ch:
            assert get_job(ch) == grpc.StatusCode.NOT_FOUND
        renewed = Authority(tmp_path / "renewed").issue("server")
        shutil.copy(renewed.key, key)
        shutil.copy(renewed.cert, cert)

        def new_ca_works() -> bool:
            with tls_channel(server.port, tmp_path / "renewed" / "ca.pem") as fresh:
                return get_job(fresh) == grpc.StatusCode.NOT_FOUND

        wait_until(new_ca_works)
        with tls_channel(server.port, pki["ca"]) as stale:
            assert get_job(stale) == grpc.StatusCode.UNAVAILABLE
        assert any(r.get("message") == "TLS certificate reloaded" for r in json_logs(server.log))


def test_reflection_is_off_by_default(tmp_path):
    """Without --reflection the server does not describe itself (UNIMPLEMENTED), health still answers."""
    from grpc_health.v1 import health_pb2

    with serving("audiolime.explainer.server", explainer_args(tmp_path), tmp_path / "explainer.log") as server, \
            grpc.insecure_channel(server.target) as ch:
        with pytest.raises(grpc.RpcError) as exc:
            list_services(ch)
        assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert health(ch) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("extra,message", [
    (["--tls-cert", "{server_cert}"], "--tls-cert and --tls-key go together"),
    (["--tls-cert", "{server_cert}", "--tls-key", "{client_key}"], "the certificate does not match the private key"),
    (["--tls-client-ca", "{ca}"], "--tls-client-ca (mTLS) needs --tls-cert and --tls-key"),
    (["--tls-cert", "{server_cert}", "--tls-key", "{server_key}", "--allowed-client-names", "explainer"],
     "--allowed-client-names needs --tls-client-ca (mTLS)"),
    (["--tls-cert", "{missing}", "--tls-key", "{client_key}"], "No such file"),
    (["--auth-tokens", "{short_tokens}"], "a token must be at least 16 characters"),
    (["--auth-tokens", "{empty_tokens}"], "holds no token"),
    (["--tls-client-cert", "{server_cert}"], "--tls-client-cert/--tls-client-key need --tls-ca"),
    (["--input-buckets", "../x"], "is not a bucket or bucket/prefix"),
    (["--max-tags", "0"], "limit max_tags must be a positive number"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_security_configuration_exits_with_one_line(pki, tmp_path, extra, message):
    """Unusable TLS files, token files, allow-lists or limits stop the explainer at start with one
    line naming the problem (exit 2, no traceback)."""
    (tmp_path / "short").write_text("ci:short\n")
    (tmp_path / "empty").write_text("# nothing\n")
    values = {"server_cert": pki["server"].cert, "server_key": pki["server"].key, "client_key": pki["client"].key,
              "ca": pki["ca"],
              "missing": tmp_path / "missing.pem", "short_tokens": tmp_path / "short", "empty_tokens": tmp_path / "empty"}
    argv = [a.format(**values) for a in extra]
    proc = subprocess.run([sys.executable, "-m", "audiolime.explainer.server", "--port", "0", "--metrics-port", "0",
                           *explainer_args(tmp_path, *argv)], env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert len(lines) == 1 and message in lines[0]["message"], proc.stderr
    assert "Traceback" not in proc.stderr


# -- clients ------------------------------------------------------------------------------------------
def test_client_and_cli_take_the_token_and_the_ca(secured, pki, tokens, monkeypatch):
    """``ExplainerClient`` reads ``$AUDIOLIME_TOKEN`` and takes ``ca``; every call carries the token
    (get, cancel and submit get past authentication to the service's own answer); without one each
    is UNAUTHENTICATED; ``audiolime explain --server --ca`` without a token prints one
    UNAUTHENTICATED line and exits 2."""
    from audiolime import errors
    from audiolime.client import ExplainerClient
    from audiolime.v1 import explainer_pb2

    bad = explainer_pb2.ExplainRequest(model="musicnn-msd", top_k=-1)  # no audio: INVALID_ARGUMENT once authenticated
    monkeypatch.setenv("AUDIOLIME_TOKEN", tokens["alice"])
    with ExplainerClient(f"{HOST}:{secured.port}", ca=pki["ca"]) as client:
        with pytest.raises(errors.NotFound, match="NOT_FOUND: no explanation job"):
            client.get("0" * 32)
        with pytest.raises(errors.NotFound, match="NOT_FOUND: no explanation job"):
            client.cancel("0" * 32)
        with pytest.raises(errors.InvalidInput, match="^INVALID_ARGUMENT: top_k must be >= 1"):
            client.submit(bad)
    monkeypatch.delenv("AUDIOLIME_TOKEN")
    with ExplainerClient(f"{HOST}:{secured.port}", ca=pki["ca"]) as client:
        for call in (lambda: client.get("0" * 32), lambda: client.cancel("0" * 32), lambda: client.submit(bad)):
            with pytest.raises(errors.Unauthenticated, match="^UNAUTHENTICATED: missing bearer token"):
                call()
    env = {k: v for k, v in ENV.items() if k != "AUDIOLIME_TOKEN"}
    cli = subprocess.run([str(REPO / ".venv" / "bin" / "audiolime"), "explain", "--server", f"{HOST}:{secured.port}",
                          "--ca", str(pki["ca"]), str(shared_dir() / "audio" / SONG)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2
    assert cli.stderr.startswith("audiolime: error: UNAUTHENTICATED: missing bearer token")
    assert len(cli.stderr.strip().splitlines()) == 1


def test_tls_channels_reconnect_after_a_backend_restart(pki, tmp_path):
    """The explainer's TLS channel (make_channel + RetryPolicy, presenting a client certificate to
    an mTLS server) recovers when the server behind it is killed and started again on its port."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from audiolime.channels import make_channel
    from audiolime.explainer.remote import RetryPolicy
    from audiolime.processes import terminate
    from audiolime.tls import channel_credentials
    from conftest import start_server

    creds = channel_credentials(pki["ca"], pki["client"].cert, pki["client"].key)
    args = explainer_args(tmp_path, "--tls-cert", str(pki["server"].cert), "--tls-key", str(pki["server"].key),
                          "--tls-client-ca", str(pki["ca"]))
    backend = start_server("audiolime.explainer.server", args, tmp_path / "backend.log", credentials=creds)
    channel = make_channel(backend.target, creds)
    check = health_pb2_grpc.HealthStub(channel).Check
    policy = RetryPolicy(timeout_s=5, retries=40, backoff_s=0.25, backoff_cap_s=1.0)
    try:
        assert policy.call(check, health_pb2.HealthCheckRequest(), "health").status == 1
        backend.proc.kill()
        backend.proc.wait()
        with pytest.raises(grpc.RpcError) as exc:
            check(health_pb2.HealthCheckRequest(), timeout=5)
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        backend = start_server("audiolime.explainer.server", args, tmp_path / "backend.log", credentials=creds,
                               port=backend.port)
        assert policy.call(check, health_pb2.HealthCheckRequest(), "health").status == 1
    finally:
        channel.close()
        terminate(backend.proc)
