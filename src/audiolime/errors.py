"""Domain errors, free of any transport. Servicers never set status codes themselves: one
interceptor (``audiolime.grpcutil``) maps these classes to gRPC codes, and the CLI maps them to
one-line messages and exit codes."""

from __future__ import annotations


class AudiolimeError(Exception):
    """Base class of every error this project raises on purpose."""


class InvalidInput(AudiolimeError, ValueError):
    """The request or its audio is malformed or out of range (gRPC INVALID_ARGUMENT)."""


class ModelNotFound(AudiolimeError, LookupError):
    """A named model or model version does not exist (gRPC NOT_FOUND)."""


class ModelNotReady(AudiolimeError):
    """The model exists but is not loaded yet (gRPC UNAVAILABLE)."""


class Unavailable(AudiolimeError):
    """A backend could not be reached within the retry budget (gRPC UNAVAILABLE)."""


class ResourceExhausted(AudiolimeError):
    """Too many requests are queued (gRPC RESOURCE_EXHAUSTED)."""


class NotFound(AudiolimeError, LookupError):
    """A job, object or other named resource does not exist (gRPC NOT_FOUND)."""


class Unimplemented(AudiolimeError):
    """The RPC exists in the API but this server does not implement it (gRPC UNIMPLEMENTED)."""
