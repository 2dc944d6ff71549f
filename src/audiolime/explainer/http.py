"""The HTTP server that serves the local object store's signed URLs (``file://`` stores only;
with S3 the URLs are S3's own presigned URLs). Single byte ranges are served (206), as S3 does:
a browser seeks in audio (the listening report plays a component as a time range of its stem)
only when the server answers range requests.

Only results are served: a key outside ``explanations/`` is 403 like a bad signature, whatever
the signature says (the store's jobs, inputs and stems are never downloadable). The server is
waitress (:mod:`audiolime.server.wsgi`): a fixed pool of request threads, idle connections closed
after a timeout, a bound on open connections; a slow or idle client costs a file descriptor for
at most the timeout, never a thread. Waitress speaks HTTP/1.1 (keep-alive, chunking).

CORS: a web app on another origin may fetch the audio when its origin is listed
(``--cors-origins``, ``*`` for any): ``GET``/``HEAD`` answers carry ``Access-Control-Allow-Origin``
(and expose ``Content-Range``/``Content-Length``/``Accept-Ranges`` for seeking), and a preflight
``OPTIONS`` is answered 204 with the allowed method and the ``Range`` header. No credentials are
ever allowed (the signature in the URL is the authorisation). Unlisted origins get no CORS headers,
so the browser refuses them; without the setting no CORS header is sent at all.
"""

from __future__ import annotations

import logging
import mimetypes
import re
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs, unquote

from audiolime import errors
from audiolime.explainer.jobstore import EXPLANATIONS
from audiolime.server.wsgi import HTTPServer
from audiolime.store import LocalStore

log = logging.getLogger(__name__)

SERVED_PREFIX = f"{EXPLANATIONS}/"
THREADS = 4  # request threads: reading a result from local disk and queueing it for the socket
TIMEOUT_S = 10  # a connection without a request for this long is closed
CONNECTION_LIMIT = 512  # open connections (each a file descriptor); beyond, new ones wait in the listen backlog
FORBIDDEN = b"forbidden: bad or expired signature\n"
CORS_MAX_AGE_S = 600  # how long a browser may cache a preflight answer


