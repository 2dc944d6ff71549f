"""The HTTP servers of the services (``/metrics``, the explainer's signed URLs) on waitress.

waitress reads and writes every connection from one asynchronous loop and runs requests on a
fixed pool of ``threads``: an idle or slow connection costs a file descriptor, never a thread;
connections with no request for ``timeout_s`` are closed (checked every ``timeout_s / 2``); past
``connection_limit`` open connections it stops accepting until some close. The standard library's
``ThreadingHTTPServer`` (which ``prometheus_client.start_http_server`` uses) started one thread per
connection with no timeout: 500 idle connections held 500 threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from waitress import wasyncore
from waitress.server import BaseWSGIServer, create_server

log = logging.getLogger(__name__)

WSGIApp = Callable[..., Any]


def listen_host(host: str) -> str:
    """The address to bind for a gRPC ``--host`` (``[::]`` and ``0.0.0.0``: every IPv4 address)."""
    return "0.0.0.0" if host in ("[::]", "::", "0.0.0.0", "") else host.strip("[]")


class HTTPServer:
    """One waitress server in a daemon thread; ``port`` is the bound port (0 picks a free one)."""

    def __init__(self, app: WSGIApp, host: str, port: int, name: str, threads: int = 4, timeout_s: int = 10,
                 connection_limit: int = 100) -> None:
        self.name = name
        self.threads = threads
        self.timeout_s = timeout_s
        self.connection_limit = connection_limit
        server = create_server(app, host=listen_host(host), port=port, threads=threads,
                                     channel_timeout=timeout_s, cleanup_interval=max(1, timeout_s // 2),
                                     connection_limit=connection_limit, asyncore_use_poll=True,
                                     expose_tracebacks=False, ident=name)
        assert isinstance(server, BaseWSGIServer)  # one address: one socket
        self._server = server
        self.port = int(server.getsockname()[1])
        self._thread = threading.Thread(target=self._server.run, name=name, daemon=True)

    def start(self) -> HTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection; the request threads end."""
        self._server.task_dispatcher.shutdown(timeout=1)
        wasyncore.close_all(getattr(self._server, "_map", None))
        self._thread.join(5)


def metrics_server(host: str, port: int) -> HTTPServer:
    """Prometheus ``/metrics`` of this process on ``host:port`` (the gRPC ``--host``), two threads."""
    from prometheus_client import make_wsgi_app

    return HTTPServer(make_wsgi_app(), host, port, "metrics-http", threads=2).start()
