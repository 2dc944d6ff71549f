"""Structured error details (``google.rpc``, via grpcio-status) in both directions, shared by the
servers' error interceptor and the clients: ``BadRequest`` field violations on INVALID_ARGUMENT,
``RetryInfo`` on RESOURCE_EXHAUSTED, ``ErrorInfo`` (domain ``audiolime``) for errors with a
``reason`` (:class:`audiolime.errors.ClientNotAllowed`). The plain status code and message stay as they were, so a
client that ignores details sees no difference."""

from __future__ import annotations

import collections
import math
import re

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from audiolime import errors

_FIRST_WORD = re.compile(r"[a-z_][a-z0-9_]*")
DOMAIN = "audiolime"  # google.rpc.ErrorInfo.domain of our reasons


def field_of(exc: errors.InvalidInput, request: object) -> str | None:
    """The request field an InvalidInput is about: the one it names, else its message's first word
    when that is a field of the request message."""
    if exc.field:
        return exc.field
    match = _FIRST_WORD.match(str(exc))
    fields = getattr(getattr(request, "DESCRIPTOR", None), "fields_by_name", {})
    return match.group(0) if match and match.group(0) in fields else None


class _Status(collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status):
    """A status to abort with (``context.abort_with_status`` replaces the call's trailing metadata
    by the status's: what else must reach the caller, e.g. the request id, goes in here too)."""


def status_of(code: grpc.StatusCode, message: str, exc: BaseException, request: object = None,
              trailing: tuple[tuple[str, str], ...] = ()) -> grpc.Status:
    """A status with the error's ``google.rpc`` details (none for other errors) and ``trailing``
    metadata besides them."""
    details = []
    if isinstance(exc, errors.InvalidInput):
        name = field_of(exc, request)
        if name:
            bad = error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=name, description=message)])
            details.append(_pack(bad))
    elif isinstance(exc, errors.ResourceExhausted):
        seconds = max(0.0, exc.retry_after_s)
        delay = duration_pb2.Duration(seconds=int(seconds), nanos=int(round((seconds - int(seconds)) * 1e9)))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    reason = getattr(exc, "reason", None)
    if reason:
        details.append(_pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)))
    status = rpc_status.to_status(status_pb2.Status(code=getattr(code_pb2, code.name), message=message,
                                                    details=details))
    return _Status(status.code, status.details, (*trailing, *status.trailing_metadata))


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def details_of(exc: grpc.RpcError) -> tuple[str | None, float | None]:
    """(the first BadRequest field violation's field, the RetryInfo delay in seconds) of a failed call."""
    if not callable(getattr(exc, "trailing_metadata", None)):  # an RpcError that is not a call
        return None, None
    try:
        status = rpc_status.from_call(exc)
    except ValueError:  # a malformed or mismatching grpc-status-details-bin
        return None, None
    field, retry = None, None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            field = field or (bad.field_violations[0].field if bad.field_violations else None)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            retry = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return field, retry if retry is None or math.isfinite(retry) else None


def reason_of(exc: grpc.RpcError) -> str | None:
    """The ``reason`` of an ``ErrorInfo`` of ours in a failed call's details, if any."""
    if not callable(getattr(exc, "trailing_metadata", None)):
        return None
    try:
        status = rpc_status.from_call(exc)
    except ValueError:
        return None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == DOMAIN:
                return info.reason
    return None


def from_rpc_error(exc: grpc.RpcError, details: str | None = None, prefix: bool = True) -> errors.AudiolimeError:
    """The domain error of a failed call, with the server's structured details."""
    if exc.code() == grpc.StatusCode.PERMISSION_DENIED and reason_of(exc) == errors.ClientNotAllowed.reason:
        text = exc.details() or "" if details is None else details
        return errors.ClientNotAllowed(f"PERMISSION_DENIED: {text}" if prefix else text)
    field, retry = details_of(exc)
    return errors.from_status(exc.code().name, exc.details() or "" if details is None else details, prefix=prefix,
                              field=field, retry_after_s=retry)
