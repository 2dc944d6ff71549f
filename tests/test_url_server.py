"""The local signed-URL server as a web app on another origin uses it: HTTP/1.1 keep-alive, CORS
for listed origins only, preflights for range requests answered (an in-process waitress server)."""

from __future__ import annotations

import http.client

import pytest

from audiolime import errors
from audiolime.explainer.http import make_http_server, parse_origins
from audiolime.store import LocalStore

KEY = "explanations/" + "a" * 32 + "/window.wav"
BODY = b"RIFF" + bytes(range(256)) * 4
APP = "https://app.example.com"


@pytest.fixture
def served(tmp_path):
    def start(origins: str | None):
        httpd = make_http_server("127.0.0.1", 0, cors_origins=parse_origins(origins))
        store = LocalStore(tmp_path / "store", public_url=f"http://127.0.0.1:{httpd.port}", secret=b"k" * 32)
        store.put(KEY, BODY, "audio/wav")
        httpd.store = store
        httpd.start()
        started.append(httpd)
        return httpd.port, store.presign(KEY, 600).split(f":{httpd.port}", 1)[1]

    started: list = []
    yield start
    for httpd in started:
        httpd.stop()


def request(port: int, method: str, path: str, headers: dict | None = None,
            conn: http.client.HTTPConnection | None = None):
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    return resp, resp.read(), conn


def test_listed_origin_gets_cors_on_get_and_a_preflight_for_ranges(served):
    port, path = served(f"{APP}, http://localhost:3000")
    resp, body, conn = request(port, "GET", path, {"Origin": APP, "Range": "bytes=4-9"})
    assert resp.status == 206 and body == BODY[4:10]
    assert resp.version == 11  # HTTP/1.1
    assert resp.getheader("Access-Control-Allow-Origin") == APP and resp.getheader("Vary") == "Origin"
    assert "Content-Range" in resp.getheader("Access-Control-Expose-Headers")
    assert resp.getheader("Access-Control-Allow-Credentials") is None  # the URL's signature authorises
    resp, body, _ = request(port, "HEAD", path, {"Origin": APP}, conn)  # the same connection: keep-alive
    assert resp.status == 200 and body == b"" and resp.getheader("Access-Control-Allow-Origin") == APP
    resp, body, _ = request(port, "OPTIONS", path, {"Origin": APP, "Access-Control-Request-Method": "GET",
                                                    "Access-Control-Request-Headers": "range"})
    assert resp.status == 204 and resp.getheader("Access-Control-Allow-Origin") == APP
    assert resp.getheader("Access-Control-Allow-Methods") == "GET, HEAD"
    assert resp.getheader("Access-Control-Allow-Headers") == "Range"


def test_unlisted_origins_and_no_setting_get_no_cors(served):
    port, path = served(APP)
    resp, body, _ = request(port, "GET", path, {"Origin": "https://evil.example"})
    assert resp.status == 200 and body == BODY  # the URL still works; the browser refuses the page
    assert resp.getheader("Access-Control-Allow-Origin") is None
    resp, _, _ = request(port, "OPTIONS", path, {"Origin": "https://evil.example"})
    assert resp.status == 204 and resp.getheader("Access-Control-Allow-Methods") is None
    port, path = served(None)
    resp, _, _ = request(port, "GET", path, {"Origin": APP})
    assert resp.status == 200 and resp.getheader("Access-Control-Allow-Origin") is None


def test_any_origin_and_bad_signatures_stay_forbidden(served):
    port, path = served("*")
    resp, _, _ = request(port, "GET", path, {"Origin": APP})
    assert resp.getheader("Access-Control-Allow-Origin") == "*"
    resp, body, _ = request(port, "GET", path.replace("sig=", "sig=0"), {"Origin": APP})
    assert resp.status == 403 and b"forbidden" in body
    resp, _, _ = request(port, "POST", path, {"Origin": APP})
    assert resp.status == 405 and "OPTIONS" in resp.getheader("Allow")


@pytest.mark.parametrize("value", ["app.example.com", "ftp://x", "https://a.example/path", "https://a b"])
def test_bad_origins_are_refused_naming_the_flag(value):
    with pytest.raises(errors.InvalidInput) as exc:
        parse_origins(value)
    assert "--cors-origins" in str(exc.value) and exc.value.field == "cors_origins"
