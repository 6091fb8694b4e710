"""URL and run-id checks for the clients: what may be sent, and where (private; the client re-exports them)."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
import urllib.request
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

import httpx

from parallel_tasks.errors import InvalidRunIdError

MAX_RUN_ID_LENGTH = 256

_PLAIN_RUN_ID = re.compile(r"[A-Za-z0-9_\-]{1,256}")
_FORBIDDEN_RUN_ID_CHARS = frozenset("/?#%")
# Control, format, surrogate, private-use and unassigned code points, and every kind of space.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


def validate_run_id(run_id: object) -> str:
    """Return ``run_id`` if it is safe to put in a URL path, else raise :class:`InvalidRunIdError`.

    Refused: non-strings, the empty string, more than 256 characters, whitespace and control
    characters, ``/ ? # %``, and the dot segments ``.`` and ``..``.
    """
    if not isinstance(run_id, str):
        raise InvalidRunIdError(f"run_id must be a string, got {type(run_id).__name__}")
    if _PLAIN_RUN_ID.fullmatch(run_id):  # real ids (trun_ + hex) need no character-by-character check
        return run_id
    shown = repr(run_id[:80]) + ("..." if len(run_id) > 80 else "")
    if not run_id:
        raise InvalidRunIdError("run_id must not be empty")
    if len(run_id) > MAX_RUN_ID_LENGTH:
        raise InvalidRunIdError(f"run_id {shown} is {len(run_id)} characters long; the limit is 256")
    if run_id in (".", ".."):
        raise InvalidRunIdError(f"run_id {shown} is a path dot segment")
    for char in run_id:
        if char in _FORBIDDEN_RUN_ID_CHARS:
            raise InvalidRunIdError(f"run_id {shown} contains {char!r}, which is not allowed in a run id")
        if char.isspace() or unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise InvalidRunIdError(f"run_id {shown} contains a whitespace or control character {char!r}")
    return run_id


def run_input_path(run_id: str) -> str:
    """The request path for a run id, every byte outside the unreserved set percent-encoded."""
    return encoded_path(validate_run_id(run_id))


def encoded_path(valid_run_id: str) -> str:
    """The request path for a run id already validated."""
    return f"/v1/tasks/runs/{quote(valid_run_id, safe='')}/input"


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def validate_base_url(base_url: str | httpx.URL) -> httpx.URL:
    """Return the base URL without a trailing slash; https is required except for loopback hosts."""
    try:
        url = httpx.URL(str(base_url).rstrip("/"))
    except httpx.InvalidURL as exc:
        raise ValueError(f"base_url {str(base_url)!r} is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"base_url {str(base_url)!r} must be an absolute http(s) URL")
    if url.scheme == "http" and not _is_loopback(url.host):
        raise ValueError(f"base_url {str(base_url)!r} must use https: plain http is allowed only for loopback hosts")
    if url.query or url.fragment or url.userinfo:
        raise ValueError(f"base_url {str(base_url)!r} must not carry credentials, a query or a fragment")
    return url


def redirect_origin(headers: Mapping[str, str]) -> str:
    """Where a 3xx points, for its error message: ``scheme://host``, or why that cannot be said."""
    location = headers.get("location", "")
    try:
        target = httpx.URL(location)
    except (httpx.InvalidURL, ValueError):  # ValueError: UnicodeError for bytes that are not text
        return "an unusable Location"
    return f"{target.scheme}://{target.host}" if target.host else "the same origin"


def environment_proxy(url: str) -> str | None:
    """The HTTP(S) proxy the environment names for ``url``, unless NO_PROXY exempts its host. A value without a
    scheme is taken as ``http://`` (as curl and httpx take it); a SOCKS proxy is not used (neither transport
    speaks SOCKS without an extra package)."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    if "://" not in proxy:
        proxy = f"http://{proxy}"
    if proxy.split("://", 1)[0].lower() not in ("http", "https"):
        return None
    try:
        usable = bool(httpx.URL(proxy).host)
    except (httpx.InvalidURL, ValueError):
        usable = False
    if not usable:  # said once, here, without the credentials it may hold: not by every request that fails
        raise ValueError(f"The {parts.scheme} proxy the environment names is not a usable URL: {shown_proxy(proxy)}")
    return proxy


def shown_proxy(proxy: str) -> str:
    """A proxy URL as an error may show it: its scheme, host and port, never its credentials, path or query.
    The host is what follows the last ``@``: a password may hold ``/``, ``@`` or ``://``, and showing a wrong host
    for a proxy with an ``@`` in its path is better than showing part of a password."""
    scheme, separator, rest = proxy.partition("://")
    if not separator:
        scheme, rest = "http", proxy
    host = re.split(r"[/?#]", rest.rsplit("@", 1)[-1], maxsplit=1)[0]
    return f"{scheme}://{host}"
