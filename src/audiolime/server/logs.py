"""Structured JSON logs carrying the current request id."""

from __future__ import annotations

import contextvars
import logging
import sys
import uuid

from pythonjsonlogger import json as jsonlogger

REQUEST_ID_HEADER = "x-request-id"
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def current_request_id() -> str:
    return _request_id.get()


def set_request_id(value: str | None) -> contextvars.Token:
    return _request_id.set(value or uuid.uuid4().hex)


def reset_request_id(token: contextvars.Token) -> None:
    _request_id.reset(token)


class _RequestIdFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        record.service = self.service
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    """One JSON object per line on stderr: time, level, logger, message, service, request_id."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter(service))
    handler.setFormatter(jsonlogger.JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(request_id)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("tensorflow", "absl", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
