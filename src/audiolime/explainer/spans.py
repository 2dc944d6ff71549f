"""Spans of one explanation, built from the method's progress events (the method itself knows
nothing of tracing: :mod:`audiolime.method.events`).

Under an ``explanation`` span, each stage the events announce is one span ``stage <name>``
(``decode``, ``scan``, ``separate``, ``predict``, ``fit``, ``fidelity``: the faithfulness checks,
``store``: publishing), from its event to the next stage's; within ``predict`` every sampling
round is a span ``round <n>`` (ended by the round's :class:`~audiolime.method.events.Ranking`, with
the masks drawn so far). Each span is current while its stage runs, so the tagger and separator
calls made in it are its children (the engine's worker threads copy the context). With tracing
off, :func:`traced` hands back the caller's sink untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from audiolime.method.events import Event, EventSink, Ranking
from audiolime.server import context as callctx
from audiolime.server import tracing


class _Open:
    """A span made current (attached) until it is closed."""

    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        self.span: Span = tracing.tracer().start_span(name, attributes=attributes)
        self.ctx = trace.set_span_in_context(self.span)
        self.token = otel_context.attach(self.ctx)

    def close(self, error: BaseException | None = None) -> None:
        if error is not None:
            self.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:500]))
        tracing.detach(self.token, self.ctx)
        self.span.end()


class ExplanationSpans:
    """The event sink that opens and closes the stage and round spans, then passes every event on
    to ``sink`` (which may raise to stop the work, as any sink)."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink
        self.stage: _Open | None = None
        self.stage_name = ""
        self.round: _Open | None = None
        self.rounds = 0
        self.root: Span | None = None  # the explanation's span

    def __call__(self, event: Event | Ranking) -> None:
        if isinstance(event, Ranking):
            if self.round is not None:
                self.round.span.set_attribute("audiolime.masks", event.masks)
                self.round.span.set_attribute("audiolime.stability", min((t.stability for t in event.targets),
                                                                         default=0.0))
                self._end_round()
        elif event.stage != self.stage_name:
            self._end_stage()
            self.stage_name = event.stage
            self.stage = _Open(f"stage {event.stage}", {"audiolime.stage": event.stage})
        if isinstance(event, Event) and event.stage == "predict":
            if self.round is None:
                self.rounds += 1
                self.round = _Open(f"round {self.rounds}", {"audiolime.round": self.rounds})
            if event.total:
                self.round.span.set_attribute("audiolime.windows_done", event.done)
                self.round.span.set_attribute("audiolime.windows_total", event.total)
        self.sink(event)

    def _end_round(self, error: BaseException | None = None) -> None:
        if self.round is not None:
            self.round.close(error)
            self.round = None

    def _end_stage(self, error: BaseException | None = None) -> None:
        self._end_round(error)
        if self.stage is not None:
            self.stage.close(error)
            self.stage = None

    def close(self, error: BaseException | None = None) -> None:
        self._end_stage(error)


@contextmanager
def traced(events: EventSink, attributes: dict[str, Any] | None = None) -> Iterator[EventSink]:
    """``events`` wrapped in :class:`ExplanationSpans` under an ``explanation`` span while the block
    runs (``events`` itself with tracing off)."""
    if not tracing.enabled():
        yield events
        return
    spans = ExplanationSpans(events)
    with tracing.span("explanation", {"audiolime.request_id": callctx.current_request_id(),
                                      **(attributes or {})}) as root:
        spans.root = root
        try:
            yield spans
        except BaseException as exc:
            spans.close(exc)
            raise
        spans.close()


def finished(sink: EventSink, attributes: dict[str, Any]) -> None:
    """The explanation of ``sink`` (:func:`traced`) is done: its last stage ends and its span gets
    ``attributes`` (nothing with tracing off)."""
    if isinstance(sink, ExplanationSpans):
        sink.close()
        if sink.root is not None:
            sink.root.set_attributes(attributes)
