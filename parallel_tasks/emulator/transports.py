"""The emulator as httpx transports: in-process, no socket, every fault played as a network would.

A ``reset`` surfaces as ``httpx.RemoteProtocolError`` while the body is read, as httpx raises it
when a server closes the connection before the promised Content-Length.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import anyio
import httpx

if TYPE_CHECKING:
    from .core import Emulator, EmulatorResponse

__all__ = ["AsyncEmulatorTransport", "EmulatorTransport"]

_RESET_MESSAGE = "peer closed connection without sending complete message body (emulated reset)"


def _target(request: httpx.Request) -> str:
    """The raw path (and query) of a request, as a server would read it from the request line."""
    return request.url.raw_path.decode("ascii")


class _SyncBody(httpx.SyncByteStream):
    """A response body played part by part, with pauses, ending in a reset if the plan says so."""

    def __init__(self, plan: EmulatorResponse, request: httpx.Request, sleep: Callable[[float], None]) -> None:
        self._plan, self._request, self._sleep = plan, request, sleep

    def __iter__(self) -> Iterator[bytes]:
        for index, part in enumerate(self._plan.parts()):
            if index and self._plan.chunk_delay_s:
                self._sleep(self._plan.chunk_delay_s)
            yield part
        if self._plan.reset_after is not None:
            raise httpx.RemoteProtocolError(_RESET_MESSAGE, request=self._request)


class _AsyncBody(httpx.AsyncByteStream):
    """The async twin of ``_SyncBody``."""

    def __init__(
        self, plan: EmulatorResponse, request: httpx.Request, sleep: Callable[[float], Awaitable[None]]
    ) -> None:
        self._plan, self._request, self._sleep = plan, request, sleep

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for index, part in enumerate(self._plan.parts()):
            if index and self._plan.chunk_delay_s:
                await self._sleep(self._plan.chunk_delay_s)
            yield part
        if self._plan.reset_after is not None:
            raise httpx.RemoteProtocolError(_RESET_MESSAGE, request=self._request)


class EmulatorTransport(httpx.BaseTransport):
    """A sync httpx transport answering from an ``Emulator``.

    Example:
        >>> from parallel_tasks.emulator import Emulator
        >>> client = httpx.Client(transport=Emulator().transport(), base_url="http://emulator")
    """

    def __init__(self, emulator: Emulator, *, sleep: Callable[[float], None] | None = None) -> None:
        """Create the transport.

        Args:
            emulator: The emulator to answer from.
            sleep: Used for latency and slow bodies; ``time.sleep`` (looked up now) unless a recorder is given.
        """
        self.emulator = emulator
        self._sleep = sleep or time.sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        plan = self.emulator.handle(request.method, _target(request), request.headers)
        if plan.delay_s:
            self._sleep(plan.delay_s)
        return httpx.Response(
            plan.status,
            headers=list(plan.headers),
            stream=_SyncBody(plan, request, self._sleep),
            request=request,
        )


class AsyncEmulatorTransport(httpx.AsyncBaseTransport):
    """An async httpx transport answering from an ``Emulator`` (asyncio or trio)."""

    def __init__(self, emulator: Emulator, *, sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        """Create the transport.

        Args:
            emulator: The emulator to answer from.
            sleep: Used for latency and slow bodies; ``anyio.sleep`` (looked up now) unless a recorder is given.
        """
        self.emulator = emulator
        self._sleep = sleep or anyio.sleep

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        plan = self.emulator.handle(request.method, _target(request), request.headers)
        if plan.delay_s:
            await self._sleep(plan.delay_s)
        return httpx.Response(
            plan.status,
            headers=list(plan.headers),
            stream=_AsyncBody(plan, request, self._sleep),
            request=request,
        )
