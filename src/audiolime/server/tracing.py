"""OpenTelemetry traces of every service, off unless an OTLP endpoint is configured.

``--otlp-endpoint`` / ``$OTEL_EXPORTER_OTLP_ENDPOINT`` (``http://collector:4317``: plaintext gRPC,
``https://``: TLS) turns them on: :func:`configure` installs the SDK's ``TracerProvider`` with a
``BatchSpanProcessor`` and the OTLP/gRPC exporter (the SDK's other ``OTEL_*`` variables apply:
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``,
``OTEL_EXPORTER_OTLP_HEADERS``...). Without an endpoint nothing is imported beyond the API, no
provider or exporter exists, no interceptor is installed and :func:`enabled` is False.

The convention (docs/service-contract.md, "Traces"):

* context travels as W3C Trace Context (``traceparent``, ``tracestate``; and ``baggage``) in gRPC
  metadata, next to ``x-request-id``;
* every RPC is a SERVER span ``<package.Service>/<Method>`` (:class:`ServerTracingInterceptor`,
  health checks and reflection excepted) with ``rpc.system``, ``rpc.service``, ``rpc.method``,
  ``rpc.grpc.status_code`` and ``audiolime.request_id``;
* every outgoing call *attempt* is a CLIENT span (:class:`ClientTracingInterceptor`) with
  ``audiolime.attempt`` (1 = first; a retried Predict is several spans), and each retry is also a
  ``retry`` event on the span that retries (:func:`event`);
* the explainer's stages are spans built from the method's progress events
  (:mod:`audiolime.explainer.spans`).

Spans are exported in batches and flushed when the server stops (:func:`shutdown`).
"""

from __future__ import annotations

import collections
import contextvars
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from audiolime.server import context as callctx

log = logging.getLogger(__name__)

TRACER = "audiolime"
# Not traced: probes and tools (a kubelet's Check every few seconds would be most of the traces).
UNTRACED_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                               "grpc.reflection.v1alpha.ServerReflection"})
# OpenTelemetry's RPC conventions: a server span is an error only for these codes (a caller's
# mistake, INVALID_ARGUMENT or NOT_FOUND, is not the server's); a client span for every code but OK.
SERVER_ERRORS = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
                           grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL,
                           grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS})

_provider: Any = None  # the SDK TracerProvider once configured
_attempt: contextvars.ContextVar[int] = contextvars.ContextVar("attempt", default=1)


def enabled() -> bool:
    """Whether this process exports traces (an endpoint was configured)."""
    return _provider is not None


def configure(service: str, endpoint: str | None, environ: Mapping[str, str] | None = None) -> bool:
    """Export this process's spans over OTLP/gRPC to ``endpoint`` (None or "": tracing stays off and
    nothing is created). ``service``: ``explainer``, ``separator`` or ``tagger``; the resource's
    ``service.name`` is ``$OTEL_SERVICE_NAME`` or ``audiolime-<service>``."""
    global _provider
    if not endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from audiolime import __version__

    env = os.environ if environ is None else environ
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or f"audiolime-{service}",
                                "service.namespace": "audiolime", "service.version": __version__})
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)  # shutdown(): bounded
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _provider = provider
    log.info("tracing on", extra={"otlp_endpoint": endpoint, "service_name": resource.attributes["service.name"]})
    return True


SHUTDOWN_TIMEOUT_S = 5.0


def shutdown(timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
    """Export what is still buffered and stop (the last thing a stopping server does), waiting at
    most ``timeout_s``: with the collector unreachable the exporter retries for about a minute, and
    a server's exit does not wait for that (what is left is dropped, with a warning)."""
    global _provider
    provider, _provider = _provider, None
    if provider is None:
        return
    flushing = threading.Thread(target=provider.shutdown, name="otel-shutdown", daemon=True)
    flushing.start()
    flushing.join(timeout_s)
    if flushing.is_alive():
        log.warning("tracing: the last spans were not exported in time; dropped", extra={"timeout_s": timeout_s})


def tracer() -> trace.Tracer:
    """Our tracer: the configured provider's (the API's no-op one when tracing is off)."""
    return _provider.get_tracer(TRACER) if _provider is not None else trace.get_tracer(TRACER)


def _split(method_name: str) -> tuple[str, str]:
    service, _, method = method_name.lstrip("/").rpartition("/")
    return service, method


def _code_of(code: Any) -> grpc.StatusCode:
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def detach(token: object, ctx: otel_context.Context) -> None:
    """Detach what :func:`otel_context.attach` attached, when this is still the context it made (a
    stream closed from another thread has nothing of ours to detach)."""
    if otel_context.get_current() is ctx:
        otel_context.detach(token)


@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None, kind: SpanKind = SpanKind.INTERNAL
         ) -> Iterator[Span | None]:
    """A span as the current one while the block runs (None, and nothing done, with tracing off);
    an exception out of the block marks it an error."""
    if not enabled():
        yield None
        return
    with tracer().start_as_current_span(name, kind=kind, attributes=attributes) as current:
        yield current


def event(name: str, attributes: Mapping[str, Any] | None = None) -> None:
    """An event on the current span (nothing with tracing off)."""
    if enabled():
        trace.get_current_span().add_event(name, dict(attributes or {}))


def annotate(attributes: Mapping[str, Any]) -> None:
    """Attributes on the current span, e.g. what a handler learned (nothing with tracing off)."""
    if enabled():
        trace.get_current_span().set_attributes(dict(attributes))


@contextmanager
def attempt(number: int) -> Iterator[None]:
    """Outgoing calls in this block are attempt ``number`` (1 = the first) of a retried call."""
    token = _attempt.set(number)
    try:
        yield
    finally:
        _attempt.reset(token)


