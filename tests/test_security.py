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

from audiolime.procs import free_port, metric_value, scrape
from conftest import ENV, HOST, REPO, json_logs, serving, shared_dir

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
            "--http-port", str(free_port()), "--url-secret", "s3cret", *extra]


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
    assert metric_value(after, "audiolime_grpc_requests_total", method="Explain", code="UNAUTHENTICATED") >= 5


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


def test_tokens_rotate_without_a_restart(pki, tmp_path):
    """Rewriting the token file takes effect on the running server: the removed token is refused,
    the added one accepted; a broken file keeps the previous tokens."""
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
        path.write_text("ci:short\n")  # invalid: the server keeps the tokens it has
        time.sleep(1.5)  # past the file's re-check interval
        assert get_job(ch, bearer(new)) == grpc.StatusCode.NOT_FOUND
        assert any("cannot be used" in r.get("message", "") for r in json_logs(server.log))


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
    values = {"server_cert": pki["server"].cert, "client_key": pki["client"].key, "ca": pki["ca"],
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
    """``ExplainerClient`` reads ``$AUDIOLIME_TOKEN`` and takes ``ca``; ``audiolime explain --server
    --ca`` without a token prints one UNAUTHENTICATED line and exits 2."""
    from audiolime import errors
    from audiolime.client import ExplainerClient

    monkeypatch.setenv("AUDIOLIME_TOKEN", tokens["alice"])
    with ExplainerClient(f"{HOST}:{secured.port}", ca=pki["ca"]) as client:
        with pytest.raises(errors.NotFound, match="NOT_FOUND: no explanation job"):
            client.get("0" * 32)
    monkeypatch.delenv("AUDIOLIME_TOKEN")
    with ExplainerClient(f"{HOST}:{secured.port}", ca=pki["ca"]) as client:
        with pytest.raises(errors.Unauthenticated, match="^UNAUTHENTICATED: missing bearer token"):
            client.get("0" * 32)
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

    from audiolime.explainer.remote import RetryPolicy, make_channel
    from audiolime.procs import terminate
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
