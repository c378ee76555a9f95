"""structlog set-up: JSON lines for machines, a readable console on a terminal.

Every line carries ``service``, ``version`` and ``logger`` (the module that logged it);
librdkafka's own log lines come through the same renderer (:func:`librdkafka_logger`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from stream_guard import __version__

SERVICE = "stream-guard"


class _NamedPrintLogger(structlog.PrintLogger):
    """A print logger that knows the name it was asked for, for ``add_logger_name``."""

    def __init__(self, name: str) -> None:
        super().__init__(sys.stderr)
        self.name = name


def _named_logger(*args: Any) -> _NamedPrintLogger:
    return _NamedPrintLogger(args[0] if args and isinstance(args[0], str) else "stream_guard")


def _add_service(logger: Any, method_name: str, event_dict: Any) -> Any:
    event_dict.setdefault("service", SERVICE)
    event_dict.setdefault("version", __version__)
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog once for the process.

    ``fmt`` is ``json``, ``console`` or ``auto`` (console when stderr is a TTY).
    Timestamps are ISO-8601 UTC; context bound with ``structlog.contextvars`` is merged in.
    """
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            _add_service,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=_named_logger,
        cache_logger_on_first_use=True,
    )


class _ToStructlog(logging.Handler):
    """Hands standard-library log records (librdkafka's) to structlog."""

    def emit(self, record: logging.LogRecord) -> None:
        structlog.get_logger(record.name).log(record.levelno, record.getMessage())


def librdkafka_logger() -> logging.Logger:
    """The ``logger`` to give confluent-kafka clients, so librdkafka's lines are structured too."""
    logger = logging.getLogger("librdkafka")
    if not any(isinstance(h, _ToStructlog) for h in logger.handlers):
        logger.addHandler(_ToStructlog())
    logger.setLevel(logging.DEBUG)  # librdkafka filters by its own "log_level"; structlog by ours
    logger.propagate = False
    return logger
