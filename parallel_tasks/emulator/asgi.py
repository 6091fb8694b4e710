"""The emulator as a raw ASGI app: no framework, so a real server spends its time in HTTP, not routing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio

from .webhooks import ADMIN_PREFIX, handle_admin

if TYPE_CHECKING:
    from .core import Emulator

__all__ = ["EmulatorApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class EmulatorApp:
    """An ASGI 3 app that answers through ``Emulator.handle``.

    A ``reset`` fault returns without finishing the response, which makes the server drop the
    connection mid-body (uvicorn logs "ASGI callable returned without completing response.";
    ``run_emulator_server`` and the command filter that line out).
    """

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else quote(scope["path"])
        if path.startswith(ADMIN_PREFIX):
            await _admin(self.emulator, scope["method"], path.partition("?")[0], receive, send)
            return
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        plan = self.emulator.handle(scope["method"], path, headers)
        if plan.delay_s:
            await anyio.sleep(plan.delay_s)
        await send(
            {
                "type": "http.response.start",
                "status": plan.status,
                "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in plan.headers],
            }
        )
        parts = plan.parts()
        last = len(parts) - 1
        for index, part in enumerate(parts):
            if index and plan.chunk_delay_s:
                await anyio.sleep(plan.chunk_delay_s)
            more = index < last or plan.reset_after is not None
            await send({"type": "http.response.body", "body": part, "more_body": more})


async def _admin(emulator: Emulator, method: str, path: str, receive: Receive, send: Send) -> None:
    """The ``/_emulator/`` routes (completing runs, reading the webhook log); the body is capped at 64 KiB."""
    body = b""
    more = True
    while more and len(body) <= 65536:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    status, answer = (413, b"{}") if more else handle_admin(emulator.webhooks, method, path, body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge startup and shutdown: there is nothing to open or close."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
