"""Per-call context that travels with the work: the request id, the caller's deadline and the
caller's identity (the authenticated name, "" when authentication is off).

Both live in contextvars. The interceptors set them when a call arrives; code that hands work to
other threads copies the context (``contextvars.copy_context().run``), so a tagger call made from
a worker thread still carries the caller's request id and respects the caller's deadline.
"""

from __future__ import annotations

import contextvars
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

REQUEST_ID_HEADER = "x-request-id"


@dataclass
class CallRecord:
    """Filled in while one RPC runs, read by the access log when it ends (the inner interceptors'
    contextvars are reset by then): the authenticated caller."""

    caller: str = ""


_call: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar("call", default=None)
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)
_caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")
_active: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar("active", default=None)


def current_request_id() -> str:
    return _request_id.get()


MAX_REQUEST_ID_CHARS = 128
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:/+=-]{{1,{MAX_REQUEST_ID_CHARS}}}")


def set_request_id(value: str | None) -> contextvars.Token:
    """The caller's ``x-request-id`` when it is at most 128 characters of ``[A-Za-z0-9._:/+=-]``
    (what tracing systems send); anything else is replaced by a new id, so a hostile id is never
    echoed, logged or propagated to the backends."""
    ok = isinstance(value, str) and _REQUEST_ID.fullmatch(value) is not None
    return _request_id.set(value if ok else uuid.uuid4().hex)  # type: ignore[arg-type]


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
    record = _call.get()
    if record is not None:
        record.caller = name
    return _caller.set(name)


def set_call_record(record: CallRecord) -> None:
    """The record of the RPC this thread now serves (set by the observing interceptor at the start
    of every call, replacing the previous call's on the same handler thread)."""
    _call.set(record)


def reset_caller(token: contextvars.Token) -> None:
    _caller.reset(token)


def set_active(is_active: Callable[[], bool] | None) -> contextvars.Token:
    """How to tell whether the caller is still there (gRPC's ``context.is_active``)."""
    return _active.set(is_active)


def reset_active(token: contextvars.Token) -> None:
    _active.reset(token)


def caller_active() -> bool:
    """False once the caller cancelled or went away (True when unknown)."""
    check = _active.get()
    return True if check is None else bool(check())


def current_active() -> Callable[[], bool] | None:
    """The caller's liveness check (None: unknown), for work that outlives this thread's view."""
    return _active.get()
