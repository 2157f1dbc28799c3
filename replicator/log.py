"""Structured logging: JSON lines when not on a terminal, pretty on one, secrets scrubbed.

Every password the process learns (from a DSN or the environment) is registered with
``add_secret``; a processor replaces it in every string of every event, so a password can
never reach a log line even when a library puts it into an exception message.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

import structlog

from .dsn import MASK

_secrets: set[str] = set()


def add_secret(secret: str | None) -> None:
    if secret and len(secret) >= 3:
        _secrets.add(secret)


def scrub(text: str) -> str:
    """Replace every registered secret in ``text``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, BaseException):
        return scrub(f"{type(value).__name__}: {value}")
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub_value(v) for v in value)
    return value


def _scrub_processor(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    return {k: _scrub_value(v) for k, v in event.items()}


_format = "console"


def is_json() -> bool:
    """Whether log lines are JSON (not a terminal, or log_format = json)."""
    return _format == "json"


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    """Configure structlog once per process; ``fmt`` is auto, json or console."""
    stream = stream or _stream
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    global _format
    _format = fmt
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _scrub_processor,
    ]
    if fmt == "json":
        processors.append(structlog.processors.JSONRenderer(default=str))
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


class _Stream:
    """The stream log lines go to; swappable while a progress display owns the terminal."""

    def __init__(self) -> None:
        self.target: Any = None

    def write(self, text: str) -> int:
        return (self.target or sys.stderr).write(text)

    def flush(self) -> None:
        (self.target or sys.stderr).flush()

    def isatty(self) -> bool:
        return (self.target or sys.stderr).isatty()


_stream = _Stream()


def redirect(target: Any) -> None:
    _stream.target = target


def get(name: str | None = None, **bound: Any) -> structlog.stdlib.BoundLogger:
    logger = structlog.get_logger(name)
    return logger.bind(**bound) if bound else logger


def secrets() -> Iterable[str]:
    return tuple(_secrets)
