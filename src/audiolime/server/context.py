"""Per-call context that travels with the work: the request id, the caller's deadline and the
caller's identity (the authenticated name, "" when authentication is off).

Both live in contextvars. The interceptors set them when a call arrives; code that hands work to
other threads copies the context (``contextvars.copy_context().run``), so a tagger call made from
a worker thread still carries the caller's request id and respects the caller's deadline.
"""

from __future__ import annotations

import contextvars
import time
import uuid

REQUEST_ID_HEADER = "x-request-id"
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)
_caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")


def current_request_id() -> str:
    return _request_id.get()


def set_request_id(value: str | None) -> contextvars.Token:
    return _request_id.set(value or uuid.uuid4().hex)


def reset_request_id(token: contextvars.Token) -> None:
    _request_id.reset(token)


def set_deadline(seconds_from_now: float | None) -> contextvars.Token:
    """The caller's deadline (None: none), as a monotonic time."""
    return _deadline.set(None if seconds_from_now is None else time.monotonic() + seconds_from_now)


def reset_deadline(token: contextvars.Token) -> None:
    _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left before the caller's deadline (None: no deadline)."""
    d = _deadline.get()
    return None if d is None else d - time.monotonic()


def current_caller() -> str:
    """The authenticated caller's name ("" when the server does not authenticate)."""
    return _caller.get()


def set_caller(name: str) -> contextvars.Token:
    return _caller.set(name)


def reset_caller(token: contextvars.Token) -> None:
    _caller.reset(token)
