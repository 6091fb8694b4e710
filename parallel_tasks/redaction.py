"""Masking of secrets: in run-input records, in log events, and in error text.

This is the one place that decides what counts as a secret; lineage records, log processors and
the clients all call it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

__all__ = [
    "REDACTED",
    "RedactSecrets",
    "is_sensitive_key",
    "redact_run_input",
    "redact_text",
    "redact_url",
    "scrub_secrets",
]

REDACTED = "[REDACTED]"

# A key is credential-looking when one of its words (split on _ - . and camelCase) is one of these,
# or two adjacent words form one of the pairs: ``x-api-key`` and ``apiKey`` match, ``max_tokens`` does not.
_KEY_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_SENSITIVE_WORDS = frozenset(
    {
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "apikey",
        "authorization",
        "auth",
        "credential",
        "credentials",
        "cookie",
        "bearer",
        "signature",
    }
)
_SENSITIVE_PAIRS = frozenset(
    {("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key"), ("session", "id")}
)

# Shorter values would mask ordinary words; real keys are far longer.
_MIN_SECRET_LENGTH = 6


def is_sensitive_key(key: str) -> bool:
    """True for names such as ``api_key``, ``x-api-key``, ``Authorization``, ``access_token``."""
    words = [w.lower() for w in _KEY_WORDS.findall(key)]
    return any(w in _SENSITIVE_WORDS for w in words) or any(
        pair in _SENSITIVE_PAIRS for pair in itertools.pairwise(words)
    )


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each known secret in ``text``."""
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET_LENGTH and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _is_sensitive_query_name(name: str) -> bool:
    return is_sensitive_key(name) or name.lower() in {"key", "sig", "code"}


def redact_url(url: str) -> str:
    """Mask the user-info and the credential-looking query parameters of a URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = "&".join(
        f"{name}={REDACTED}" if sep and _is_sensitive_query_name(unquote_plus(name)) else f"{name}{sep}{value}"
        for name, sep, value in (piece.partition("=") for piece in parts.query.split("&"))
    )
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _scrub(value: Any, secrets: tuple[str, ...], mask_keys: bool) -> Any:
    """Replace known secrets inside every string of a JSON-like tree; with ``mask_keys``, also
    every value held under a credential-looking key."""
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if mask_keys and v is not None and is_sensitive_key(str(k)) else _scrub(v, secrets, mask_keys)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_scrub(v, secrets, mask_keys) for v in value]
    return value


def scrub_secrets(value: Any, secrets: Iterable[str | None]) -> Any:
    """A copy of a JSON-like value with every known secret replaced inside its strings."""
    return _scrub(value, tuple(s for s in secrets if s), mask_keys=False)


def redact_run_input(body: Mapping[str, Any], secrets: Iterable[str] = ()) -> dict[str, Any]:
    """A copy of a run-input JSON body that is safe to store and show.

    Masks every ``mcp_servers[*].headers`` value, metadata values under credential-looking keys,
    credentials inside MCP and webhook URLs, and any occurrence of a known secret (the API key).
    Keys are kept, so an auditor still sees which headers and metadata existed.
    """
    known = tuple(secrets)
    redacted: dict[str, Any] = _scrub(body, known, mask_keys=False)
    metadata = redacted.get("metadata")
    if isinstance(metadata, dict):
        redacted["metadata"] = {
            k: REDACTED if is_sensitive_key(k) and v is not None else v for k, v in metadata.items()
        }
    servers = redacted.get("mcp_servers")
    if isinstance(servers, list):
        redacted["mcp_servers"] = [_redact_mcp_server(s) if isinstance(s, dict) else s for s in servers]
    webhook = redacted.get("webhook")
    if isinstance(webhook, dict) and isinstance(webhook.get("url"), str):
        redacted["webhook"] = {**webhook, "url": redact_url(webhook["url"])}
    return redacted


def _redact_mcp_server(server: dict[str, Any]) -> dict[str, Any]:
    server = dict(server)
    headers = server.get("headers")
    if isinstance(headers, dict):
        server["headers"] = {k: REDACTED for k in headers}
    if isinstance(server.get("url"), str):
        server["url"] = redact_url(server["url"])
    return server


class RedactSecrets:
    """structlog processor: masks credential-looking keys and every known secret value.

    The secrets are held privately and never rendered; ``repr`` shows only how many there are.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets = tuple(s for s in secrets if s)

    def __repr__(self) -> str:
        return f"RedactSecrets(<{len(self._secrets)} secrets>)"

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        return _scrub(event_dict, self._secrets, mask_keys=True)
