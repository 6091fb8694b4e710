"""Every environment variable and default of the package, in one settings object.

Each field reads the environment variable of its name with the ``PARALLEL_`` prefix (``api_key`` from
``PARALLEL_API_KEY``, ``tasks_dask_address`` from ``PARALLEL_TASKS_DASK_ADDRESS``). Call :func:`get_settings`
where a value is needed, not at import, so a changed environment is seen by the next call. The OpenLineage
client's own variables (``OPENLINEAGE_URL``, ``OPENLINEAGE__TRANSPORT__*``, ...) belong to that client, which
reads them itself; :func:`openlineage_environment` only lets the package see whether they configure it. Nothing
else in the library reads ``os.environ``. This module imports neither httpx nor Prefect.
"""

from __future__ import annotations

import functools
import os

import pydantic
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "API_KEY_ENV_VAR",
    "BASE_URL_ENV_VAR",
    "DASK_ENV_VAR",
    "DEFAULT_BASE_URL",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_OPENLINEAGE_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "ENV_PREFIX",
    "MAX_CONCURRENCY",
    "OPENLINEAGE_TIMEOUT_ENV_VAR",
    "SENSITIVE_KEYS_ENV_VAR",
    "SIGNING_BLOCK_ENV_VAR",
    "WEBHOOK_SECRET_ENV_VAR",
    "ParallelSettings",
    "get_settings",
    "openlineage_environment",
    "sensitive_key_patterns",
]

ENV_PREFIX = "PARALLEL_"
DEFAULT_BASE_URL = "https://api.parallel.ai"
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
DEFAULT_CONCURRENCY = 16
"""Requests in flight at once for a batch (the async client) and for an audit (the flow)."""
MAX_CONCURRENCY = 1000
"""The most requests a batch may have in flight: each costs a worker, and past the pool's 100
connections more only wait for one."""
DEFAULT_OPENLINEAGE_TIMEOUT = 5.0
"""Seconds a lineage backend may cost a flow run at most (see :mod:`parallel_tasks.openlineage`)."""


