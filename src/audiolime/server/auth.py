"""Bearer-token authentication: the token file and the one server interceptor that checks it.

Token file (``--auth-tokens FILE``, e.g. a mounted Kubernetes Secret): one token per line,
optionally ``name:token``; blank lines and ``#`` comments are ignored. A bare token's caller
name is ``token-`` plus the first 8 hex digits of its SHA-256 (never the token itself). The file
is re-read when it changes (checked at most once a second), so tokens rotate without a restart:
add the new one, move clients over, remove the old one.

Callers send ``authorization: Bearer <token>`` metadata. Health checks are exempt; everything
else (reflection included) without a valid token is UNAUTHENTICATED. The check hashes the
presented token and compares it with every known digest in constant time. The caller's name
goes into the request context (:func:`audiolime.server.context.current_caller`, the JSON logs).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_interceptor import ServerInterceptor

from audiolime import errors
from audiolime.server import context as callctx
from audiolime.server import metrics

log = logging.getLogger(__name__)

MIN_TOKEN_CHARS = 16
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(text: str, where: str = "token file") -> list[tuple[str, bytes]]:
    """``[(caller name, sha256 of the token)]`` from the file's text; ``InvalidInput`` if malformed."""
    entries: list[tuple[str, bytes]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        if not sep:
            name, token = "", line
        name, token = name.strip(), token.strip()
        if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
            raise InvalidTokenFile(f"{where} line {number}: a token must be at least {MIN_TOKEN_CHARS} characters "
                                   f"without spaces")
        entries.append((name or f"token-{hashlib.sha256(token.encode()).hexdigest()[:8]}", _digest(token)))
    if not entries:
        raise InvalidTokenFile(f"{where} holds no token")
    return entries


class InvalidTokenFile(errors.InvalidInput):
    """The token file cannot be used (the server refuses to start; a reload keeps the old tokens)."""


class TokenFile:
    """The tokens of ``path``, re-read when the file changes."""

    def __init__(self, path: Path | str, recheck_s: float = 1.0) -> None:
        self.path = Path(path)
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._stamp = self._mtime()
        self._checked = time.monotonic()
        self._entries = self._load()

    def _mtime(self) -> tuple | None:
        try:
            st = os.stat(self.path)
            return st.st_mtime_ns, st.st_size, st.st_ino
        except OSError:
            return None

    def _load(self) -> list[tuple[str, bytes]]:
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise InvalidTokenFile(f"--auth-tokens {self.path}: {exc.strerror or exc}") from None
        return parse_tokens(text, f"--auth-tokens {self.path}")

    def _refresh(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._checked < self.recheck_s:
                return
            self._checked = now
            stamp = self._mtime()
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                self._entries = self._load()
            except InvalidTokenFile as exc:
                log.error("token file changed but cannot be used; keeping the previous tokens",
                          extra={"error": str(exc)})
                return
        log.info("tokens reloaded", extra={"tokens": len(self._entries)})

    def caller(self, token: str) -> str | None:
        """The caller name of ``token``, or None; every known token is compared (constant time)."""
        self._refresh()
        digest = _digest(token)
        found = None
        for name, known in self._entries:
            if hmac.compare_digest(digest, known):
                found = name
        return found


class AuthInterceptor(ServerInterceptor):
    """UNAUTHENTICATED without a valid bearer token (health checks exempt); sets the caller."""

    def __init__(self, tokens: TokenFile) -> None:
        self.tokens = tokens

    def intercept(self, method: Callable, request_or_iterator: Any, context: grpc.ServicerContext,
                  method_name: str) -> Any:
        if method_name.startswith(EXEMPT_PREFIXES):
            return method(request_or_iterator, context)
        value = ""
        for key, val in context.invocation_metadata() or ():
            if key == "authorization":
                value = val if isinstance(val, str) else ""
                break
        scheme, _, token = value.strip().partition(" ")
        if not value:
            self._refuse("missing_token", method_name, context, "missing bearer token "
                         "(send metadata 'authorization: Bearer <token>')")
        name = self.tokens.caller(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if name is None:
            self._refuse("invalid_token", method_name, context, "invalid bearer token")
        reset = callctx.set_caller(name)
        log.info("authenticated call", extra={"method": method_name})
        try:
            result = method(request_or_iterator, context)
        except BaseException:
            callctx.reset_caller(reset)
            raise
        if isinstance(result, Iterator):
            return self._stream(result, reset)
        callctx.reset_caller(reset)
        return result

    @staticmethod
    def _stream(responses: Iterator, reset) -> Iterator:
        try:
            yield from responses
        finally:
            try:
                callctx.reset_caller(reset)
            except ValueError:  # finished in another context
                pass

    @staticmethod
    def _refuse(reason: str, method_name: str, context: grpc.ServicerContext, message: str) -> None:
        metrics.REFUSED.labels(reason).inc()
        log.warning("call refused", extra={"reason": reason, "method": method_name, "peer": context.peer()})
        raise errors.Unauthenticated(message)
