"""Structured JSON logs carrying the current request id and caller."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

from pythonjsonlogger import json as jsonlogger

from audiolime.server import tracing
from audiolime.server.context import current_caller, current_request_id


class _RequestIdFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        # A record may name them itself (the access log, written after the call's context ended).
        if not getattr(record, "request_id", None):
            record.request_id = current_request_id()
        if not getattr(record, "caller", None):
            record.caller = current_caller()
        record.service = self.service
        if tracing.enabled() and not getattr(record, "trace_id", None):
            trace_id = tracing.current_trace_id()
            if trace_id:
                record.trace_id = trace_id
        return True


def rfc3339(created: float) -> str:
    """``2026-12-02T07:32:04.712Z``: RFC 3339, UTC, milliseconds."""
    return datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Formatter(jsonlogger.JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        return rfc3339(record.created)


def configure_logging(service: str, level: str = "INFO") -> None:
    """One JSON object per line on stderr: time (RFC 3339, UTC), level, logger, message, service,
    request_id, caller (the authenticated caller's name; "" when authentication is off), and with tracing on
    trace_id (32 hex digits) inside a traced call. Every RPC
    adds one line of logger ``audiolime.access`` (``audiolime.server.interceptors``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter(service))
    handler.setFormatter(_Formatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(request_id)s %(caller)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("tensorflow", "absl", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
