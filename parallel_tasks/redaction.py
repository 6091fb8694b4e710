"""The one redaction policy: what counts as a secret, and how it is masked at every exit.

Records, artifacts, events, log lines (ours and httpx/httpcore's), error texts and validation
findings all go through :class:`Redactor`. What it masks:

* every value under a credential-looking key, at any depth (``api_key``, ``{"password": ...}``,
  ``x-api-key``, ``passphrase``; extend the list with ``PARALLEL_SENSITIVE_KEYS``), and every
  MCP server header value;
* the secrets in use (the API key, and any other secret handed in), in any letter case, and any
  prefix of 8 or more of their characters (a truncated or upper-cased key is still the key);
* credentials inside URLs: user-info and credential-looking query parameters;
* in messages (errors, log lines, validation findings): ``key=value`` and ``"key": "value"`` pairs
  under credential-looking keys, and every value that was masked in the input it talks about.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from parallel_tasks.settings import SENSITIVE_KEYS_ENV_VAR, sensitive_key_patterns

if TYPE_CHECKING:
    from parallel_tasks.models import ValidationReport

__all__ = [
    "REDACTED",
    "SENSITIVE_KEYS_ENV_VAR",
    "RedactSecrets",
    "Redactor",
    "extra_sensitive_keys",
    "guard_library_logs",
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
        "passphrase",
        "passcode",
        "apikey",
        "authorization",
        "auth",
        "credential",
        "credentials",
        "cookie",
        "bearer",
        "signature",
        "privatekey",
        "accesskey",
        "jwt",
    }
)
_SENSITIVE_PAIRS = frozenset(
    {("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key"), ("session", "id")}
)

# A whole secret shorter than this would mask ordinary words; real keys are far longer.
_MIN_SECRET_LENGTH = 6
# A prefix of a secret this long is as good as the secret (a truncated key in a preview or log).
_MIN_SECRET_PREFIX = 8
# Past this many characters, a prefix match needs the rest of the secret whole (keeps the regex shallow).
_PREFIX_DEPTH = 128

# Schemes and keys are bounded: an unbounded run before a required ``://`` or ``:`` makes the regex retry from every
# character of a long word, quadratic in its length (a hostile body would stall a log line for minutes).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s\"'<>`]+")
# ``api_key=abc``, ``"password": "abc"``, ``token: abc`` in free text: the key, then the value.
_KEY_VALUE = re.compile(
    r"""(?P<quote>["']?)(?P<key>[A-Za-z][\w.-]{0,63})(?P=quote)(?P<sep>\s*[:=]\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|(?:(?:Bearer|Basic|Token)\s+)?[^\s,;&'"}\])]+)""",
    re.IGNORECASE,
)


def _already_masked(match: re.Match[str]) -> bool:
    """The value is the mask itself (masked by an earlier pass, a URL's query), not a value that starts with it."""
    text, start = match.string, match.start("value") + (match["value"][:1] in "\"'")
    end = start + len(REDACTED)
    return text.startswith(REDACTED, start) and (end == len(text) or text[end] in " \t\r\n,;&'\"}])")


def extra_sensitive_keys() -> tuple[str, ...]:
    """The user's own sensitive-key patterns, from ``PARALLEL_SENSITIVE_KEYS`` (comma-separated).

    A pattern matches a key holding its words in a row, in any case and spelling: ``ssn`` matches
    ``customer_ssn``; ``client id`` or ``client_id`` matches ``clientId`` and ``X-Client-Id``.
    """
    return sensitive_key_patterns()


def _words(key: str) -> tuple[str, ...]:
    return tuple(w.lower() for w in _KEY_WORDS.findall(key))


@functools.lru_cache(maxsize=4096)
def _is_sensitive(key: str, extra: tuple[str, ...]) -> bool:
    words = _words(key)
    if any(w in _SENSITIVE_WORDS for w in words) or any(p in _SENSITIVE_PAIRS for p in itertools.pairwise(words)):
        return True
    for pattern in extra:
        wanted = _words(pattern)
        if wanted and any(words[i : i + len(wanted)] == wanted for i in range(len(words) - len(wanted) + 1)):
            return True
    return False


def is_sensitive_key(key: str) -> bool:
    """True for names such as ``api_key``, ``x-api-key``, ``Authorization``, ``access_token``, and
    for the patterns in ``PARALLEL_SENSITIVE_KEYS``."""
    return _is_sensitive(key, extra_sensitive_keys())


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


def _prefix_regex(secret: str) -> str:
    """The secret, or any prefix of it of at least 8 characters."""
    if len(secret) < _MIN_SECRET_PREFIX:
        return re.escape(secret)
    head, middle, tail = secret[:_MIN_SECRET_PREFIX], secret[_MIN_SECRET_PREFIX:_PREFIX_DEPTH], secret[_PREFIX_DEPTH:]
    nested = f"(?:{re.escape(tail)})?" if tail else ""
    for char in reversed(middle):
        nested = f"(?:{re.escape(char)}{nested})?"
    return re.escape(head) + nested


@functools.lru_cache(maxsize=256)
def _secrets_regex(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    usable = sorted({s for s in secrets if len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True)
    if not usable:
        return None
    return re.compile("|".join(_prefix_regex(s) for s in usable), re.IGNORECASE)


def _json_path(parent: str, key: str | int) -> str:
    """The same paths validation findings use: ``$.a.b[3]``, ``$.a['b c']``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return parent + (_key_segment(key) if len(key) <= 64 else _key_segment.__wrapped__(key))


@functools.lru_cache(maxsize=4096)
def _key_segment(key: str) -> str:
    """A key's part of a JSON path (``.a``, ``['b c']``); remembered for short keys, which repeat in every
    input of a task spec (each node of every input gets a path)."""
    from parallel_tasks.validation import json_path

    return json_path(key)[1:]


# In a task spec's JSON schemas, the keys of these objects name properties: ``properties.password`` holds
# a subschema, not a password (the values inside it are still checked).
_SCHEMA_NAME_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_NAME_ENDINGS = tuple(ending for name in _SCHEMA_NAME_MAPS for ending in (f".{name}", f"['{name}']"))


def _holds_schema_names(path: str) -> bool:
    return path.startswith("$.task_spec.") and path.endswith(_SCHEMA_NAME_ENDINGS)


def _related(path: str, other: str) -> bool:
    """True when one path is the other or lies inside it."""
    short, long = sorted((path, other), key=len)
    return long == short or (long.startswith(short) and long[len(short)] in ".[")


class Redactor:
    """The redaction policy bound to the secrets in use (the API key; a webhook secret joins the same way).

    The secrets are held privately and never rendered; ``repr`` shows only how many there are.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets = tuple(dict.fromkeys(s for s in secrets if s))
        self._extra_keys = extra_sensitive_keys()  # read once per policy, not once per key

    def __repr__(self) -> str:
        return f"Redactor(<{len(self._secrets)} secrets>)"

    def with_secrets(self, more: Iterable[str | None]) -> Redactor:
        """The same policy, also masking ``more`` (values already masked in an input)."""
        return Redactor((*self._secrets, *more))

    def value_text(self, text: str) -> str:
        """A stored string: the secrets in use (and their prefixes) and credentials in URLs masked."""
        pattern = _secrets_regex(self._secrets)
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
        if "://" in text:
            text = _URL.sub(lambda m: redact_url(m.group()), text)
        return text

    def text(self, text: str) -> str:
        """A message (error, log line, finding): also ``key=value`` pairs under credential-looking keys."""
        text = self.value_text(text)
        return _KEY_VALUE.sub(self._mask_pair, text) if ("=" in text or ":" in text) else text

    def _mask_pair(self, match: re.Match[str]) -> str:
        if _already_masked(match) or not _is_sensitive(match["key"], self._extra_keys):
            return match.group()
        return f"{match['quote']}{match['key']}{match['quote']}{match['sep']}{REDACTED}"

    def tree(self, value: Any, *, messages: bool = False) -> Any:
        """A copy of a JSON-like tree: values under credential-looking keys and secrets in strings masked."""
        return self._walk(value, None, [], [], messages)

    def run_input(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], list[str], list[Any]]:
        """A run-input body safe to store: the redacted copy, the sorted JSON paths that were
        redacted, and the original values masked whole (for cleaning texts derived from them)."""
        paths: list[str] = []
        removed: list[Any] = []
        redacted: dict[str, Any] = self._walk(body, "$", paths, removed, False)
        servers = redacted.get("mcp_servers")
        if isinstance(servers, list):
            for index, server in enumerate(servers):
                headers = server.get("headers") if isinstance(server, dict) else None
                if isinstance(headers, dict):
                    originals = body["mcp_servers"][index]["headers"]
                    for name, original in originals.items():
                        if headers.get(name) != REDACTED:
                            paths.append(_json_path(_json_path(f"$.mcp_servers[{index}]", "headers"), name))
                            removed.append(original)
                    server["headers"] = dict.fromkeys(headers, REDACTED)
        return redacted, sorted(set(paths)), removed

    def _walk(self, value: Any, path: str | None, paths: list[str], removed: list[Any], messages: bool) -> Any:
        """Redact a tree; with a ``path`` (``$`` at the root), note the paths and values it masked."""
        if isinstance(value, str):
            masked = self.text(value) if messages else self.value_text(value)
            if masked != value and path is not None:
                paths.append(path)
            return masked
        if isinstance(value, Mapping):
            copy = {}
            names = path is not None and _holds_schema_names(path)
            for key, item in value.items():
                child = None if path is None else _json_path(path, str(key))
                if not names and item is not None and item != REDACTED and _is_sensitive(str(key), self._extra_keys):
                    copy[key] = REDACTED
                    if child is not None:
                        paths.append(child)
                        removed.append(item)
                else:
                    copy[key] = self._walk(item, child, paths, removed, messages)
            return copy
        if isinstance(value, (list, tuple)):
            return [
                self._walk(item, None if path is None else f"{path}[{i}]", paths, removed, messages)
                for i, item in enumerate(value)
            ]
        return value

    def report(
        self, report: ValidationReport, redacted_paths: Iterable[str], removed: Iterable[Any]
    ) -> ValidationReport:
        """Findings safe to store: a finding about a redacted value (or one holding it) loses its
        preview, and every masked value (quoted, whole, or cut to 8+ characters) leaves its texts."""
        paths = list(redacted_paths)
        values = list(_leaves(removed))
        strict = self.with_secrets(s for s in values if isinstance(s, str))
        quoted = sorted({form for v in values for form in _quoted_forms(v)}, key=len, reverse=True)

        def clean(text: str) -> str:
            for form in quoted:
                text = text.replace(form, REDACTED)
            return strict.text(text)

        violations = []
        for violation in report.violations:
            related = any(_related(violation.path, p) for p in paths)
            preview = REDACTED if related and violation.preview else clean(violation.preview)[:80]
            changes = {"path": clean(violation.path), "message": clean(violation.message), "preview": preview}
            violations.append(violation.model_copy(update=changes))
        return report.model_copy(update={"violations": tuple(violations)})


def _leaves(values: Iterable[Any]) -> Iterable[Any]:
    """Every scalar inside the masked values (a masked object may hold many)."""
    for value in values:
        if isinstance(value, Mapping):
            yield from _leaves(value.values())
        elif isinstance(value, (list, tuple)):
            yield from _leaves(value)
        elif value is not None and not isinstance(value, bool):
            yield value


def _quoted_forms(value: Any) -> set[str]:
    """How messages quote a value: Python's repr (jsonschema's messages) and JSON."""
    forms = {repr(value), json.dumps(value, ensure_ascii=False)}
    return {f for f in forms if len(f) >= (3 if isinstance(value, str) else 4)}


# --- the functions the rest of the package calls -------------------------------------------------


def redact_text(text: str, secrets: Iterable[str | None]) -> str:
    """A message with the secrets in use, credentials in URLs and ``key=value`` credentials masked."""
    return Redactor(secrets).text(text)


def scrub_secrets(value: Any, secrets: Iterable[str | None]) -> Any:
    """A copy of a JSON-like value (or a string) as safe to show as a message."""
    return Redactor(secrets).tree(value, messages=True)


def redact_run_input(body: Mapping[str, Any], secrets: Iterable[str | None] = ()) -> dict[str, Any]:
    """A copy of a run-input JSON body that is safe to store and show (see :meth:`Redactor.run_input`).

    Keys are kept, so an auditor still sees which headers and metadata existed.
    """
    return Redactor(secrets).run_input(body)[0]


class RedactSecrets:
    """structlog processor: masks credential-looking keys and every known secret value."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._redactor = Redactor(secrets)

    def __repr__(self) -> str:
        return f"RedactSecrets({self._redactor!r})"

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        return self._redactor.tree(event_dict, messages=True)


# --- other libraries' log lines ------------------------------------------------------------------

# httpx logs each request line; httpcore at DEBUG logs response headers (a server may echo the key
# in one, or in a Location). A filter on a logger sees only that logger's own records, so each is named.
_LIBRARY_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


class _LibraryLogFilter(logging.Filter):
    """Masks the secrets registered by this package's clients in other libraries' log records."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"_LibraryLogFilter(<{len(self.secrets)} secrets>)"

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            masked = Redactor(self.secrets).text(message)
            if masked != message:
                record.msg, record.args = masked, ()
        return True


_LIBRARY_FILTER = _LibraryLogFilter()


def guard_library_logs(secrets: Iterable[str | None]) -> None:
    """Mask these secrets in httpx's and httpcore's log records from now on (the secrets of every
    client made in this process; there are only ever a few)."""
    new = tuple(s for s in secrets if s and s not in _LIBRARY_FILTER.secrets)
    if new:
        _LIBRARY_FILTER.secrets = (*_LIBRARY_FILTER.secrets, *new)
    for name in _LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _LIBRARY_FILTER not in logger.filters:
            logger.addFilter(_LIBRARY_FILTER)
