"""HTTP clients for ``GET /v1/tasks/runs/{run_id}/input``, sync and async, over httpx.

Both clients share one core (:class:`_ClientCore`) that builds requests, reads capped bodies, turns
responses into models or errors, and plans retries with :mod:`parallel_tasks.retry`; only sending
and sleeping differ between them. The clients know nothing of Prefect.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import ipaddress
import json
import math
import re
import ssl
import sys
import time
import unicodedata
import urllib.request
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import httpcore
import httpx
import pydantic

from parallel_tasks._logging import debug_enabled, get_logger
from parallel_tasks._version import __version__
from parallel_tasks.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    InvalidRunIdError,
    ParallelError,
    RateLimitError,
    ResponseTooLargeError,
    ResponseValidationError,
    error_class_for_status,
)
from parallel_tasks.models import ErrorResponse, TaskRunInput
from parallel_tasks.redaction import scrub_secrets
from parallel_tasks.retry import RetryPolicy, parse_retry_after, plan_retry

if sys.version_info >= (3, 11):
    from asyncio import timeout as _timeout
else:  # the same API, from the package aiohttp itself depends on there
    from async_timeout import timeout as _timeout

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_READ_TIMEOUT",
    "MAX_CONCURRENCY",
    "AsyncParallelClient",
    "FetchResult",
    "ParallelClient",
    "run_input_path",
    "validate_base_url",
    "validate_run_id",
]

DEFAULT_BASE_URL = "https://api.parallel.ai"
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# Python 3.13 renamed these reasons (RFC 9110): keep one wording on every Python, so an error message, which
# failure records store, does not depend on the interpreter.
_REASONS = {
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    416: "Requested Range Not Satisfiable",
    422: "Unprocessable Entity",
}
MAX_RUN_ID_LENGTH = 256
MAX_CONCURRENCY = 1000
"""The most requests a batch may have in flight: each costs a worker, and past the pool's 100
connections more only wait for one."""
USER_AGENT = f"prefect-parallel-tasks/{__version__}"

_CHUNK = 64 * 1024
Headers = Mapping[str, str]
"""Response headers, case-insensitive (httpx's ``Headers`` or aiohttp's ``CIMultiDictProxy``)."""

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
    return _encoded_path(validate_run_id(run_id))


def _encoded_path(valid_run_id: str) -> str:
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


@dataclass(frozen=True)
class FetchResult:
    """The outcome of fetching one run's input: either ``run_input`` or ``error`` is set.

    Attributes:
        run_id: The run id as given.
        run_input: The parsed input on success.
        error: The final error (after retries) on failure.
        attempts: Requests made, retries included.
        elapsed_ms: Wall time of the whole fetch, waits included.
    """

    run_id: str
    run_input: TaskRunInput | None = None
    error: ParallelError | None = None
    attempts: int = 0
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the input was fetched."""
        return self.run_input is not None

    def unwrap(self) -> TaskRunInput:
        """The input, or the error raised."""
        if self.run_input is None:
            raise self.error or ParallelError(f"no input fetched for run {self.run_id!r}")
        return self.run_input


