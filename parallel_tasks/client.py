"""HTTP clients for ``GET /v1/tasks/runs/{run_id}/input``, sync and async, over httpx (or aiohttp).

Both clients share one core (:class:`_ClientCore`): configuration, requests, capped bodies, and the one
decision made after every attempt (:meth:`_ClientCore._next_step`: the result, or a wait and a retry planned
with :mod:`parallel_tasks.retry`). Only sending and sleeping differ between them. The checks of run ids and
URLs live in ``_urls``, reading responses in ``_responses``, the aiohttp exchange in ``_aiohttp``. The clients
know nothing of Prefect.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, TypeVar

import aiohttp
import httpx
import yarl

from parallel_tasks._aiohttp import AiohttpExchange, expired, time_limit
from parallel_tasks._batch import BatchFetching
from parallel_tasks._deadline import CALL_DEADLINE, deadline_transport
from parallel_tasks._logging import debug_enabled, get_logger
from parallel_tasks._responses import Headers, exchange_failure, interpret, too_large
from parallel_tasks._urls import (
    MAX_RUN_ID_LENGTH,
    encoded_path,
    environment_proxy,
    run_input_path,
    validate_base_url,
    validate_run_id,
)
from parallel_tasks._version import __version__
from parallel_tasks.errors import (
    APIError,
    APIStatusError,
    APITimeoutError,
    InvalidRunIdError,
    ParallelError,
)
from parallel_tasks.models import FetchResult, TaskRunInput
from parallel_tasks.redaction import scrub_secrets
from parallel_tasks.retry import RetryPolicy, plan_retry
from parallel_tasks.settings import (
    DEFAULT_BASE_URL,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT,
    MAX_CONCURRENCY,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_READ_TIMEOUT",
    "MAX_CONCURRENCY",
    "MAX_RUN_ID_LENGTH",
    "AsyncParallelClient",
    "FetchResult",
    "ParallelClient",
    "run_input_path",
    "validate_base_url",
    "validate_run_id",
]

USER_AGENT = f"prefect-parallel-tasks/{__version__}"

# What an exchange may raise when it got no usable response; an httpx.InvalidURL is a redirect whose
# Location cannot be made a URL (an httpx client prepares the next request even when not following it).
_SYNC_FAILURES = (httpx.TransportError, httpx.DecodingError, httpx.InvalidURL, OSError)
_ASYNC_FAILURES = (*_SYNC_FAILURES, aiohttp.ClientError, asyncio.TimeoutError)


@dataclass
class _Fetch:
    """One fetch in progress: its run id, when it started and how many requests it has made."""

    run_id: str
    quiet: bool
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0


HttpClient = TypeVar("HttpClient", httpx.Client, httpx.AsyncClient)
Transport = TypeVar("Transport", httpx.BaseTransport, httpx.AsyncBaseTransport)


class _ClientCore(Generic[HttpClient, Transport]):
    """Configuration, request building, body checks and the retry decision shared by both clients.
    Its arguments are the clients' (see :class:`ParallelClient`)."""

    def __init__(
        self,
        api_key: str | None,
        *,
        base_url: str | httpx.URL = DEFAULT_BASE_URL,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_policy: RetryPolicy | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        default_headers: Mapping[str, str] | None = None,
        http_client: HttpClient | None = None,
        transport: Transport | None = None,
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
        # Bodies are read as sent, never decompressed: a small compressed body could otherwise grow past the
        # size cap in memory before the cap saw it. So no encoding is asked for, and an encoded 2xx is refused.
        headers = {"user-agent": USER_AGENT, "accept": "application/json", **(default_headers or {})}
        headers["accept-encoding"] = "identity"
        if self._api_key:
            headers["x-api-key"] = self._api_key
        self._headers = httpx.Headers(headers)
        self._log = get_logger(secrets=(self._api_key,))
        # The environment's proxy, for the default transport only: a given transport or client brings its own.
        self._proxy = environment_proxy(self._base_url) if http_client is None and transport is None else None
        self._open(http_client, transport)

    def _open(self, http_client: HttpClient | None, transport: Transport | None) -> None:
        """Set up sending (each client's own)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    @property
    def base_url(self) -> str:
        """The API's base URL (no trailing slash)."""
        return self._base_url

    def _request(self, run_id: str) -> httpx.Request:
        """The GET for an already validated run id, built directly (an httpx client's
        ``build_request`` costs several times more, and it runs for every request of a batch)."""
        url = httpx.URL(f"{self._base_url}{encoded_path(run_id)}")
        return httpx.Request("GET", url, headers=self._headers, extensions={"timeout": self._timeout.as_dict()})

    def _limits(self) -> httpx.Limits:
        return httpx.Limits(max_connections=100, max_keepalive_connections=100)

    def _redact(self, value: Any) -> Any:
        """``value`` with the key in use masked: a server that echoes it back must not leak it."""
        return scrub_secrets(value, (self._api_key,))

    def _exchange_failure(self, run_id: str, exc: Exception) -> APIError:
        return exchange_failure(run_id, exc, redact=self._redact, base_url=self._base_url, proxy=self._proxy)

    def _check_declared_size(self, run_id: str, status: int, headers: Headers) -> None:
        declared = headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self.max_response_bytes:
            raise too_large(run_id, status, f"declares {declared} bytes", self.max_response_bytes)

    def _add_chunk(self, run_id: str, status: int, body: bytearray, chunk: bytes, started: float) -> None:
        """Grow the body by one chunk, refusing to go past the size cap or the overall deadline."""
        body += chunk
        if len(body) > self.max_response_bytes:
            raise too_large(run_id, status, "is larger", self.max_response_bytes)
        self._check_deadline(run_id, started)

    def _check_deadline(self, run_id: str, started: float) -> None:
        past = self._past_deadline(run_id, started)
        if past is not None:
            raise past

    def _time_left(self, started: float) -> float | None:
        """Seconds left before the call's overall deadline (``None``: no deadline)."""
        deadline = self.retry_policy.deadline
        return None if deadline is None else started + deadline - time.monotonic()

    def _past_deadline(self, run_id: str, started: float) -> APITimeoutError | None:
        """The error for a call whose overall deadline has passed, else ``None``."""
        left = self._time_left(started)
        return self._deadline_passed(run_id) if left is not None and left < 0 else None

    def _deadline_passed(self, run_id: str) -> APITimeoutError:
        message = f"the overall {self.retry_policy.deadline:g}s deadline passed"
        return APITimeoutError(f"Request timed out for run {run_id!r} at {self._base_url}: {message}", run_id=run_id)

    def _interpret(self, run_id: str, status: int, headers: Headers, body: bytes) -> TaskRunInput:
        """The parsed input for a 2xx, else the matching error (raised)."""
        return interpret(run_id, status, headers, body, redact=self._redact, base_url=self._base_url)

    def _next_step(self, fetch: _Fetch, outcome: TaskRunInput | APIError) -> FetchResult | float:
        """The one decision of both clients' fetch loops, made after each attempt: the final result,
        or the seconds to wait before the next attempt."""
        fetch.attempts += 1
        if isinstance(outcome, APIError):
            delay = self._retry_delay(outcome, fetch.attempts, fetch.started)
            if delay is None:
                return self._failed(fetch.run_id, outcome, fetch.attempts, fetch.started)
            return delay
        return self._fetched(fetch.run_id, outcome, fetch.attempts, fetch.started, fetch.quiet)

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
            error.server_refused_retry = decision.server_refused
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
        error.attempts = attempts  # so Prefect's task retries can tell what this client already retried
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


def _as_sent(response: httpx.Response) -> Iterator[bytes]:
    """The body as sent, never decompressed; a response read before it got here (a mock's) as it was read."""
    if response.is_stream_consumed:
        yield response.content
    else:
        yield from response.iter_raw()


async def _aiter_as_sent(response: httpx.Response) -> AsyncIterator[bytes]:
    """:func:`_as_sent` for the async client."""
    if response.is_stream_consumed:
        yield response.content
    else:
        async for chunk in response.aiter_raw():
            yield chunk


class ParallelClient(_ClientCore[httpx.Client, httpx.BaseTransport]):
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
        ...     run_input = client.get_task_run_input("trun_bbf5d6d60a5a8aca6d19f35c5426fab0")
        >>> run_input.processor
        'core'
    """

    def _open(self, http_client: httpx.Client | None, transport: httpx.BaseTransport | None) -> None:
        self._owns_http = http_client is None
        if http_client is None and transport is None:
            transport = deadline_transport(self._limits(), proxy=self._proxy)
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
        fetch = _Fetch(run_id, quiet)
        step: FetchResult | float | None = self._checked(run_id)
        while not isinstance(step, FetchResult):  # the decisions are _next_step's; this only sends and waits
            if step is not None:
                self._sleep(step)
            try:
                outcome: TaskRunInput | APIError = self._attempt(run_id, fetch.started)
            except APIError as error:
                outcome = error
            step = self._next_step(fetch, outcome)
        return step

    def _attempt(self, run_id: str, started: float) -> TaskRunInput:
        deadline = self.retry_policy.deadline
        context = CALL_DEADLINE.set(None if deadline is None else started + deadline)
        try:
            response = self._http.send(self._request(run_id), stream=True, follow_redirects=False)
            try:
                self._check_declared_size(run_id, response.status_code, response.headers)
                body = bytearray()
                for chunk in _as_sent(response):
                    self._add_chunk(run_id, response.status_code, body, chunk, started)
            finally:
                response.close()
        except _SYNC_FAILURES as exc:
            failure = self._past_deadline(run_id, started) or self._exchange_failure(run_id, exc)
        else:
            return self._interpret(run_id, response.status_code, response.headers, bytes(body))
        finally:
            CALL_DEADLINE.reset(context)
        raise failure  # outside the except block: the httpx exception (which holds the key) is not chained

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


class AsyncParallelClient(BatchFetching, _ClientCore[httpx.AsyncClient, httpx.AsyncBaseTransport]):
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

    def _open(self, http_client: httpx.AsyncClient | None, transport: httpx.AsyncBaseTransport | None) -> None:
        # A given transport gets requests straight, without an AsyncClient: its cookie, auth and redirect
        # handling cost about as much as the request itself, and none of it is wanted here.
        self._http = http_client
        self._transport = None if http_client else transport
        self._aiohttp = AiohttpExchange(
            self._base_url, self._headers, self._timeout, self._limits().max_connections or 100, self._proxy
        )
        self._sleep = asyncio.sleep

    async def get_task_run_input(self, run_id: str) -> TaskRunInput:
        """Fetch what a run was started with. Raises as :meth:`ParallelClient.get_task_run_input`."""
        return (await self.fetch(run_id)).unwrap()

    async def fetch(self, run_id: str, *, quiet: bool = False) -> FetchResult:
        """Fetch one run's input and report the outcome instead of raising."""
        fetch = _Fetch(run_id, quiet)
        step: FetchResult | float | None = self._checked(run_id)
        while not isinstance(step, FetchResult):  # the decisions are _next_step's; this only sends and waits
            if step is not None:
                await self._sleep(step)
            try:
                outcome: TaskRunInput | APIError = await self._attempt(run_id, fetch.started)
            except APIError as error:
                outcome = error
            step = self._next_step(fetch, outcome)
        return step

    async def _attempt(self, run_id: str, started: float) -> TaskRunInput:
        try:
            if self._http is None and self._transport is None:
                # Already encoded (the base URL by httpx, the path here): aiohttp need not parse it again.
                url = yarl.URL(f"{self._base_url}{encoded_path(run_id)}", encoded=True)
                status, headers, body = await self._aiohttp.get(url, run_id, started, self)
            else:
                status, headers, body = await self._exchange_httpx_in_time(run_id, started)
        except _ASYNC_FAILURES as exc:
            failure = self._exchange_failure(run_id, exc)
        else:
            return self._interpret(run_id, status, headers, body)
        raise failure  # outside the except block: the httpx exception (which holds the key) is not chained

    async def _exchange_httpx_in_time(self, run_id: str, started: float) -> tuple[int, Headers, bytes]:
        """:meth:`_exchange_httpx` within the overall deadline: httpx's read timeout starts again with every
        byte, so a server trickling its headers would otherwise hold the call without end."""
        guard = time_limit(self._time_left(started))  # not wait_for: it can swallow a cancellation (Python 3.11)
        try:
            async with guard:
                return await self._exchange_httpx(run_id, started)
        except asyncio.TimeoutError:
            if not expired(guard):  # not ours: a timeout httpx raised as asyncio's
                raise
            raise self._deadline_passed(run_id) from None

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
            async for chunk in _aiter_as_sent(response):
                self._add_chunk(run_id, response.status_code, body, chunk, started)
        finally:
            await response.aclose()
        return response.status_code, response.headers, bytes(body)

    async def aclose(self) -> None:
        """Close the connection pool (an injected ``http_client`` is left open)."""
        await self._aiohttp.close()
        if self._transport is not None:
            await self._transport.aclose()

    async def __aenter__(self) -> AsyncParallelClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
