"""The async client's default exchange: one GET through aiohttp itself (private).

Chosen by measurement (``benchmarks/``): httpx's own async transport collapses past about 32 concurrent
requests, and driving aiohttp through httpx's objects costs about a quarter more CPU per request. The body
checks (size cap, overall deadline) stay with the client, which passes itself in as ``checks``.
"""

from __future__ import annotations

import asyncio
import functools
import math
import ssl
import sys
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
import httpx
import yarl

from parallel_tasks.errors import APITimeoutError
from parallel_tasks.settings import DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT

if sys.version_info >= (3, 11):
    from asyncio import timeout as _timeout
else:  # the same API, from the package aiohttp itself depends on there
    from async_timeout import timeout as _timeout


def time_limit(seconds: float | None) -> Any:
    """An async context manager that raises ``TimeoutError`` past ``seconds`` (``None``: never), on every
    supported Python; :func:`expired` says afterwards whether it fired."""
    return _timeout(seconds)


CHUNK = 64 * 1024
Headers = Mapping[str, str]


class BodyChecks(Protocol):
    """What the exchange asks of the client while a body arrives."""

    def _check_declared_size(self, run_id: str, status: int, headers: Headers) -> None: ...

    def _add_chunk(self, run_id: str, status: int, body: bytearray, chunk: bytes, started: float) -> None: ...

    def _time_left(self, started: float) -> float | None: ...

    def _deadline_passed(self, run_id: str) -> APITimeoutError: ...


class AiohttpExchange:
    """A lazily opened aiohttp session for one base URL, with the client's headers, timeouts and proxy."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        timeout: httpx.Timeout,
        max_connections: int,
        proxy: str | None = None,
    ) -> None:
        self._base_url = base_url
        self._session: aiohttp.ClientSession | None = None  # opened on first use, inside the event loop
        self._max_connections = max_connections
        self._headers = dict(headers)
        # The client's proxy, looked up once (aiohttp's trust_env would look it up, and read .netrc, in a thread
        # for every request).
        self.proxy = proxy
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout.pool, sock_connect=timeout.connect, sock_read=timeout.read
        )
        self._connect = timeout.connect or DEFAULT_CONNECT_TIMEOUT
        self._read = timeout.read or DEFAULT_READ_TIMEOUT

    async def get(
        self, url: str | yarl.URL, run_id: str, started: float, checks: BodyChecks
    ) -> tuple[int, Headers, bytes]:
        """One GET: the status, the headers and the whole body (checked chunk by chunk)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=_ssl_context()),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,  # bodies are read as sent (see the client's accept-encoding)
            )
        # A guard of our own on top of aiohttp's timeouts: some malformed responses (a 1xx with a large body,
        # a chunk longer than declared) stall aiohttp's parser with reading paused, where its sock_read
        # timer never runs. The guard allows connect + read at first, and read after the headers and each
        # chunk; it is moved only when that is later than its deadline (timers cost ~10% of a fast request).
        # It never runs past the call's overall deadline either (a server trickling its headers would hold it).
        loop, read, left = asyncio.get_running_loop(), self._read, checks._time_left(started)
        end = math.inf if left is None else loop.time() + left
        guard = _timeout(min(self._connect + read, end - loop.time()))
        try:
            async with (
                guard,
                self._session.get(
                    url, headers=self._headers, allow_redirects=False, timeout=self._timeout, proxy=self.proxy
                ) as response,
            ):
                checks._check_declared_size(run_id, response.status, response.headers)
                body = bytearray()
                _extend(guard, min(loop.time() + read, end))
                async for chunk in response.content.iter_chunked(CHUNK):
                    checks._add_chunk(run_id, response.status, body, chunk, started)
                    _extend(guard, min(loop.time() + read, end))
                return response.status, response.headers, bytes(body)
        except asyncio.TimeoutError:
            if expired(guard):
                if loop.time() >= end:
                    raise checks._deadline_passed(run_id) from None
                raise APITimeoutError(
                    f"Request timed out for run {run_id!r} at {self._base_url}: no progress for {read:g}s",
                    run_id=run_id,
                ) from None
            raise

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


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


def expired(guard: Any) -> bool:
    """Whether the guard itself fired: a method of asyncio's timeout, a property of async_timeout's."""
    return bool(guard.expired() if sys.version_info >= (3, 11) else guard.expired)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verified TLS context per process (the system's CAs, honouring SSL_CERT_FILE): loading
    certificates costs milliseconds, too much to pay per client."""
    return ssl.create_default_context()
