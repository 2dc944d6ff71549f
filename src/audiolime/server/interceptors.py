"""Server interceptors: request context (id, deadline), Prometheus metrics, and the one place where
domain errors become gRPC status codes, by the table in :mod:`audiolime.errors` (internal errors are
logged and hidden behind a generic message)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from grpc_interceptor import ServerInterceptor
from grpc_interceptor.exception_to_status import ExceptionToStatusInterceptor

from audiolime import errors
from audiolime.server import context as callctx
from audiolime.server import metrics

log = logging.getLogger(__name__)

def status_of(exc: BaseException) -> grpc.StatusCode | None:
    """The status code of a domain error (:func:`audiolime.errors.status_name`); None otherwise."""
    name = errors.status_name(exc)
    return None if name is None else grpc.StatusCode[name]


def _split(method_name: str) -> tuple[str, str]:
    service, _, method = method_name.lstrip("/").rpartition("/")
    return service, method


class RequestContextInterceptor(ServerInterceptor):
    """Takes ``x-request-id`` from the caller (or makes one) and the call's deadline into the
    request context (:mod:`audiolime.server.context`) for logs and outgoing calls; echoes the id."""

    def intercept(self, method: Callable, request_or_iterator: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        incoming = dict(context.invocation_metadata()).get(callctx.REQUEST_ID_HEADER)
        tokens = (callctx.set_request_id(incoming), callctx.set_deadline(context.time_remaining()))
        context.set_trailing_metadata(((callctx.REQUEST_ID_HEADER, callctx.current_request_id()),))
        try:
            result = method(request_or_iterator, context)
        except BaseException:
            self._reset(tokens)
            raise
        if isinstance(result, Iterator):
            return self._stream(result, tokens)
        self._reset(tokens)
        return result

    @staticmethod
    def _reset(tokens) -> None:
        try:
            callctx.reset_request_id(tokens[0])
            callctx.reset_deadline(tokens[1])
        except ValueError:  # a stream finished in another context
            pass

    def _stream(self, responses: Iterator, tokens) -> Iterator:
        try:
            yield from responses
        finally:
            self._reset(tokens)


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
        context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {callctx.current_request_id()})")


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


class _Malformed:
    """A request message that did not parse (stands in for it until the handler runs)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class MalformedRequestInterceptor(grpc.ServerInterceptor):
    """A request whose bytes do not parse as the method's message is the caller's mistake:
    INVALID_ARGUMENT (gRPC itself would answer INTERNAL "Exception deserializing request!").

    The method's deserializer is wrapped so a parse failure yields a marker; the handler raises
    ``InvalidInput`` for it, which :class:`DomainErrorInterceptor` (further out) maps."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        parse = handler.request_deserializer

        def deserialize(data: bytes):
            try:
                return parse(data)
            except Exception as exc:  # noqa: BLE001 - any parse failure is the caller's
                return _Malformed(exc)

        def check(request):
            if isinstance(request, _Malformed):
                raise errors.InvalidInput(f"the request is not a valid {handler_call_details.method} message")
            return request

        def checked(requests):
            for request in requests:
                yield check(request)

        if handler.request_streaming:
            wrap = lambda fn: (lambda it, ctx: fn(checked(it), ctx))  # noqa: E731
        else:
            wrap = lambda fn: (lambda req, ctx: fn(check(req), ctx))  # noqa: E731
        kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
        changed = {k: wrap(getattr(handler, k)) for k in kinds if getattr(handler, k) is not None}
        return handler._replace(request_deserializer=deserialize, **changed)


def server_interceptors(auth: Sequence[grpc.ServerInterceptor] = ()) -> list[grpc.ServerInterceptor]:
    """Outermost first: request id, metrics (sees the final code), error mapping, authentication
    (before anything looks at the request), malformed requests."""
    return [RequestContextInterceptor(), MetricsInterceptor(), DomainErrorInterceptor(), *auth,
            MalformedRequestInterceptor()]
