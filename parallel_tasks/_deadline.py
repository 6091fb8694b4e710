"""The sync client's overall deadline at the socket level (private).

httpx's read timeout restarts with every byte, so a server trickling its headers a byte at a time could hold
a call forever. The sync client sets :data:`CALL_DEADLINE` for each attempt; the default transport made by
:func:`deadline_transport` shortens every connect, read and write to what is left of it.
"""

from __future__ import annotations

import contextvars
import ssl
import time
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

# The monotonic time by which the sync client's current call must end (None: no deadline); read by
# every socket operation of its default transport.
CALL_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("parallel_call_deadline", default=None)


def _within_deadline(timeout: float | None, error: type[httpcore.TimeoutException]) -> float | None:
    """A socket operation's timeout, shortened to what is left of the current call's deadline."""
    deadline = CALL_DEADLINE.get()
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


def deadline_transport(limits: httpx.Limits, proxy: str | None = None) -> httpx.HTTPTransport:
    """httpx's own transport, through ``proxy`` if given, its connections wrapped by :class:`_DeadlineBackend`.
    httpx has no option for a network backend; its pool keeps one in an attribute (a test fails if that ever
    changes). httpx looks up the environment's proxy only for a client without a transport, so the caller
    passes it here."""
    transport = httpx.HTTPTransport(limits=limits, proxy=proxy)
    pool = transport._pool
    backend = getattr(pool, "_network_backend", None)
    if isinstance(backend, httpcore.NetworkBackend):
        pool._network_backend = _DeadlineBackend(backend)
    return transport
