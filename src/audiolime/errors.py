"""Domain errors, free of any transport, and the one table between them and gRPC status codes.

Every error class names its gRPC status code (``code``, the ``grpc.StatusCode`` member name).
Servers map a raised error to that code in one interceptor (``audiolime.server.interceptors``);
clients map a status code back to the class with :func:`from_status`; the CLI prints any of them
as one line and exits 2. Nothing else maps codes.
"""

from __future__ import annotations

INTERNAL = "INTERNAL"  # the status of everything that is not an AudiolimeError (details only in the log)

SERVER_FAULTS = ("UNKNOWN", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "DATA_LOSS", "UNIMPLEMENTED")
"""The status codes that mean the server (or a backend behind it) failed; every other code is OK or
the caller's mistake (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED from admission, CANCELLED, ...).
The one definition of a failure: the error-ratio alerts and the dashboard's error panel count these
(deploy/helm/audiolime/templates/prometheusrule.yaml, tests/test_alerts.py checks both)."""


class AudiolimeError(Exception):
    """Base class of every error this project raises on purpose."""

    code = "UNKNOWN"


class InvalidInput(AudiolimeError, ValueError):
    """The request or its audio is malformed or out of range (gRPC INVALID_ARGUMENT).

    ``field``: the request field at fault when the raiser knows it (``"audio"``, ``"tags"``); the
    server otherwise takes the message's first word when it names a field of the request. It
    travels as a ``google.rpc.BadRequest`` field violation."""

    code = "INVALID_ARGUMENT"

    def __init__(self, message: str = "", field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(AudiolimeError, LookupError):
    """A job, object or other named resource does not exist (gRPC NOT_FOUND)."""

    code = "NOT_FOUND"


class ModelNotFound(NotFound):
    """A named model or model version does not exist (gRPC NOT_FOUND)."""


class Unavailable(AudiolimeError):
    """A backend could not be reached within the retry budget (gRPC UNAVAILABLE)."""

    code = "UNAVAILABLE"


class ModelNotReady(Unavailable):
    """The model exists but is not loaded yet (gRPC UNAVAILABLE)."""


class ResourceExhausted(AudiolimeError):
    """Too many requests are running or queued (gRPC RESOURCE_EXHAUSTED).

    ``retry_after_s``: when to try again; travels as ``google.rpc.RetryInfo``."""

    code = "RESOURCE_EXHAUSTED"
    DEFAULT_RETRY_AFTER_S = 1.0

    def __init__(self, message: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = self.DEFAULT_RETRY_AFTER_S if retry_after_s is None else retry_after_s


class Unimplemented(AudiolimeError):
    """The RPC exists in the API but this server does not implement it (gRPC UNIMPLEMENTED)."""

    code = "UNIMPLEMENTED"


class PermissionDenied(AudiolimeError):
    """The caller may not use this resource (gRPC PERMISSION_DENIED)."""

    code = "PERMISSION_DENIED"


class ClientNotAllowed(PermissionDenied):
    """mTLS: the client certificate is one the CA signed but not one this server accepts
    (``--allowed-client-names``). A deployment's fault, never the end caller's: it travels as a
    ``google.rpc.ErrorInfo`` with ``reason`` below, so the explainer reports a backend that refuses
    it as UNAVAILABLE (a server fault, alerted on), not as the caller's PERMISSION_DENIED."""

    reason = "CLIENT_NAME_NOT_ALLOWED"


class Unauthenticated(AudiolimeError):
    """No valid credentials (gRPC UNAUTHENTICATED)."""

    code = "UNAUTHENTICATED"


class Cancelled(AudiolimeError):
    """The caller cancelled, or the work was stopped on request (gRPC CANCELLED)."""

    code = "CANCELLED"


class DeadlineExceeded(AudiolimeError):
    """The caller's deadline passed before the work finished (gRPC DEADLINE_EXCEEDED)."""

    code = "DEADLINE_EXCEEDED"


class RemoteError(AudiolimeError):
    """A status code without a more specific class (``code`` is set per instance)."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code


# code name -> the most general class that carries it (subclasses only refine the message)
_CLASSES: tuple[type[AudiolimeError], ...] = (InvalidInput, NotFound, Unavailable, ResourceExhausted, Unimplemented,
                                              PermissionDenied, Unauthenticated, Cancelled, DeadlineExceeded)
_BY_CODE: dict[str, type[AudiolimeError]] = {cls.code: cls for cls in _CLASSES}


def status_name(exc: BaseException) -> str | None:
    """The gRPC status code name of a domain error; None for anything else (an internal error)."""
    return exc.code if isinstance(exc, AudiolimeError) else None


def from_status(code: str, details: str, prefix: bool = True, field: str | None = None,
                retry_after_s: float | None = None) -> AudiolimeError:
    """The domain error for a status code name (``"INVALID_ARGUMENT"``) and its details, with the
    structured details a server sent (``field`` of a BadRequest, ``retry_after_s`` of a RetryInfo).

    With ``prefix`` the message starts with the code name, as the CLI prints remote errors."""
    message = f"{code}: {details}" if prefix else details
    cls = _BY_CODE.get(code)
    if cls is InvalidInput:
        return InvalidInput(message, field=field)
    if cls is ResourceExhausted:
        return ResourceExhausted(message, retry_after_s=retry_after_s)
    return cls(message) if cls is not None else RemoteError(message, code)
