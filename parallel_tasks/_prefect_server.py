"""Prefect settings for the servers this project's commands start, and the address of the UI to show people."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

__all__ = ["EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "local_server_defaults", "ui_address"]

# Prefect's 20 s is often too short for its temporary server on a fresh home and a busy machine.
EPHEMERAL_STARTUP_TIMEOUT_SECONDS = 180


def local_server_defaults() -> AbstractContextManager[Any]:
    """Settings for the temporary server a flow starts when ``PREFECT_API_URL`` is unset, as defaults only
    (a value the user set, in the environment or a profile, wins): analytics off, because that server's first
    telemetry write to a fresh database can fail with ``database is locked``; and time to start."""
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    return temporary_settings(
        set_defaults={
            PREFECT_SERVER_ANALYTICS_ENABLED: False,
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        }
    )


def ui_address() -> str:
    """Where Prefect's UI is: derived from ``PREFECT_API_URL`` when it is set, else where ``prefect server start``
    serves it (``PREFECT_SERVER_API_HOST`` and ``PREFECT_SERVER_API_PORT``)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    return settings.ui_url or f"http://{settings.server.api.host}:{settings.server.api.port}"
