"""The HTTP server that serves the local object store's signed URLs (``file://`` stores only;
with S3 the URLs are S3's own presigned URLs). Single byte ranges are served (206), as S3 does:
a browser seeks in audio (the listening report plays a component as a time range of its stem)
only when the server answers range requests."""

from __future__ import annotations

import logging
import mimetypes
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

from audiolime import errors
from audiolime.store import LocalStore

log = logging.getLogger(__name__)


class SignedURLServer(ThreadingHTTPServer):
    """Serves ``self.store`` (set after binding: the store's public URL needs the bound port)."""

    daemon_threads = True
    store: LocalStore | None = None


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


def make_http_server(host: str, port: int, store: LocalStore | None = None) -> SignedURLServer:
    """``GET /o/<key>?expires=..&sig=..``: 403 on a bad or expired signature, 404 when missing,
    206 for a satisfiable single ``Range``, 416 for an unsatisfiable one."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "audiolime-explainer"

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            self._serve(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(body=False)

        def _serve(self, body: bool) -> None:
            url = urlparse(self.path)
            if not url.path.startswith("/o/"):
                return self._reply(404, b"not found\n", "text/plain", body)
            key = unquote(url.path[3:])
            store = self.server.store
            q = parse_qs(url.query)
            try:
                ok = store.verify(key, q.get("expires", [""])[0], q.get("sig", [""])[0])
            except errors.InvalidInput:
                ok = False
            if not ok:
                return self._reply(403, b"forbidden: bad or expired signature\n", "text/plain", body)
            try:
                data = store.get(key)
            except errors.NotFound:
                return self._reply(404, b"not found\n", "text/plain", body)
            ctype = mimetypes.guess_type(key)[0] or "application/octet-stream"
            if ctype.startswith("text/"):
                ctype += "; charset=utf-8"  # the listening report (explanation.html) is UTF-8
            if self.headers.get("Range"):
                try:
                    span = byte_range(self.headers["Range"], len(data))
                except ValueError:  # not a single byte range: the whole object
                    return self._reply(200, data, ctype, body)
                if span is None:
                    return self._reply(416, b"", ctype, body, {"Content-Range": f"bytes */{len(data)}"})
                first, last = span
                return self._reply(206, data[first:last + 1], ctype, body,
                                   {"Content-Range": f"bytes {first}-{last}/{len(data)}"})
            self._reply(200, data, ctype, body)

        def _reply(self, status: int, data: bytes, ctype: str, body: bool, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Cache-Control", "private, max-age=60")
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_message(self, fmt: str, *args) -> None:
            log.debug("http " + fmt, *args)

    httpd = SignedURLServer((host, port), Handler)
    httpd.store = store
    return httpd
