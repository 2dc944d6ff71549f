"""Structured JSON logs carrying the current request id and caller."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger import json as jsonlogger

from audiolime.server.context import current_caller, current_request_id


class _RequestIdFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        record.caller = current_caller()
        record.service = self.service
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    """One JSON object per line on stderr: time, level, logger, message, service, request_id,
    caller (the authenticated caller's name; "" when authentication is off)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter(service))
    handler.setFormatter(jsonlogger.JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(request_id)s %(caller)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("tensorflow", "absl", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
