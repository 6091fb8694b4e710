"""Response interpretation for the clients: a status and a body become a run input or the matching error,
and an exchange that failed becomes the matching error.

Pure functions of what came back (private; both clients call :func:`interpret`). Every text that may echo
the request back goes through ``redact`` first, so the key in use never reaches an error message.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import httpx
import pydantic

from parallel_tasks._urls import redirect_origin, shown_proxy
from parallel_tasks.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    RateLimitError,
    ResponseTooLargeError,
    ResponseValidationError,
    error_class_for_status,
)
from parallel_tasks.models import ErrorResponse, TaskRunInput
from parallel_tasks.retry import Failure, parse_retry_after

Headers = Mapping[str, str]
"""Response headers, case-insensitive (httpx's ``Headers`` or aiohttp's ``CIMultiDictProxy``)."""
Redact = Callable[[Any], Any]

# Python 3.13 renamed these reasons (RFC 9110): keep one wording on every Python, so an error message, which
# failure records store, does not depend on the interpreter.
_REASONS = {
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    416: "Requested Range Not Satisfiable",
    422: "Unprocessable Entity",
}


def interpret(
    run_id: str, status: int, headers: Headers, body: bytes, *, redact: Redact, base_url: str
) -> TaskRunInput:
    """The parsed input for a 2xx, else the matching error (raised)."""
    if 200 <= status < 300:
        encoding = (headers.get("content-encoding") or "identity").strip().lower()
        if encoding != "identity":
            message = f"Response for run {run_id!r} is {encoding[:40]!r}-encoded, though none was asked for: not read"
            raise ResponseValidationError(redact(message), run_id=run_id, status_code=status)
        return parse_run_input(run_id, status, headers, body, redact=redact)
    raise status_error(run_id, status, headers, body, redact=redact, base_url=base_url)


def exchange_failure(
    run_id: str, exc: Exception, *, redact: Redact, base_url: str, proxy: str | None = None
) -> APIError:
    """The error for an exchange that got no usable response, built from the exception's type and text only:
    httpx exceptions hold the request, whose headers carry the key, so they are never chained. It names the
    base URL it tried (which never holds a key: a URL with userinfo or a query is refused), and the proxy it
    went through, if any (without the proxy's credentials): a failing proxy is otherwise hard to tell apart."""
    if isinstance(exc, httpx.InvalidURL):
        # An httpx client prepares the next request of a redirect, even one it will not follow, and raises
        # InvalidURL when the Location cannot be made a URL: the response's fault, not the transport's.
        message = f"Redirect response for run {run_id!r} has a Location that is not a usable URL ({exc}); not followed"
        return ResponseValidationError(redact(message), run_id=run_id)
    timed_out = isinstance(exc, (httpx.TimeoutException, TimeoutError, asyncio.TimeoutError))
    cls = APITimeoutError if timed_out else APIConnectionError
    what = "timed out" if cls is APITimeoutError else "connection failed"
    detail = redact(str(exc)) or "no detail"
    where = base_url if proxy is None else f"{base_url} through the proxy {shown_proxy(proxy)}"
    return cls(f"Request {what} for run {run_id!r} at {where}: {type(exc).__name__}: {detail}", run_id=run_id)


def too_large(run_id: str, status_code: int, what: str, cap: int) -> ResponseTooLargeError:
    """The error for a body over the ``max_response_bytes`` cap."""
    return ResponseTooLargeError(
        f"Response for run {run_id!r} {what}, more than the {cap}-byte cap (max_response_bytes); it was not read",
        run_id=run_id,
        status_code=status_code,
    )


def parse_run_input(run_id: str, status: int, headers: Headers, body: bytes, *, redact: Redact) -> TaskRunInput:
    """A 2xx body as a run input, or a :class:`ResponseValidationError` saying why it is not one."""
    try:
        run_input = TaskRunInput.model_validate_json(body)
    except pydantic.ValidationError as exc:
        json_errors = [e["msg"] for e in exc.errors(include_url=False) if e["type"] == "json_invalid"]
        not_json = bool(json_errors)
        beyond = _beyond_parser_limits(json_errors)
        if beyond:
            message = f"{status} response for run {run_id!r} is JSON the parser refuses: {beyond}"
        elif not_json:
            kind = headers.get("content-type", "no content type")
            message = f"{status} response for run {run_id!r} is not valid JSON ({kind}, {len(body)} bytes)"
        else:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<body>'}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)[:5]
            )
            message = f"{status} response for run {run_id!r} does not match TaskRunInput: {problems}"
        # A body that is not JSON at all is most often a broken transfer or a proxy page: worth retrying.
        # One past the parser's limits is the same on every fetch: not.
        failure: Failure = "unreadable_body" if not_json and not beyond else "invalid_body"
        raise ResponseValidationError(redact(message), run_id=run_id, status_code=status, failure=failure) from None
    if _may_hold_non_finite(body) and has_non_finite_number(body):
        message = (
            f"{status} response for run {run_id!r} holds NaN or Infinity, or a number too large for a"
            " 64-bit float (such as 1e400): JSON (RFC 8259) cannot hold it as it is, so it is refused, not changed"
        )
        raise ResponseValidationError(message, run_id=run_id, status_code=status)
    return run_input


