"""Domain errors, free of any transport, and the one table between them and gRPC status codes.

Every error class names its gRPC status code (``code``, the ``grpc.StatusCode`` member name).
Servers map a raised error to that code in one interceptor (``audiolime.server.interceptors``);
clients map a status code back to the class with :func:`from_status`; the CLI prints any of them
as one line and exits 2. Nothing else maps codes.
"""

from __future__ import annotations


class AudiolimeError(Exception):
    """Base class of every error this project raises on purpose."""

    code = "UNKNOWN"


class InvalidInput(AudiolimeError, ValueError):
    """The request or its audio is malformed or out of range (gRPC INVALID_ARGUMENT)."""

    code = "INVALID_ARGUMENT"


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
    """Too many requests are running or queued (gRPC RESOURCE_EXHAUSTED)."""

    code = "RESOURCE_EXHAUSTED"


class Unimplemented(AudiolimeError):
    """The RPC exists in the API but this server does not implement it (gRPC UNIMPLEMENTED)."""

    code = "UNIMPLEMENTED"


class PermissionDenied(AudiolimeError):
    """The caller may not use this resource (gRPC PERMISSION_DENIED)."""

    code = "PERMISSION_DENIED"


class Unauthenticated(AudiolimeError):
    """No valid credentials (gRPC UNAUTHENTICATED)."""

    code = "UNAUTHENTICATED"


class Cancelled(AudiolimeError):
    """The caller cancelled, or the work was stopped on request (gRPC CANCELLED)."""

    code = "CANCELLED"


class DeadlineExceeded(AudiolimeError):
    """The caller's deadline passed before the work finished (gRPC DEADLINE_EXCEEDED)."""

    code = "DEADLINE_EXCEEDED"


class FailedPrecondition(AudiolimeError):
    """The system is not in a state to do this (gRPC FAILED_PRECONDITION)."""

    code = "FAILED_PRECONDITION"


class RemoteError(AudiolimeError):
    """A status code without a more specific class (``code`` is set per instance)."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code


# code name -> the most general class that carries it (subclasses only refine the message)
_BY_CODE: dict[str, type[AudiolimeError]] = {
    cls.code: cls for cls in (InvalidInput, NotFound, Unavailable, ResourceExhausted, Unimplemented,
                              PermissionDenied, Unauthenticated, Cancelled, DeadlineExceeded, FailedPrecondition)
}


def status_name(exc: BaseException) -> str | None:
    """The gRPC status code name of a domain error; None for anything else (an internal error)."""
    return exc.code if isinstance(exc, AudiolimeError) else None


def from_status(code: str, details: str, prefix: bool = True) -> AudiolimeError:
    """The domain error for a status code name (``"INVALID_ARGUMENT"``) and its details.

    With ``prefix`` the message starts with the code name, as the CLI prints remote errors."""
    message = f"{code}: {details}" if prefix else details
    cls = _BY_CODE.get(code)
    return cls(message) if cls is not None else RemoteError(message, code)