def traceparent() -> str:
    """The current span's W3C ``traceparent`` ("" with tracing off or outside a span), to keep with
    work that runs later (a job)."""
    if not enabled():
        return ""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


@contextmanager
def linked(name: str, parent: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span | None]:
    """A span that starts a trace of its own, linked to the trace context ``parent`` (a
    :func:`traceparent` kept from the call that asked for this work; "": no link), current while
    the block runs (None with tracing off)."""
    if not enabled():
        yield None
        return
    linked_to = trace.get_current_span(propagate.extract({"traceparent": parent} if parent else {},
                                                         context=otel_context.Context())).get_span_context()
    links = [trace.Link(linked_to)] if linked_to.is_valid else []
    with tracer().start_as_current_span(name, context=otel_context.Context(), links=links,
                                        attributes=attributes) as current:
        yield current


def current_trace_id() -> str:
    """The current span's trace id as 32 hex digits ("" without one)."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


# -- servers ----------------------------------------------------------------------------------------
class ServerTracingInterceptor(grpc.ServerInterceptor):
    """A SERVER span per RPC, child of the caller's W3C trace context (``traceparent`` metadata),
    current while the handler runs, so the calls it makes continue the trace. Sits inside
    :class:`~audiolime.server.interceptors.RequestContextInterceptor` (it sees the request id) and
    outside the access log (whose line carries the trace id) and the error mapping (it sees the final
    code)."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, method = _split(handler_call_details.method)
        if service in UNTRACED_SERVICES:
            return handler
        name = f"{service}/{method}"

        def begin(context: grpc.ServicerContext) -> tuple[Span, object, otel_context.Context]:
            parent = propagate.extract(dict(context.invocation_metadata()), context=otel_context.Context())
            current = tracer().start_span(name, context=parent, kind=SpanKind.SERVER, attributes={
                "rpc.system": "grpc", "rpc.service": service, "rpc.method": method,
                "audiolime.request_id": callctx.current_request_id()})
            ctx = trace.set_span_in_context(current, parent)
            return current, otel_context.attach(ctx), ctx

        def end(state: tuple[Span, object, otel_context.Context], context: grpc.ServicerContext,
                failed: bool) -> None:
            current, token, ctx = state
            code = context.code()
            code = _code_of(code) if code is not None else (grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK)
            current.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in SERVER_ERRORS:
                details = context.details()
                if isinstance(details, bytes):
                    details = details.decode("utf-8", "replace")
                current.set_status(Status(StatusCode.ERROR, f"{code.name}: {details or ''}"[:500]))
            detach(token, ctx)
            current.end()

        def unary_response(fn: Callable) -> Callable:
            def behaviour(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
                state = begin(context)
                try:
                    response = fn(request_or_iterator, context)
                except BaseException:
                    end(state, context, failed=True)
                    raise
                end(state, context, failed=False)
                return response
            return behaviour

        def stream_response(fn: Callable) -> Callable:
            def behaviour(request_or_iterator: Any, context: grpc.ServicerContext) -> Iterator:
                state = begin(context)
                failed = True
                try:
                    yield from fn(request_or_iterator, context)
                    failed = False
                finally:
                    end(state, context, failed)
            return behaviour

        if handler.unary_unary is not None:
            return handler._replace(unary_unary=unary_response(handler.unary_unary))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=unary_response(handler.stream_unary))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=stream_response(handler.unary_stream))
        return handler._replace(stream_stream=stream_response(handler.stream_stream))


# -- clients ----------------------------------------------------------------------------------------
class _CallDetails(collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                                           "wait_for_ready", "compression")),
                   grpc.ClientCallDetails):
    pass


class ClientTracingInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """A CLIENT span per outgoing call attempt, child of the current span, whose context goes out as
    ``traceparent`` metadata (so the backend's SERVER span is its child); ``audiolime.attempt``
    numbers the attempts of a retried call (:func:`attempt`). ``peer``: the target, as configured."""

    def __init__(self, peer: str = "") -> None:
        self.peer = peer

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return self._trace(continuation, client_call_details, request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return self._trace(continuation, client_call_details, request)

    def _trace(self, continuation: Callable, details: grpc.ClientCallDetails, request: Any) -> Any:
        service, method = _split(details.method)
        attributes: dict[str, Any] = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method,
                                      "audiolime.attempt": _attempt.get(),
                                      "audiolime.request_id": callctx.current_request_id()}
        if self.peer:
            attributes["server.address"] = self.peer
        if details.timeout is not None:
            attributes["audiolime.timeout_s"] = round(float(details.timeout), 3)
        current = tracer().start_span(f"{service}/{method}", kind=SpanKind.CLIENT, attributes=attributes)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(current))
        metadata = [*(details.metadata or ()), *carrier.items()]
        details = _CallDetails(details.method, details.timeout, metadata, details.credentials,
                               getattr(details, "wait_for_ready", None), getattr(details, "compression", None))
        try:
            call = continuation(details, request)
        except BaseException:
            current.set_status(Status(StatusCode.ERROR, "the call did not start"))
            current.end()
            raise
        call.add_done_callback(lambda done: self._done(current, done))
        return call

    @staticmethod
    def _done(current: Span, call) -> None:
        try:
            code = _code_of(call.code())
            details = call.details() if code != grpc.StatusCode.OK else ""
        except Exception:  # noqa: BLE001 - a call that never got a status
            code, details = grpc.StatusCode.UNKNOWN, ""
        current.set_attribute("rpc.grpc.status_code", code.value[0])
        if code != grpc.StatusCode.OK:
            current.set_status(Status(StatusCode.ERROR, f"{code.name}: {details or ''}"[:500]))
        current.end()
