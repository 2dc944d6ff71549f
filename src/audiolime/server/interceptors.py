"""Server interceptors: request ids, Prometheus metrics, and the one place where domain
errors become gRPC status codes (internal errors are logged and hidden behind a generic message)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from grpc_interceptor import ServerInterceptor
from grpc_interceptor.exception_to_status import ExceptionToStatusInterceptor

from audiolime import errors
from audiolime.server import logs, metrics

log = logging.getLogger(__name__)

STATUS_OF: list[tuple[type[Exception], grpc.StatusCode]] = [
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.ModelNotReady, grpc.StatusCode.UNAVAILABLE),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
]


def status_of(exc: BaseException) -> grpc.StatusCode | None:
    for cls, code in STATUS_OF:
        if isinstance(exc, cls):
            return code
    return None


def _split(method_name: str) -> tuple[str, str]:
    service, _, method = method_name.lstrip("/").rpartition("/")
    return service, method


class RequestIdInterceptor(ServerInterceptor):
    """Takes ``x-request-id`` from the caller (or makes one), exposes it to logs, echoes it back."""

    def intercept(self, method: Callable, request_or_iterator: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        incoming = dict(context.invocation_metadata()).get(logs.REQUEST_ID_HEADER)
        token = logs.set_request_id(incoming)
        context.set_trailing_metadata(((logs.REQUEST_ID_HEADER, logs.current_request_id()),))
        try:
            result = method(request_or_iterator, context)
        except BaseException:
            logs.reset_request_id(token)
            raise
        if isinstance(result, Iterator):
            return self._stream(result, token)
        logs.reset_request_id(token)
        return result

    @staticmethod
    def _stream(responses: Iterator, token) -> Iterator:
        try:
            yield from responses
        finally:
            try:
                logs.reset_request_id(token)
            except ValueError:  # generator finished in another context
                pass


class DomainErrorInterceptor(ExceptionToStatusInterceptor):
    """Maps ``audiolime.errors`` to status codes; anything else is INTERNAL with a generic message."""

    def handle_exception(self, ex: Exception, request_or_iterator: Any, context: grpc.ServicerContext,
                         method_name: str):
        code = status_of(ex)
        if code is not None:
            context.abort(code, str(ex))
        if isinstance(ex, grpc.RpcError) or context.code() not in (None, grpc.StatusCode.OK):
            raise ex  # already aborted with a status
        log.exception("internal error in %s", method_name)
        context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {logs.current_request_id()})")


class MetricsInterceptor(ServerInterceptor):
    """Requests, latency (by method and final status code) and in-flight gauge per method."""

    def intercept(self, method: Callable, request_or_iterator: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        service, name = _split(method_name)
        gauge = metrics.GRPC_IN_FLIGHT.labels(service, name)
        gauge.inc()
        start = time.perf_counter()
        try:
            result = method(request_or_iterator, context)
        except BaseException:
            self._done(service, name, context, start, gauge, failed=True)
            raise
        if isinstance(result, Iterator):
            return self._stream(result, service, name, context, start, gauge)
        self._done(service, name, context, start, gauge, failed=False)
        return result

    def _stream(self, responses: Iterator, service: str, name: str, context, start: float, gauge) -> Iterator:
        failed = True
        try:
            yield from responses
            failed = False
        finally:
            self._done(service, name, context, start, gauge, failed)

    @staticmethod
    def _done(service: str, name: str, context, start: float, gauge, failed: bool) -> None:
        gauge.dec()
        code = context.code()
        if code is None:
            code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
        label = code.name if isinstance(code, grpc.StatusCode) else str(code)
        metrics.GRPC_REQUESTS.labels(service, name, label).inc()
        metrics.GRPC_DURATION.labels(service, name, label).observe(time.perf_counter() - start)


def server_interceptors() -> list[grpc.ServerInterceptor]:
    """Outermost first: request id, metrics (sees the final code), error mapping."""
    return [RequestIdInterceptor(), MetricsInterceptor(), DomainErrorInterceptor()]