class _ClientCore:
    """Configuration, request building and response interpretation shared by both clients."""

    def __init__(
        self,
        api_key: str | None,
        *,
        base_url: str | httpx.URL = DEFAULT_BASE_URL,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_retries: int = 3,
        retry_policy: RetryPolicy | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        if max_response_bytes <= 0:
            raise ValueError(f"max_response_bytes must be > 0, got {max_response_bytes}")
        for name, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
        self._base_url = str(validate_base_url(base_url))
        self._api_key = api_key or None
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        self.max_response_bytes = max_response_bytes
        headers = {"user-agent": USER_AGENT, "accept": "application/json", **(default_headers or {})}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        self._headers = httpx.Headers(headers)
        self._log = get_logger(secrets=(self._api_key,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    @property
    def base_url(self) -> str:
        """The API's base URL (no trailing slash)."""
        return self._base_url

    def _request(self, run_id: str) -> httpx.Request:
        """The GET for an already validated run id, built directly (an httpx client's
        ``build_request`` costs several times more, and it runs for every request of a batch)."""
        url = httpx.URL(f"{self._base_url}{_encoded_path(run_id)}")
        return httpx.Request("GET", url, headers=self._headers, extensions={"timeout": self._timeout.as_dict()})

    def _limits(self) -> httpx.Limits:
        return httpx.Limits(max_connections=100, max_keepalive_connections=100)

    def _redact(self, value: Any) -> Any:
        """``value`` with the key in use masked: a server that echoes it back must not leak it."""
        return scrub_secrets(value, (self._api_key,))

    def _transport_error(self, run_id: str, exc: Exception) -> APIConnectionError:
        """An error for a failed exchange, built from the exception's type and text only:
        httpx exceptions hold the request, whose headers carry the key, so they are not chained."""
        timed_out = isinstance(exc, (httpx.TimeoutException, TimeoutError, asyncio.TimeoutError))
        cls = APITimeoutError if timed_out else APIConnectionError
        what = "timed out" if cls is APITimeoutError else "connection failed"
        detail = self._redact(str(exc)) or "no detail"
        return cls(f"Request {what} for run {run_id!r}: {type(exc).__name__}: {detail}", run_id=run_id)

    def _unusable_redirect(self, run_id: str, exc: httpx.InvalidURL) -> ResponseValidationError:
        """An httpx client prepares the next request of a redirect, even one it will not follow, and raises
        InvalidURL when the Location cannot be made a URL: the response's fault, not the transport's."""
        message = f"Redirect response for run {run_id!r} has a Location that is not a usable URL ({exc}); not followed"
        return ResponseValidationError(self._redact(message), run_id=run_id)

    def _check_declared_size(self, run_id: str, status: int, headers: Headers) -> None:
        declared = headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self.max_response_bytes:
            raise self._too_large(run_id, status, f"declares {declared} bytes")

    def _add_chunk(self, run_id: str, status: int, body: bytearray, chunk: bytes, started: float) -> None:
        """Grow the body by one chunk, refusing to go past the size cap or the overall deadline."""
        body += chunk
        if len(body) > self.max_response_bytes:
            raise self._too_large(run_id, status, "is larger")
        self._check_deadline(run_id, started)

    def _too_large(self, run_id: str, status_code: int, what: str) -> ResponseTooLargeError:
        return ResponseTooLargeError(
            f"Response for run {run_id!r} {what}, more than the {self.max_response_bytes}-byte cap"
            " (max_response_bytes); it was not read",
            run_id=run_id,
            status_code=status_code,
        )

    def _check_deadline(self, run_id: str, started: float) -> None:
        past = self._past_deadline(run_id, started)
        if past is not None:
            raise past

    def _past_deadline(self, run_id: str, started: float) -> APITimeoutError | None:
        """The error for a call whose overall deadline has passed, else ``None``."""
        deadline = self.retry_policy.deadline
        if deadline is not None and time.monotonic() - started > deadline:
            return APITimeoutError(
                f"Request timed out for run {run_id!r}: the overall {deadline:g}s deadline passed", run_id=run_id
            )
        return None

    def _interpret(self, run_id: str, status: int, headers: Headers, body: bytes) -> TaskRunInput:
        """The parsed input for a 2xx, else the matching error (raised)."""
        if 200 <= status < 300:
            return self._parse_run_input(run_id, status, headers, body)
        raise self._status_error(run_id, status, headers, body)

    def _parse_run_input(self, run_id: str, status: int, headers: Headers, body: bytes) -> TaskRunInput:
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
            error = ResponseValidationError(self._redact(message), run_id=run_id, status_code=status)
            # A body that is not JSON at all is most often a broken transfer or a proxy page: retry it.
            # One past the parser's limits is the same on every fetch: do not.
            error.retryable = not_json and not beyond
            raise error from None
        if (b"NaN" in body or b"Infinity" in body or _LARGE_NUMBER.search(body)) and _has_non_finite_number(body):
            message = (
                f"{status} response for run {run_id!r} holds NaN or Infinity, or a number too large for a"
                " 64-bit float (such as 1e400): JSON (RFC 8259) cannot hold it as it is, so it is refused, not changed"
            )
            raise ResponseValidationError(message, run_id=run_id, status_code=status)
        return run_input

    def _status_error(self, run_id: str, status: int, headers: Headers, body: bytes) -> APIStatusError:
        ref_id, message, detail = self._redact(_parse_error_body(body, headers))
        if 300 <= status < 400:
            message = (
                f"redirect to {_redirect_origin(headers)} not followed (the API key is sent to {self.base_url} only)"
            )
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
            response_headers=self._redact({k.lower(): v for k, v in headers.items()}),
            **kwargs,
        )

    def _retry_delay(self, error: APIError, attempts: int, started: float) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up (both logged)."""
        status = error.status_code if isinstance(error, APIStatusError) else None
        decision = plan_retry(
            self.retry_policy,
            retries_done=attempts - 1,
            elapsed=time.monotonic() - started,
            status_code=status,
            headers=error.response_headers if isinstance(error, APIStatusError) else None,
            retryable_failure=error.retryable and status is None,
        )
        if not decision.retry:
            self._log_failure(error, attempts, started, decision.reason)
            return None
        self._log.warning(
            "parallel.task_run_input.retry",
            run_id=error.run_id,
            attempt=attempts,
            status=status,
            error=type(error).__name__,
            delay_s=round(decision.delay, 3),
            reason=decision.reason,
        )
        return decision.delay

    def _checked(self, run_id: str) -> FetchResult | None:
        """A failed result for a run id refused before any request, else ``None``."""
        try:
            validate_run_id(run_id)
        except InvalidRunIdError as error:
            self._log_failure(error, 0, time.monotonic(), "invalid run id")
            return FetchResult(str(run_id), error=error)
        return None

    def _failed(self, run_id: str, error: APIError, attempts: int, started: float) -> FetchResult:
        # Outcomes are never chained (an httpx exception would carry the request's key); Python 3.10 can
        # chain one anyway: a coroutine resumed with throw() may keep an old exception as the one handled.
        error.__context__ = None
        return FetchResult(run_id, error=error, attempts=attempts, elapsed_ms=_ms(started))

    def _fetched(self, run_id: str, run_input: TaskRunInput, attempts: int, started: float, quiet: bool) -> FetchResult:
        elapsed_ms = _ms(started)
        if not quiet or debug_enabled():  # batches log each fetch at debug level, usually off
            log = self._log.debug if quiet else self._log.info
            log("parallel.task_run_input.fetched", run_id=run_id, status=200, attempt=attempts, elapsed_ms=elapsed_ms)
        return FetchResult(run_id, run_input=run_input, attempts=attempts, elapsed_ms=elapsed_ms)

    def _unexpected(self, run_id: str, error: Exception) -> FetchResult:
        """The outcome of a fetch that raised what ``fetch`` never should (a bug): logged, and kept as this
        run's error so a batch goes on. Not chained: an httpx exception would carry the request's key."""
        message = self._redact(f"Unexpected {type(error).__name__} while fetching run {run_id!r}: {error}")
        self._log.error("parallel.task_run_input.unexpected_error", run_id=run_id, error=message)
        return FetchResult(str(run_id), error=ParallelError(message))

    def _log_failure(self, error: ParallelError, attempts: int, started: float, reason: str) -> None:
        self._log.warning(
            "parallel.task_run_input.failed",
            run_id=getattr(error, "run_id", None),
            status=getattr(error, "status_code", None),
            attempt=attempts,
            elapsed_ms=_ms(started),
            error=str(error),
            reason=reason,
        )


def _parse_error_body(body: bytes, headers: Headers) -> tuple[str | None, str, dict[str, Any] | None]:
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
    return None, _describe_body(body, headers), None


# What a number that overflows a float looks like (1e400, 400 digits before the point): only a body
# that has one is parsed a second time.
_LARGE_NUMBER = re.compile(rb"[0-9][eE]\+?0*[1-9][0-9]{2}|[0-9]{300}")

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


def _has_non_finite_number(body: bytes) -> bool:
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


def _redirect_origin(headers: Headers) -> str:
    """Where a 3xx points, for its error message: ``scheme://host``, or why that cannot be said."""
    location = headers.get("location", "")
    try:
        target = httpx.URL(location)
    except (httpx.InvalidURL, ValueError):  # ValueError: UnicodeError for bytes that are not text
        return "an unusable Location"
    return f"{target.scheme}://{target.host}" if target.host else "the same origin"


def _describe_body(body: bytes, headers: Headers) -> str:
    """A short description of a body that is not the API's error envelope (an HTML proxy page)."""
    kind = headers.get("content-type", "no content type").split(";")[0]
    text = body[:4096].decode("utf-8", "replace")
    lowered = text.lower()
    start, end = lowered.find("<title>"), lowered.find("</title>")
    snippet = text[start + 7 : end] if 0 <= start < end else text
    snippet = " ".join(snippet.split())[:120]
    return f"non-JSON error body ({kind}, {len(body)} bytes)" + (f": {snippet}" if snippet else "")


class ParallelClient(_ClientCore):
    """Synchronous client for the Parallel Task API's run inputs.

    Args:
        api_key: The Parallel API key (sent as ``x-api-key``). ``None`` sends no key.
        base_url: The API's base URL; https unless the host is loopback.
        connect_timeout: Seconds to wait for a connection (finite, > 0).
        read_timeout: Seconds to wait for each read (also used for writes and the pool; finite, > 0).
        max_retries: Extra attempts for retryable failures (ignored when ``retry_policy`` is given).
        retry_policy: Full retry bounds.
        max_response_bytes: Bodies larger than this are refused without being read in full.
        default_headers: Extra headers for every request.
        http_client: An httpx client to use (not closed by this client).
        transport: An httpx transport for a client this one creates (tests, emulator).

    Example:
        >>> from parallel_tasks import ParallelClient
        >>> from parallel_tasks.emulator import Emulator
        >>> emulator = Emulator(api_keys=["demo-key"])  # serves the demo runs
        >>> with ParallelClient("demo-key", base_url="http://127.0.0.1", transport=emulator.transport()) as client:
        ...     run_input = client.get_task_run_input("trun_900d0000000000000000000000000001")
        >>> run_input.processor
        'core'
    """

    def __init__(
        self,
        api_key: str | None,
        *,
        http_client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        **options: Any,
    ) -> None:
        super().__init__(api_key, **options)
        self._owns_http = http_client is None
        if http_client is None and transport is None:
            transport = _deadline_transport(self._limits())
        self._http = http_client or httpx.Client(
            transport=transport, timeout=self._timeout, limits=self._limits(), follow_redirects=False
        )
        self._sleep = time.sleep

    def get_task_run_input(self, run_id: str) -> TaskRunInput:
        """Fetch what a run was started with.

        Raises:
            InvalidRunIdError: The run id was refused before any request.
            APIStatusError: The API answered with an error status (a subclass per status).
            APIConnectionError: No response (``APITimeoutError`` for timeouts), after retries.
            ResponseValidationError: A 2xx body that is not a TaskRunInput.
        """
        return self.fetch(run_id).unwrap()

    def fetch(self, run_id: str, *, quiet: bool = False) -> FetchResult:
        """Fetch one run's input and report the outcome instead of raising."""
        started, attempts = time.monotonic(), 0
        refused = self._checked(run_id)
        while refused is None:
            attempts += 1
            try:
                run_input = self._attempt(run_id, started)
            except APIError as error:
                delay = self._retry_delay(error, attempts, started)
                if delay is None:
                    return self._failed(run_id, error, attempts, started)
                self._sleep(delay)
                continue
            return self._fetched(run_id, run_input, attempts, started, quiet)
        return refused

    def _attempt(self, run_id: str, started: float) -> TaskRunInput:
        failure: APIError | None = None
        deadline = self.retry_policy.deadline
        context = _CALL_DEADLINE.set(None if deadline is None else started + deadline)
        try:
            response = self._http.send(self._request(run_id), stream=True, follow_redirects=False)
            try:
                self._check_declared_size(run_id, response.status_code, response.headers)
                body = bytearray()
                for chunk in response.iter_bytes():
                    self._add_chunk(run_id, response.status_code, body, chunk, started)
            finally:
                response.close()
        except (httpx.TransportError, httpx.DecodingError, OSError) as exc:
            failure = self._past_deadline(run_id, started) or self._transport_error(run_id, exc)
        except httpx.InvalidURL as exc:
            failure = self._unusable_redirect(run_id, exc)
        finally:
            _CALL_DEADLINE.reset(context)
        if failure is not None:
            raise failure
        return self._interpret(run_id, response.status_code, response.headers, bytes(body))

    def close(self) -> None:
        """Close the connection pool (only if this client created it)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> ParallelClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncParallelClient(_ClientCore):
    """Asynchronous client for the Parallel Task API's run inputs, with a batch API.

    Takes the same arguments as :class:`ParallelClient`, with an ``httpx.AsyncClient`` or an
    async transport. By default requests go through aiohttp, chosen by measurement (``benchmarks/``):
    httpx's own async transport collapses past about 32 concurrent requests (132 requests/s at 64 on a
    2-core machine, against about 1,000 for aiohttp), and driving aiohttp through httpx's objects
    (``httpx-aiohttp``) costs about a quarter more CPU per request. Pass an httpx ``transport``
    (``httpx.AsyncHTTPTransport()``, ``httpx_aiohttp.AiohttpTransport()``) or ``http_client`` to use
    httpx instead; the behaviour, errors and retries are the same either way. (aiohttp also resends a
    request once by itself when a reused keep-alive connection turns out to be closed, as RFC 9112
    allows for idempotent requests.)

    Example:
        >>> import asyncio
        >>> from parallel_tasks import AsyncParallelClient
        >>> from parallel_tasks.emulator import Emulator
        >>> emulator = Emulator(api_keys=["demo-key"])  # serves the demo runs
        >>> async def main():
        ...     async with AsyncParallelClient(
        ...         "demo-key", base_url="http://127.0.0.1", transport=emulator.async_transport()
        ...     ) as client:
        ...         return await client.get_task_run_inputs([*emulator.store.ids(), "trun_missing"], concurrency=4)
        >>> results = asyncio.run(main())
        >>> [result.ok for result in results].count(True), type(results[-1].error).__name__
        (12, 'NotFoundError')
    """

    def __init__(
        self,
        api_key: str | None,
        *,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Any,
    ) -> None:
        super().__init__(api_key, **options)
        # A given transport gets requests straight, without an AsyncClient: its cookie, auth and redirect
        # handling cost about as much as the request itself, and none of it is wanted here.
        self._http = http_client
        self._transport = None if http_client else transport
        self._session: aiohttp.ClientSession | None = None  # opened on first use, inside the event loop
        self._plain_headers = dict(self._headers)
        # The proxy for the one host this client talks to, from HTTP(S)_PROXY / NO_PROXY, looked up once
        # (aiohttp's trust_env would look it up, and read .netrc, in a thread for every request).
        self._proxy = _environment_proxy(self._base_url)
        self._aiohttp_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self._timeout.pool,
            sock_connect=self._timeout.connect,
            sock_read=self._timeout.read,
        )
        self._sleep = asyncio.sleep

    async def get_task_run_input(self, run_id: str) -> TaskRunInput:
        """Fetch what a run was started with. Raises as :meth:`ParallelClient.get_task_run_input`."""
        return (await self.fetch(run_id)).unwrap()

    async def fetch(self, run_id: str, *, quiet: bool = False) -> FetchResult:
        """Fetch one run's input and report the outcome instead of raising."""
        started, attempts = time.monotonic(), 0
        refused = self._checked(run_id)
        while refused is None:
            attempts += 1
            try:
                run_input = await self._attempt(run_id, started)
            except APIError as error:
                delay = self._retry_delay(error, attempts, started)
                if delay is None:
                    return self._failed(run_id, error, attempts, started)
                await self._sleep(delay)
                continue
            return self._fetched(run_id, run_input, attempts, started, quiet)
        return refused

    async def _attempt(self, run_id: str, started: float) -> TaskRunInput:
        failure: APIError | None = None
        try:
            if self._http is None and self._transport is None:
                status, headers, body = await self._exchange_aiohttp(run_id, started)
            else:
                status, headers, body = await self._exchange_httpx(run_id, started)
        except (httpx.TransportError, httpx.DecodingError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            failure = self._transport_error(run_id, exc)
        except httpx.InvalidURL as exc:
            failure = self._unusable_redirect(run_id, exc)
        if failure is not None:
            raise failure
        return self._interpret(run_id, status, headers, body)

    async def _exchange_aiohttp(self, run_id: str, started: float) -> tuple[int, Headers, bytes]:
        """One GET through aiohttp itself: the default, and the fastest way measured (see the class docs)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limits().max_connections or 100, ssl=_ssl_context()),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        url = f"{self._base_url}{_encoded_path(run_id)}"
        # A guard of our own on top of aiohttp's timeouts: some malformed responses (a 1xx with a large body,
        # a chunk longer than declared) stall aiohttp's parser with reading paused, where its sock_read
        # timer never runs. The guard allows connect + read at first, and read after the headers and each
        # chunk; it is moved only when that is later than its deadline (timers cost ~10% of a fast request).
        loop, read = asyncio.get_running_loop(), self._timeout.read or DEFAULT_READ_TIMEOUT
        guard = _timeout((self._timeout.connect or DEFAULT_CONNECT_TIMEOUT) + read)
        try:
            async with (
                guard,
                self._session.get(
                    url,
                    headers=self._plain_headers,
                    allow_redirects=False,
                    timeout=self._aiohttp_timeout,
                    proxy=self._proxy,
                ) as response,
            ):
                self._check_declared_size(run_id, response.status, response.headers)
                body = bytearray()
                _extend(guard, loop.time() + read)
                async for chunk in response.content.iter_chunked(_CHUNK):
                    self._add_chunk(run_id, response.status, body, chunk, started)
                    _extend(guard, loop.time() + read)
                return response.status, response.headers, bytes(body)
        except asyncio.TimeoutError:
            if _expired(guard):
                raise APITimeoutError(
                    f"Request timed out for run {run_id!r}: no progress for {read:g}s", run_id=run_id
                ) from None
            raise

    async def _exchange_httpx(self, run_id: str, started: float) -> tuple[int, Headers, bytes]:
        """One GET through the given httpx transport or client."""
        request = self._request(run_id)
        if self._transport is not None:
            response = await self._transport.handle_async_request(request)
        else:
            assert self._http is not None
            response = await self._http.send(request, stream=True, follow_redirects=False)
        try:
            self._check_declared_size(run_id, response.status_code, response.headers)
            body = bytearray()
            async for chunk in response.aiter_bytes():
                self._add_chunk(run_id, response.status_code, body, chunk, started)
        finally:
            await response.aclose()
        return response.status_code, response.headers, bytes(body)

    async def iter_task_run_inputs(
        self, run_ids: Iterable[str], *, concurrency: int = 16, quiet: bool = True
    ) -> AsyncIterator[FetchResult]:
        """Fetch many inputs, at most ``concurrency`` (1 to :data:`MAX_CONCURRENCY`) at a time, yielding each
        outcome as it completes.

        Run ids are drawn from ``run_ids`` lazily, so memory stays bounded by ``concurrency`` however
        many there are. A failure is a :class:`FetchResult` with ``error`` set; it never stops the others.
        """
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY}, got {concurrency}")
        # ``concurrency`` workers share one iterator of ids and hand their outcomes over a bounded queue:
        # constant work per run (waiting on a set of tasks costs in proportion to its size, per run).
        pending_ids = iter(run_ids)
        outcomes: asyncio.Queue[FetchResult | Exception | None] = asyncio.Queue(maxsize=concurrency)

        async def work() -> None:
            try:
                for run_id in pending_ids:
                    try:
                        result = await self.fetch(run_id, quiet=quiet)
                    except Exception as error:  # a bug, not a failed fetch: it costs this run only
                        result = self._unexpected(run_id, error)
                    await outcomes.put(result)
            except Exception as error:  # the run ids' iterable itself failed: surface it
                await outcomes.put(error)
            await outcomes.put(None)

        workers = [asyncio.ensure_future(work()) for _ in range(concurrency)]
        try:
            finished = 0
            while finished < concurrency:
                outcome = await outcomes.get()
                if outcome is None:
                    finished += 1
                elif isinstance(outcome, Exception):
                    raise outcome
                else:
                    yield outcome
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def get_task_run_inputs(self, run_ids: Iterable[str], *, concurrency: int = 16) -> list[FetchResult]:
        """Fetch many inputs concurrently; the outcomes come back in the order of ``run_ids``."""
        ids = list(run_ids)
        by_position: dict[int, FetchResult] = {}
        positions: dict[str, list[int]] = {}
        for position, run_id in enumerate(ids):
            positions.setdefault(str(run_id), []).append(position)
        async for result in self.iter_task_run_inputs(ids, concurrency=concurrency):
            by_position[positions[result.run_id].pop(0)] = result
        return [by_position[i] for i in range(len(ids))]

    async def aclose(self) -> None:
        """Close the connection pool (an injected ``http_client`` is left open)."""
        if self._session is not None:
            await self._session.close()
        if self._transport is not None:
            await self._transport.aclose()

    async def __aenter__(self) -> AsyncParallelClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


# The monotonic time by which the sync client's current call must end (None: no deadline); read by
# every socket operation of its default transport.
_CALL_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("parallel_call_deadline", default=None)


def _within_deadline(timeout: float | None, error: type[httpcore.TimeoutException]) -> float | None:
    """A socket operation's timeout, shortened to what is left of the current call's deadline."""
    deadline = _CALL_DEADLINE.get()
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise error("the overall deadline passed")
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose reads and writes also stop at the call's overall deadline: httpx's read timeout
    restarts with every byte, so a server trickling its headers a byte at a time could hold a call forever."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _within_deadline(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _within_deadline(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        timeout = _within_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """Opens :class:`_DeadlineStream` connections."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _within_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        timeout = _within_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _deadline_transport(limits: httpx.Limits) -> httpx.HTTPTransport:
    """httpx's own transport, its connections wrapped by :class:`_DeadlineBackend`. httpx has no option
    for a network backend; its pool keeps one in an attribute (a test fails if that ever changes)."""
    transport = httpx.HTTPTransport(limits=limits)
    pool = transport._pool
    backend = getattr(pool, "_network_backend", None)
    if isinstance(backend, httpcore.NetworkBackend):
        pool._network_backend = _DeadlineBackend(backend)
    return transport


def _extend(guard: Any, deadline: float) -> None:
    """Move a timeout's deadline to ``deadline`` if that is later (never earlier)."""
    if sys.version_info >= (3, 11):
        when = guard.when()
        if when is not None and when < deadline:
            guard.reschedule(deadline)
    else:  # async_timeout names them `deadline` and `update`
        when = guard.deadline
        if when is not None and when < deadline:
            guard.update(deadline)


def _expired(guard: Any) -> bool:
    """Whether the guard itself fired: a method of asyncio's timeout, a property of async_timeout's."""
    return bool(guard.expired() if sys.version_info >= (3, 11) else guard.expired)


def _environment_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url``, unless NO_PROXY exempts its host."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verified TLS context per process (the system's CAs, honouring SSL_CERT_FILE): loading
    certificates costs milliseconds, too much to pay per client."""
    return ssl.create_default_context()


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
