"""Structured logging that lands in Prefect's run logs inside a run and in stdlib logging elsewhere.

A library must not configure structlog or logging, so each logger here is built with its own
processor chain (redaction, then rendering) and a destination resolved at call time:
``prefect.get_run_logger()`` when a flow or task run is active, else ``logging.getLogger("parallel_tasks")``.
Prefect is looked up only if it is already imported, so the HTTP client stays independent of it.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Iterable
from typing import Any, cast

import structlog

from parallel_tasks.redaction import RedactSecrets, guard_library_logs

__all__ = ["LOGGER_NAME", "debug_enabled", "get_logger"]

LOGGER_NAME = "parallel_tasks"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _destination() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run logger inside a run, else the package's stdlib logger."""
    prefect_context = sys.modules.get("prefect.context")
    if prefect_context is not None and (
        prefect_context.TaskRunContext.get() is not None or prefect_context.FlowRunContext.get() is not None
    ):
        from prefect.logging import get_run_logger

        return cast("logging.LoggerAdapter[logging.Logger]", get_run_logger())
    return logging.getLogger(LOGGER_NAME)


def debug_enabled() -> bool:
    """A cheap check, for hot paths, that a debug event could be logged anywhere it may go."""
    return any(logger.isEnabledFor(logging.DEBUG) for logger in _destinations())


@functools.cache
def _destinations() -> tuple[logging.Logger, ...]:
    """The loggers events may go to (a logger is one object for the life of the process)."""
    return tuple(logging.getLogger(name) for name in (LOGGER_NAME, "prefect.flow_runs", "prefect.task_runs"))


class _RunAwareLogger:
    """What structlog wraps: forwards each rendered event to the destination chosen in ``_route``."""

    def _emit(self, message: str, *, destination: Any, level: int, fields: dict[str, Any]) -> None:
        destination.log(level, message, extra={"parallel_event": fields})

    debug = info = warning = warn = error = critical = exception = msg = _emit


def _route(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop events the destination would ignore before any rendering work is done."""
    destination = _destination()
    level = _LEVELS.get(method_name, logging.INFO)
    if not destination.isEnabledFor(level):
        raise structlog.DropEvent
    event_dict["_destination"] = destination
    event_dict["_level"] = level
    return event_dict


def _render(logger: Any, method_name: str, event_dict: dict[str, Any]) -> tuple[tuple[str], dict[str, Any]]:
    """``event key=value ...`` for the message; the structured fields ride along as ``extra``."""
    destination = event_dict.pop("_destination")
    level = event_dict.pop("_level")
    event = str(event_dict.get("event", ""))
    fields = {k: v for k, v in event_dict.items() if k != "event"}
    pairs = " ".join(f"{k}={_logfmt(v)}" for k, v in fields.items())
    message = f"{event} {pairs}" if pairs else event
    return (message,), {"destination": destination, "level": level, "fields": {"event": event, **fields}}


def _logfmt(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (not text or any(c in text for c in ' ="')) else text


def get_logger(secrets: Iterable[str | None] = (), **context: Any) -> Any:
    """A structlog bound logger for this package.

    Args:
        secrets: Values to mask wherever they appear (the API key in use).
        **context: Keys bound to every event (for example ``run_id``).

    The secrets are also masked from then on in httpx's and httpcore's own log records (a server may
    echo the key in a response header or a redirect's Location).
    """
    guard_library_logs(secrets)
    processors: list[Any] = [
        _route,
        structlog.processors.format_exc_info,
        RedactSecrets(secrets),
        _render,
    ]
    return structlog.wrap_logger(
        _RunAwareLogger(), processors=processors, wrapper_class=structlog.BoundLogger, **context
    )