def status_error(
    run_id: str, status: int, headers: Headers, body: bytes, *, redact: Redact, base_url: str
) -> APIStatusError:
    """The error for a non-2xx response: its class by status, its message from the body (redacted)."""
    ref_id, message, detail = redact(parse_error_body(body, headers))
    if 300 <= status < 400:
        message = f"redirect to {redirect_origin(headers)} not followed (the API key is sent to {base_url} only)"
    cls = error_class_for_status(status)
    try:
        reason = _REASONS.get(status) or HTTPStatus(status).phrase
    except ValueError:
        reason = None
    kwargs: dict[str, Any] = {}
    if cls is RateLimitError:
        kwargs["retry_after"] = parse_retry_after(headers)
    return cls(
        message,
        status_code=status,
        run_id=run_id,
        ref_id=ref_id,
        detail=detail,
        reason=reason,
        response_headers=redact({k.lower(): v for k, v in headers.items()}),
        **kwargs,
    )


def parse_error_body(body: bytes, headers: Headers) -> tuple[str | None, str, dict[str, Any] | None]:
    """(ref_id, message, detail) from the spec's envelope, the envelope without ``type``, or any other body."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to decode (a broken proxy's page)
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        try:
            parsed = ErrorResponse.model_validate(data).error
            return parsed.ref_id, parsed.message, parsed.detail
        except pydantic.ValidationError:
            inner = data["error"]
            message = inner.get("message")
            return (
                inner.get("ref_id") if isinstance(inner.get("ref_id"), str) else None,
                message if isinstance(message, str) else json.dumps(inner)[:200],
                None,
            )
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return None, data["message"], None
    return None, describe_body(body, headers), None


# What a number that overflows a float looks like: an exponent of 100 or more (1e400), or else, with an exponent
# of at most 99, 210 digits or more before the point (a float ends near 1.8e308). Only a body that has one is
# parsed a second time. Two searches: one pattern with both alternatives costs twice as much.
_LARGE_EXPONENT = re.compile(rb"[0-9][eE]\+?0*[1-9][0-9]{2}")
_LONG_DIGITS_COUNT = 200
_LONG_DIGITS = re.compile(rb"[0-9]{%d}" % _LONG_DIGITS_COUNT)
# The plain search tries again at every digit of a shorter run: a large body of 199-digit runs would cost
# seconds on the event loop. Anchored at a run's first digit it stays linear, but costs twice as much on a
# typical small body, where the plain one's worst case is a few milliseconds.
_LONG_DIGITS_ANCHORED = re.compile(rb"(?<![0-9])[0-9]{%d}" % _LONG_DIGITS_COUNT)
_PLAIN_SEARCH_MAX_BYTES = 64 * 1024


def _may_hold_non_finite(body: bytes) -> bool:
    """A cheap first look for :func:`has_non_finite_number`: false for most bodies, true for every body that holds
    such a number."""
    return (
        b"NaN" in body
        or b"Infinity" in body
        or _LARGE_EXPONENT.search(body) is not None
        or (len(body) >= _LONG_DIGITS_COUNT and _long_digits(len(body)).search(body) is not None)
    )


def _long_digits(size: int) -> re.Pattern[bytes]:
    return _LONG_DIGITS if size <= _PLAIN_SEARCH_MAX_BYTES else _LONG_DIGITS_ANCHORED


# The JSON parser's messages for documents past its fixed limits, and what to say instead.
_PARSER_LIMITS = {
    "recursion limit exceeded": "arrays or objects are nested deeper than the parser allows",
    "number out of range": "a number has more digits than the parser allows (integers up to 4300 digits)",
}


def _beyond_parser_limits(json_errors: list[str]) -> str | None:
    """What is wrong with a body that is refused for being past the parser's limits, not for being broken."""
    for error in json_errors:
        for marker, meaning in _PARSER_LIMITS.items():
            if marker in error:
                return f"{meaning} ({error})"
    return None


def has_non_finite_number(body: bytes) -> bool:
    """Whether a body pydantic accepted holds a number a float cannot hold: NaN or Infinity spelled as a
    number (not inside a string), as Python's json.dumps writes them, or one that overflows (1e400).
    Pydantic takes them as floats, and a record would store them as null: the input changed silently."""

    def constant(text: str) -> float:
        raise _NonFinite(text)

    def number(text: str) -> float:
        value = float(text)
        if math.isinf(value):
            raise _NonFinite(text)
        return value

    try:
        json.loads(body, parse_constant=constant, parse_float=number)
    except _NonFinite:
        return True
    except (ValueError, RecursionError):
        return False  # pydantic's parser took it; the standard one cannot say more
    return False


class _NonFinite(Exception):
    pass


def describe_body(body: bytes, headers: Headers) -> str:
    """A short description of a body that is not the API's error envelope (an HTML proxy page)."""
    kind = headers.get("content-type", "no content type").split(";")[0]
    text = body[:4096].decode("utf-8", "replace")
    lowered = text.lower()
    start, end = lowered.find("<title>"), lowered.find("</title>")
    snippet = text[start + 7 : end] if 0 <= start < end else text
    snippet = " ".join(snippet.split())[:120]
    return f"non-JSON error body ({kind}, {len(body)} bytes)" + (f": {snippet}" if snippet else "")
