"""Background loops of an explainer replica (the job queue scan, the expiry sweep) that surface
their failures.

An outage of the object store is expected (S3 unreachable for a while): it is logged and the
step is tried again at the next interval. Anything else is a bug: it is logged with its
traceback, kept in :attr:`Loop.failure` (which the job API raises to its callers, so a test
fails at once with the traceback instead of timing out), handed to ``on_failure`` (the server
reports NOT_SERVING, so the replica is restarted) and re-raised, which ends the loop's thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from audiolime.store import is_outage

log = logging.getLogger(__name__)


class Loop:
    """``step()`` every ``interval_s`` seconds (sooner after :meth:`wake`) in a daemon thread."""

    def __init__(self, name: str, step: Callable[[], None], interval_s: float,
                 on_failure: Callable[[BaseException], None] | None = None) -> None:
        self.name = name
        self._step = step
        self.interval_s = interval_s
        self.on_failure = on_failure
        self.failure: BaseException | None = None
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Loop:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def check(self) -> None:
        """Raise the loop's failure, if it failed."""
        if self.failure is not None:
            raise RuntimeError(f"background loop {self.name!r} failed") from self.failure

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._step()
            except Exception as exc:
                if not is_outage(exc):
                    log.exception("background loop failed: a bug", extra={"loop": self.name})
                    if self.on_failure is not None:
                        self.on_failure(exc)
                    self.failure = exc
                    raise
                log.warning("object store unavailable; retrying", extra={"loop": self.name, "error": str(exc)})
            self._wake.wait(self.interval_s)
            self._wake.clear()
