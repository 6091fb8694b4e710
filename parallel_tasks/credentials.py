"""Where the API key comes from: a ``ParallelCredentials`` block, a plain ``Secret`` block, or the environment.

The key is unwrapped in one function only, :func:`_reveal`; everything else passes blocks around, so
the key never becomes a flow or task parameter and never reaches a log line.
"""

from __future__ import annotations

import json
from typing import Any, cast

from prefect.blocks.core import Block
from prefect.blocks.system import Secret
from pydantic import Field, HttpUrl, SecretStr, field_validator

from parallel_tasks.client import AsyncParallelClient, ParallelClient, validate_base_url
from parallel_tasks.errors import MissingCredentialsError
from parallel_tasks.settings import (
    API_KEY_ENV_VAR,
    BASE_URL_ENV_VAR,
    DEFAULT_BASE_URL,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT,
    WEBHOOK_SECRET_ENV_VAR,
    get_settings,
)

__all__ = [
    "API_KEY_ENV_VAR",
    "BASE_URL_ENV_VAR",
    "WEBHOOK_SECRET_ENV_VAR",
    "ParallelCredentials",
    "aresolve_credentials",
    "resolve_credentials",
    "resolve_webhook_secrets",
    "webhook_key",
]


class ParallelCredentials(Block):
    """Credentials and connection settings for the Parallel API.

    Attributes:
        api_key: The Parallel API key.
        base_url: The API's base URL.
        timeout: Seconds to wait for each read.
        connect_timeout: Seconds to wait for a connection.
        max_retries: Extra attempts the client makes for retryable failures.
        webhook_secret: The account's webhook secret, for the webhook receiver; several, separated by
            spaces, while a secret is being rotated.

    Example:
        Load stored credentials and fetch what a run was started with:
        ```python
        from parallel_tasks import ParallelCredentials

        parallel_credentials_block = ParallelCredentials.load("BLOCK_NAME")
        with parallel_credentials_block.get_client() as client:
            run_input = client.get_task_run_input("trun_0123456789abcdef0123456789abcdef")
        ```
    """

    _block_type_name = "Parallel Credentials"
    _block_type_slug = "parallel-credentials"
    _logo_url = HttpUrl("https://docs.parallel.ai/logo/parallel-logo-square.png")
    _documentation_url = HttpUrl("https://docs.parallel.ai/api-reference/tasks/retrieve-task-run-input")
    _description = "Credentials and connection settings for the Parallel Task API."

    api_key: SecretStr = Field(description="The Parallel API key, sent as the x-api-key header.")
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="The API's base URL; https is required unless the host is loopback.",
    )
    timeout: float = Field(default=DEFAULT_READ_TIMEOUT, gt=0, description="Seconds to wait for each read.")
    connect_timeout: float = Field(
        default=DEFAULT_CONNECT_TIMEOUT, gt=0, description="Seconds to wait for a connection."
    )
    max_retries: int = Field(
        default=DEFAULT_MAX_RETRIES, ge=0, le=10, description="Extra attempts the client makes for retryable failures."
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="The webhook secret the receiver verifies deliveries with (several, space-separated, "
        "during a rotation).",
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return str(validate_base_url(value))

    def _client_options(self, overrides: dict[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {
            "base_url": self.base_url,
            "read_timeout": self.timeout,
            "connect_timeout": self.connect_timeout,
            "max_retries": self.max_retries,
        }
        return {"api_key": _reveal(self.api_key), **options, **overrides}

    def secrets_in_use(self) -> tuple[str, ...]:
        """The secrets these credentials bring, for redaction to mask wherever they appear: the API key and
        the webhook secret(s), if any."""
        webhook = _split_secrets(self.webhook_secret) if self.webhook_secret else ()
        return (_reveal(self.api_key), *(_reveal(secret) for secret in webhook))

    def get_client(self, **overrides: Any) -> ParallelClient:
        """A synchronous client configured from this block (keyword arguments override it)."""
        return ParallelClient(**self._client_options(overrides))

    def get_async_client(self, **overrides: Any) -> AsyncParallelClient:
        """An asynchronous client configured from this block (keyword arguments override it)."""
        return AsyncParallelClient(**self._client_options(overrides))


def _reveal(secret: Any) -> str:
    """The one place a key leaves its secret wrapper. A ``Secret`` block's value may be JSON-like
    (``"12345"`` is stored as a number): it always comes back as a string."""
    value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise MissingCredentialsError(f"the stored API key must be a string, not {type(value).__name__}")
    return str(value)


_HOW = (
    "pass a ParallelCredentials block or its name, the name of a Secret block holding the key, "
    f"or set the {API_KEY_ENV_VAR} environment variable"
)


def _from_secret(secret: Secret[Any], base_url: str | None) -> ParallelCredentials:
    return ParallelCredentials(api_key=SecretStr(_reveal(secret.value)), base_url=base_url or DEFAULT_BASE_URL)


def _from_environment(base_url: str | None) -> ParallelCredentials:
    settings = get_settings()
    if settings.api_key is None:
        raise MissingCredentialsError(f"No Parallel API key was given: {_HOW}.")
    return ParallelCredentials(
        api_key=settings.api_key,
        base_url=base_url or settings.base_url,
        timeout=settings.read_timeout,
        connect_timeout=settings.connect_timeout,
        max_retries=settings.max_retries,
    )


def _resolved(credentials: Any, base_url: str | None) -> ParallelCredentials | None:
    """Credentials that need no loading, or ``None`` when ``credentials`` is a block name."""
    if isinstance(credentials, ParallelCredentials):
        return credentials
    if isinstance(credentials, Secret):
        return _from_secret(credentials, base_url)
    if credentials is None:
        return _from_environment(base_url)
    if not isinstance(credentials, str) or not credentials.strip():
        raise MissingCredentialsError(f"Unusable credentials {type(credentials).__name__!r}: {_HOW}.")
    return None


def _not_found(name: str) -> MissingCredentialsError:
    return MissingCredentialsError(f"No ParallelCredentials block and no Secret block is named {name!r}: {_HOW}.")


def resolve_credentials(
    credentials: ParallelCredentials | Secret[Any] | str | None = None, *, base_url: str | None = None
) -> ParallelCredentials:
    """Find the credentials to use, in order: a ``ParallelCredentials`` block (or the name of one),
    a ``Secret`` block (or the name of one) holding the key, then ``PARALLEL_API_KEY``.

    Args:
        credentials: A block, a block document name, or ``None`` for the environment.
        base_url: The API base URL when the key comes from a Secret block or the environment.

    Raises:
        MissingCredentialsError: No key was found; the message names all three ways to give one.
    """
    resolved = _resolved(credentials, base_url)
    if resolved is not None:
        return resolved
    name = str(credentials)
    try:
        return cast(ParallelCredentials, ParallelCredentials.load(name, _sync=True))  # type: ignore[call-arg]
    except ValueError:
        pass
    try:
        return _from_secret(cast("Secret[Any]", Secret.load(name, _sync=True)), base_url)  # type: ignore[call-arg]
    except ValueError:
        raise _not_found(name) from None


async def aresolve_credentials(
    credentials: ParallelCredentials | Secret[Any] | str | None = None, *, base_url: str | None = None
) -> ParallelCredentials:
    """Async twin of :func:`resolve_credentials`."""
    resolved = _resolved(credentials, base_url)
    if resolved is not None:
        return resolved
    name = str(credentials)
    try:
        return await ParallelCredentials.aload(name)
    except ValueError:
        pass
    try:
        return _from_secret(await Secret.aload(name), base_url)
    except ValueError:
        raise _not_found(name) from None


def webhook_key(secret: SecretStr) -> bytes:
    """The HMAC key of a webhook secret: its UTF-8 bytes as Parallel shows it (Parallel signs with exactly
    these bytes; it does not base64-decode a ``whsec_`` value as some Standard Webhooks senders do)."""
    return _reveal(secret).encode("utf-8")


def _split_secrets(value: Any) -> tuple[SecretStr, ...]:
    """One or several secrets (space-separated, or a list in a ``Secret`` block), each kept wrapped."""
    values = value if isinstance(value, list) else [value]
    return tuple(SecretStr(part) for item in values for part in _reveal(item).split())


def resolve_webhook_secrets(block: str | None = None) -> tuple[SecretStr, ...]:
    """The webhook secrets to verify deliveries with, in order: the ``webhook_secret`` of the
    ``ParallelCredentials`` block named ``block``, else the ``Secret`` block of that name (a string, or a
    list during a rotation); without a name, ``PARALLEL_WEBHOOK_SECRET`` (space-separated for several).

    Raises:
        MissingCredentialsError: No secret was found; the message says where it was looked for.
    """
    how = (
        f"set {WEBHOOK_SECRET_ENV_VAR}, or name a ParallelCredentials block with a webhook_secret "
        "or a Secret block holding it"
    )
    if block is None:
        secrets = _split_secrets(get_settings().webhook_secret or "")
    else:
        try:
            credentials = cast(ParallelCredentials, ParallelCredentials.load(block, _sync=True))  # type: ignore[call-arg]
            secrets = _split_secrets(credentials.webhook_secret) if credentials.webhook_secret else ()
        except ValueError:
            try:
                secret = cast("Secret[Any]", Secret.load(block, _sync=True))  # type: ignore[call-arg]
            except ValueError:
                raise MissingCredentialsError(f"No block is named {block!r}: {how}.") from None
            secrets = _split_secrets(secret.get())
    if not secrets:
        raise MissingCredentialsError(f"No webhook secret was found: {how}.")
    return secrets


async def aload_signing_secret(block_name: str) -> str:
    """The text of the Secret block that signs manifests (an HMAC key or an Ed25519 private key in PEM).

    Raises:
        ValueError: There is no Secret block of that name; the message names it, never its value.
    """
    block: Secret[Any] = await Secret.aload(block_name)
    value = block.get()
    return value if isinstance(value, str) else json.dumps(value)  # Secret.get() JSON-decodes "12345" to 12345
