"""Structured logs: one JSON object per line, for the gateway, uvicorn and the access log alike."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

ACCESS_LOGGER = "gateway.access"
# uvicorn adds `color_message` for its own terminal formatter: noise in JSON.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """Writes the record's message and every `extra=` field as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


def logging_config(level: str) -> dict[str, Any]:
    """A dictConfig for uvicorn's `log_config`, so that every worker process logs the same way."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"level": level.upper(), "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
            # httpx logs every request at INFO: the gateway's own access line already says it, once.
            "httpx": {"level": "WARNING", "handlers": [], "propagate": True},
            "httpcore": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }


class RateLimitedLog:
    """Logs a recurring condition at most once per `interval` seconds, with how often it recurred meanwhile."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0, now: Callable[[], float] = time.monotonic):
        self._logger = logger
        self._interval = interval
        self._now = now
        self._last: float | None = None
        self._suppressed = 0

    def warning(self, message: str) -> None:
        now = self._now()
        if self._last is not None and now - self._last < self._interval:
            self._suppressed += 1
            return
        self._logger.warning(message, extra={"suppressed": self._suppressed})
        self._last = now
        self._suppressed = 0
