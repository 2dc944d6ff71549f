"""The HTTP server that serves the local object store's signed URLs (``file://`` stores only;
with S3 the URLs are S3's own presigned URLs)."""

from __future__ import annotations

import logging
import mimetypes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

from audiolime import errors
from audiolime.store import LocalStore

log = logging.getLogger(__name__)


class SignedURLServer(ThreadingHTTPServer):
    """Serves ``self.store`` (set after binding: the store's public URL needs the bound port)."""

    daemon_threads = True
    store: LocalStore | None = None


def make_http_server(host: str, port: int, store: LocalStore | None = None) -> SignedURLServer:
    """``GET /o/<key>?expires=..&sig=..``: 403 on a bad or expired signature, 404 when missing."""

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
            self._reply(200, data, ctype, body)

        def _reply(self, status: int, data: bytes, ctype: str, body: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "private, max-age=60")
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_message(self, fmt: str, *args) -> None:
            log.debug("http " + fmt, *args)

    httpd = SignedURLServer((host, port), Handler)
    httpd.store = store
    return httpd