def parse_origins(value: str | None) -> frozenset[str]:
    """``--cors-origins``: comma-separated ``scheme://host[:port]`` origins or ``*``; empty: none."""
    out = set()
    for item in (value or "").split(","):
        origin = item.strip().rstrip("/")
        if not origin:
            continue
        if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin):
            raise errors.InvalidInput(f"--cors-origins: {origin!r} is not an origin (scheme://host[:port]) or *",
                                      field="cors_origins")
        out.add(origin)
    return frozenset(out)


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte of a single ``Range: bytes=...`` within ``size`` bytes; None when it
    cannot be satisfied. Raises ValueError for what is not a single byte range (then: the whole body)."""
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not m or not (m.group(1) or m.group(2)):
        raise ValueError(header)
    if not m.group(1):  # the last N bytes
        n = int(m.group(2))
        return (max(size - n, 0), size - 1) if n > 0 and size > 0 else None
    first = int(m.group(1))
    last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    return (first, last) if first <= last else None


class SignedURLApp:
    """The WSGI application: ``GET``/``HEAD /o/<key>?expires=..&sig=..``. 403 on a bad or expired
    signature or a key outside ``explanations/``, 404 when missing, 206 for a satisfiable single
    ``Range``, 416 for an unsatisfiable one, 405 for other methods. ``store`` is set once the port
    is bound (its public URL needs the port)."""

    def __init__(self, cors_origins: frozenset[str] = frozenset()) -> None:
        self.store: LocalStore | None = None
        self.cors_origins = cors_origins

    def _cors(self, environ: dict) -> dict:
        origin = environ.get("HTTP_ORIGIN", "")
        if not origin or not self.cors_origins:
            return {}
        if "*" in self.cors_origins:
            return {"Access-Control-Allow-Origin": "*"}
        if origin in self.cors_origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {"Vary": "Origin"}

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        cors = self._cors(environ)
        if method == "OPTIONS":  # a CORS preflight (a Range header makes a request non-simple)
            headers = {"Allow": "GET, HEAD, OPTIONS", **cors}
            if "Access-Control-Allow-Origin" in cors:
                headers.update({"Access-Control-Allow-Methods": "GET, HEAD",
                                "Access-Control-Allow-Headers": "Range",
                                "Access-Control-Max-Age": str(CORS_MAX_AGE_S)})
            return self._reply(start_response, "204 No Content", b"", "text/plain", "HEAD", headers)
        if method not in ("GET", "HEAD"):
            return self._reply(start_response, "405 Method Not Allowed", b"", "text/plain", method,
                               {"Allow": "GET, HEAD, OPTIONS", **cors})
        status, data, ctype, headers = self._serve(environ)
        if "Access-Control-Allow-Origin" in cors:
            cors["Access-Control-Expose-Headers"] = "Content-Range, Content-Length, Accept-Ranges"
        return self._reply(start_response, status, data, ctype, method, {**headers, **cors})

    def _serve(self, environ: dict) -> tuple[str, bytes, str, dict]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/o/") or self.store is None:
            return "404 Not Found", b"not found\n", "text/plain", {}
        key = unquote(path[3:])
        q = parse_qs(environ.get("QUERY_STRING", ""))
        try:
            ok = key.startswith(SERVED_PREFIX) and self.store.verify(key, q.get("expires", [""])[0],
                                                                   q.get("sig", [""])[0])
        except errors.InvalidInput:
            ok = False
        if not ok:
            return "403 Forbidden", FORBIDDEN, "text/plain", {}
        try:
            data = self.store.get(key)
        except errors.NotFound:
            return "404 Not Found", b"not found\n", "text/plain", {}
        ctype = mimetypes.guess_type(key)[0] or "application/octet-stream"
        if ctype.startswith("text/"):
            ctype += "; charset=utf-8"  # the listening report (explanation.html) is UTF-8
        if environ.get("HTTP_RANGE"):
            try:
                span = byte_range(environ["HTTP_RANGE"], len(data))
            except ValueError:  # not a single byte range: the whole object
                return "200 OK", data, ctype, {}
            if span is None:
                return "416 Range Not Satisfiable", b"", ctype, {"Content-Range": f"bytes */{len(data)}"}
            first, last = span
            return "206 Partial Content", data[first:last + 1], ctype, {
                "Content-Range": f"bytes {first}-{last}/{len(data)}"}
        return "200 OK", data, ctype, {}

    @staticmethod
    def _reply(start_response: Callable, status: str, data: bytes, ctype: str, method: str,
               headers: dict) -> Iterable[bytes]:
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(data))),
                                ("Accept-Ranges", "bytes"), ("Cache-Control", "private, max-age=60"),
                                *headers.items()])
        return [b""] if method == "HEAD" else [data]


class SignedURLServer(HTTPServer):
    """The app on waitress; set ``store`` once the port is known, then ``start()``."""

    def __init__(self, host: str, port: int, threads: int = THREADS, timeout_s: int = TIMEOUT_S,
                 connection_limit: int = CONNECTION_LIMIT, cors_origins: frozenset[str] = frozenset()) -> None:
        self.app = SignedURLApp(cors_origins)
        super().__init__(self.app, host, port, "signed-url-http", threads=threads, timeout_s=timeout_s,
                         connection_limit=connection_limit)

    @property
    def store(self) -> LocalStore | None:
        return self.app.store

    @store.setter
    def store(self, value: LocalStore | None) -> None:
        self.app.store = value


def make_http_server(host: str, port: int, timeout_s: int = TIMEOUT_S,
                     cors_origins: frozenset[str] = frozenset()) -> SignedURLServer:
    """The signed-URL server bound to ``host:port`` (0: a free port), not yet started."""
    return SignedURLServer(host, port, timeout_s=timeout_s, cors_origins=cors_origins)
