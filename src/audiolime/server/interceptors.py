"""Server interceptors: request context (id, deadline), Prometheus metrics, and the one place where
domain errors become gRPC status codes, by the table in :mod:`audiolime.errors` (internal errors are
logged and hidden behind a generic message)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from grpc_interceptor import ServerInterceptor
from grpc_interceptor.exception_to_status import ExceptionToStatusInterceptor

from audiolime import errors, rpcstatus
from audiolime.server import context as callctx
from audiolime.server import metrics

log = logging.getLogger(__name__)
access_log = logging.getLogger("audiolime.access")

def status_of(exc: BaseException) -> grpc.StatusCode | None:
    """The status code of a domain error (:func:`audiolime.errors.status_name`); None otherwise."""
    name = errors.status_name(exc)
    return None if name is None else grpc.StatusCode[name]


def _split(method_name: str) -> tuple[str, str]:
    service, _, method = method_name.lstrip("/").rpartition("/")
    return service, method


class RequestContextInterceptor(ServerInterceptor):
    """Takes ``x-request-id`` from the caller (or makes one: the caller's is kept only if it is 1 to
    128 printable ASCII characters, :func:`audiolime.server.context.set_request_id`) and the call's
    deadline into the request context (:mod:`audiolime.server.context`) for logs and outgoing
    calls; echoes the id."""

    def intercept(self, method: Callable, request_or_iterator: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        incoming = dict(context.invocation_metadata()).get(callctx.REQUEST_ID_HEADER)
        tokens = (callctx.set_request_id(incoming), callctx.set_deadline(context.time_remaining()),
                  callctx.set_active(context.is_active))
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
            callctx.reset_active(tokens[2])
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
        if code is not None:  # with google.rpc details (BadRequest, RetryInfo) where the error has them
            context.abort_with_status(rpcstatus.status_of(
                code, str(ex), ex, request_or_iterator,
                trailing=((callctx.REQUEST_ID_HEADER, callctx.current_request_id()),)))  # kept: still echoed
        if isinstance(ex, grpc.RpcError) or context.code() not in (None, grpc.StatusCode.OK):
            raise ex  # already aborted with a status
        log.exception("internal error in %s", method_name)
        context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {callctx.current_request_id()})")


def grpc_type(handler: grpc.RpcMethodHandler, method_name: str = "") -> str:
    """grpc-ecosystem's ``grpc_type``: unary, client_stream, server_stream or bidi_stream, as the
    method is declared in its service's descriptor (the handler's shape otherwise: a handler that
    checks the caller before reading takes every request as a stream, :mod:`audiolime.server.auth`)."""
    declared = _declared_streaming(method_name)
    request, response = declared if declared else (handler.request_streaming, handler.response_streaming)
    if request:
        return "bidi_stream" if response else "client_stream"
    return "server_stream" if response else "unary"


@functools.cache
def _declared_streaming(method_name: str) -> tuple[bool, bool] | None:
    """(client streaming, server streaming) of ``/package.Service/Method`` from the protobuf
    descriptors loaded in this process; None when the method is not known there."""
    from google.protobuf import descriptor_pool

    service, method = _split(method_name)
    try:
        found = descriptor_pool.Default().FindMethodByName(f"{service}.{method}")
    except KeyError:
        return None
    return bool(found.client_streaming), bool(found.server_streaming)


def _size(message: Any) -> int:
    size = getattr(message, "ByteSize", None)  # a malformed request's marker has none
    return size() if callable(size) else 0


class _Call:
    """What the access log and the metrics record of one RPC."""

    def __init__(self, kind: str, service: str, method: str, context: grpc.ServicerContext) -> None:
        self.kind, self.service, self.method, self.context = kind, service, method, context
        self.start = time.perf_counter()
        self.request_id = callctx.current_request_id()
        self.received = self.sent = self.request_bytes = self.response_bytes = 0
        self.record = callctx.CallRecord()

    def got(self, message: Any) -> Any:
        self.received += 1
        self.request_bytes += _size(message)
        metrics.GRPC_MSG_RECEIVED.labels(self.kind, self.service, self.method).inc()
        return message

    def put(self, message: Any) -> Any:
        self.sent += 1
        self.response_bytes += _size(message)
        metrics.GRPC_MSG_SENT.labels(self.kind, self.service, self.method).inc()
        return message

    def done(self, failed: bool) -> None:
        duration = time.perf_counter() - self.start
        code = self.context.code()
        if code is None:
            code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        labels = (self.kind, self.service, self.method)
        metrics.GRPC_HANDLED.labels(*labels, name).inc()
        metrics.GRPC_HANDLING.labels(*labels, name).observe(duration)
        metrics.GRPC_IN_FLIGHT.labels(self.service, self.method).dec()
        details = self.context.details() if name != "OK" else None
        if isinstance(details, bytes):
            details = details.decode("utf-8", "replace")
        access_log.info("rpc", extra={
            "grpc_service": self.service, "grpc_method": self.method, "grpc_type": self.kind,
            "grpc_code": name, "duration_s": round(duration, 6), "request_id": self.request_id,
            "caller": self.record.caller, "peer": self.context.peer(),
            "request_messages": self.received, "request_bytes": self.request_bytes,
            "response_messages": self.sent, "response_bytes": self.response_bytes,
            **({"details": details[:500]} if details else {})})


class ObservingInterceptor(grpc.ServerInterceptor):
    """Per RPC: the grpc-ecosystem metrics (started, handled and handling time by final status
    code, messages received and sent), the in-flight gauge, and one access-log line (logger
    ``audiolime.access``): service, method, type, status code, duration, request id, caller, peer,
    request/response messages and bytes (the messages' serialized sizes), and the status details
    of a failure. Sits inside :class:`RequestContextInterceptor` (it sees the request id) and
    outside the error mapping (it sees the final code)."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, method = _split(handler_call_details.method)
        kind = grpc_type(handler, handler_call_details.method)

        def begin(context: grpc.ServicerContext) -> _Call:
            call = _Call(kind, service, method, context)
            callctx.set_call_record(call.record)
            metrics.GRPC_STARTED.labels(kind, service, method).inc()
            metrics.GRPC_IN_FLIGHT.labels(service, method).inc()
            return call

        def requests(call: _Call, iterator: Iterator) -> Iterator:
            for message in iterator:
                yield call.got(message)

        def unary_response(fn: Callable, request_streaming: bool) -> Callable:
            def behaviour(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
                call = begin(context)
                arg = requests(call, request_or_iterator) if request_streaming else call.got(request_or_iterator)
                try:
                    response = fn(arg, context)
                except BaseException:
                    call.done(failed=True)
                    raise
                call.put(response)
                call.done(failed=False)
                return response
            return behaviour

        def stream_response(fn: Callable, request_streaming: bool) -> Callable:
            def behaviour(request_or_iterator: Any, context: grpc.ServicerContext) -> Iterator:
                call = begin(context)
                arg = requests(call, request_or_iterator) if request_streaming else call.got(request_or_iterator)
                failed = True
                try:
                    for response in fn(arg, context):
                        yield call.put(response)
                    failed = False
                finally:
                    call.done(failed)
            return behaviour

        if handler.unary_unary is not None:
            return handler._replace(unary_unary=unary_response(handler.unary_unary, False))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=unary_response(handler.stream_unary, True))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=stream_response(handler.unary_stream, False))
        return handler._replace(stream_stream=stream_response(handler.stream_stream, True))


class ClientMetricsInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """grpc-ecosystem client metrics of outgoing calls (``grpc_client_started_total``,
    ``grpc_client_handled_total``, ``grpc_client_handling_seconds``, with ``grpc_code``): every
    attempt the explainer makes to its separator and tagger, retries included."""

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return self._observe("unary", continuation, client_call_details, request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return self._observe("server_stream", continuation, client_call_details, request)

    def _observe(self, kind: str, continuation, client_call_details, request):
        service, method = _split(client_call_details.method)
        metrics.CLIENT_STARTED.labels(kind, service, method).inc()
        start = time.perf_counter()
        call = continuation(client_call_details, request)
        call.add_done_callback(lambda done: self._done(kind, service, method, done, start))
        return call

    @staticmethod
    def _done(kind: str, service: str, method: str, call, start: float) -> None:
        try:
            code = call.code()
        except Exception:  # noqa: BLE001 - a call that never got a status
            code = grpc.StatusCode.UNKNOWN
        name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
        metrics.CLIENT_HANDLED.labels(kind, service, method, name).inc()
        metrics.CLIENT_HANDLING.labels(kind, service, method, name).observe(time.perf_counter() - start)


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


def server_interceptors(auth: Sequence[grpc.ServerInterceptor] = (), traced: bool = False
                        ) -> list[grpc.ServerInterceptor]:
    """Outermost first: request id, the call's span (with ``traced``: tracing is on; its access-log line
    carries the trace id), metrics and access log (see the final code), error mapping, authentication
    (before anything looks at the request), malformed requests."""
    spans: list[grpc.ServerInterceptor] = []
    if traced:
        from audiolime.server.tracing import ServerTracingInterceptor

        spans.append(ServerTracingInterceptor())
    return [RequestContextInterceptor(), *spans, ObservingInterceptor(), DomainErrorInterceptor(), *auth,
            MalformedRequestInterceptor()]