class ParallelSettings(BaseSettings):
    """The package's configuration from the environment, with its defaults.

    Attributes:
        api_key: ``PARALLEL_API_KEY``: the key used when no credentials block is given.
        base_url: ``PARALLEL_BASE_URL``: the API used with that key.
        connect_timeout: ``PARALLEL_CONNECT_TIMEOUT``: seconds to wait for a connection (with that key).
        read_timeout: ``PARALLEL_READ_TIMEOUT``: seconds to wait for each read (with that key).
        max_retries: ``PARALLEL_MAX_RETRIES``: the client's extra attempts (with that key).
        tasks_dask_address: ``PARALLEL_TASKS_DASK_ADDRESS``: the audit's task runner (see
            :func:`parallel_tasks.audit.task_runner_from_environment`); empty for Prefect's thread pool.
        sensitive_keys: ``PARALLEL_SENSITIVE_KEYS``: more key patterns to redact, comma-separated (see
            :mod:`parallel_tasks.redaction`).
        webhook_secret: ``PARALLEL_WEBHOOK_SECRET``: the secret(s) the webhook receiver verifies deliveries
            with when no block is named (space-separated during a rotation; see
            :func:`parallel_tasks.credentials.resolve_webhook_secrets`).
        openlineage_timeout: ``PARALLEL_OPENLINEAGE_TIMEOUT``: the most seconds the OpenLineage events may
            cost a flow run, the HTTP transport's own timeout capped at it (see :mod:`parallel_tasks.openlineage`).
        manifest_signing_block: ``PARALLEL_MANIFEST_SIGNING_BLOCK``: the Secret block whose key signs each
            audit's manifest (see :mod:`parallel_tasks.manifests`); empty for unsigned manifests.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    api_key: SecretStr | None = None
    base_url: str = DEFAULT_BASE_URL
    connect_timeout: float = Field(default=DEFAULT_CONNECT_TIMEOUT, gt=0)
    read_timeout: float = Field(default=DEFAULT_READ_TIMEOUT, gt=0)
    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0, le=10)
    tasks_dask_address: str = ""
    sensitive_keys: str = ""
    webhook_secret: SecretStr | None = None
    openlineage_timeout: float = Field(default=DEFAULT_OPENLINEAGE_TIMEOUT, gt=0, allow_inf_nan=False)
    manifest_signing_block: str = ""

    @property
    def sensitive_key_patterns(self) -> tuple[str, ...]:
        """``sensitive_keys`` as a tuple of patterns, blanks dropped."""
        return tuple(p.strip() for p in self.sensitive_keys.split(",") if p.strip())

    @pydantic.field_validator("api_key", "webhook_secret", mode="after")
    @classmethod
    def _blank_key_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        stripped = value.get_secret_value().strip() if value is not None else ""
        return SecretStr(stripped) if stripped else None

    @pydantic.field_validator("base_url", mode="after")
    @classmethod
    def _blank_url_is_default(cls, value: str) -> str:
        return value.strip() or DEFAULT_BASE_URL

    @pydantic.field_validator("tasks_dask_address", "manifest_signing_block", mode="after")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


API_KEY_ENV_VAR = f"{ENV_PREFIX}API_KEY"
BASE_URL_ENV_VAR = f"{ENV_PREFIX}BASE_URL"
DASK_ENV_VAR = f"{ENV_PREFIX}TASKS_DASK_ADDRESS"
SENSITIVE_KEYS_ENV_VAR = f"{ENV_PREFIX}SENSITIVE_KEYS"
WEBHOOK_SECRET_ENV_VAR = f"{ENV_PREFIX}WEBHOOK_SECRET"
OPENLINEAGE_TIMEOUT_ENV_VAR = f"{ENV_PREFIX}OPENLINEAGE_TIMEOUT"
SIGNING_BLOCK_ENV_VAR = f"{ENV_PREFIX}MANIFEST_SIGNING_BLOCK"


def get_settings() -> ParallelSettings:
    """The settings as the environment gives them now (cheap: parsed again only when a variable changed,
    so hot paths such as redaction may call it freely).

    Raises:
        ValueError: A ``PARALLEL_*`` variable holds a value that is not usable; the message names it
            (never its value, which may be a key).
    """
    return _parsed(tuple(os.environ.get(name) for name in _ENV_NAMES))


def sensitive_key_patterns() -> tuple[str, ...]:
    """``PARALLEL_SENSITIVE_KEYS`` as patterns: its one variable read on every call (redaction asks for every
    record; reading all of the settings each time cost a fifth of building one), parsed once per value."""
    return _sensitive_key_patterns(os.environ.get(SENSITIVE_KEYS_ENV_VAR))


@functools.lru_cache(maxsize=8)
def _sensitive_key_patterns(value: str | None) -> tuple[str, ...]:
    """The patterns for this value of the variable (the cache key; the settings parse it)."""
    return get_settings().sensitive_key_patterns


_ENV_NAMES = tuple(f"{ENV_PREFIX}{name.upper()}" for name in ParallelSettings.model_fields)
"""The variables, spelled in capitals as documented (what the cache of parsed settings is keyed on)."""


@functools.lru_cache(maxsize=8)
def _parsed(values: tuple[str | None, ...]) -> ParallelSettings:
    """The settings for these variable values (the cache key; pydantic-settings reads them itself)."""
    try:
        return ParallelSettings()
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise ValueError(f"unusable environment variable(s): {problems}") from None


def openlineage_environment() -> dict[str, str]:
    """The OpenLineage client's variables as they are now (``OPENLINEAGE_URL``, ``OPENLINEAGE_DISABLED``,
    ``OPENLINEAGE_CONFIG``, ``OPENLINEAGE_NAMESPACE``, ``OPENLINEAGE__TRANSPORT__*``): the client reads and
    parses them itself; the package looks only whether they configure it, and at the jobs' namespace."""
    return {name: value for name, value in os.environ.items() if name.startswith("OPENLINEAGE")}
