"""The receiver of Parallel's signed webhooks: each verified ``task_run.status`` delivery becomes one Prefect event.

Parallel POSTs ``{"timestamp", "type": "task_run.status", "data": <Task Run>}`` when a run completes or fails,
signed the Standard Webhooks way: ``webhook-signature`` holds ``v1,<base64 HMAC-SHA256>`` entries over
``<webhook-id>.<webhook-timestamp>.<body>``, keyed with the webhook secret's UTF-8 bytes. This module checks
that (with the reference ``standardwebhooks`` package: constant-time comparison, five minutes of clock skew
either way), drops repeated deliveries, and emits ``parallel.task-run.completed`` or ``.failed`` on resource
``parallel.task-run.<run_id>``; a deployment trigger turns that event into a flow run that records the input.

The event id is derived from the webhook id, so a delivery repeated after a restart of the receiver is still one
event for Prefect (its server drops an event id it has seen). Refusals say nothing a forger could use: an empty
401 whatever failed, and nothing of a refused body reaches a log.

Run it with ``python -m parallel_tasks webhooks serve --port 8790`` (loopback; put TLS in front of it), or build
the ASGI app yourself with :func:`create_webhook_app`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook as _StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from parallel_tasks._logging import get_logger
from parallel_tasks.client import validate_run_id
from parallel_tasks.credentials import _reveal, resolve_webhook_secrets, webhook_key
from parallel_tasks.errors import InvalidRunIdError, MissingCredentialsError
from parallel_tasks.publishing import post_events
from parallel_tasks.reconcile import DEFAULT_DEPLOYMENT, reconcile_forever
from parallel_tasks.redaction import Redactor

if TYPE_CHECKING:
    from prefect.events import Event
    from starlette.applications import Starlette
    from starlette.requests import Request

__all__ = [
    "DEFAULT_PATH",
    "EVENT_ID_NAMESPACE",
    "MAX_BODY_BYTES",
    "Delivery",
    "DeliveryRefused",
    "EventSink",
    "RecentIds",
    "WebhookVerifier",
    "build_event",
    "create_webhook_app",
    "event_id_for",
]

MAX_BODY_BYTES = 1024 * 1024
"""A delivery's body is a Task Run object, a few KiB: anything over 1 MiB is refused unread."""
BODY_TIMEOUT_S = 10.0
"""How long a delivery's body may take to arrive once its headers have: a sender trickling it would otherwise hold
a connection, and up to a body's worth of memory, without end."""

EMIT_TIMEOUT_S = 10.0
"""The longest a delivery waits for the Prefect API to take its event, then 503: well inside a sender's own
timeout, so the sender retries rather than giving up on an answer that never came."""

DEFAULT_PATH = "/webhooks/parallel"
DEFAULT_PORT = 8790
EVENT_TYPES = {"completed": "parallel.task-run.completed", "failed": "parallel.task-run.failed"}
EVENT_ID_NAMESPACE = uuid.UUID("6f1d3c52-0b7e-5a2f-9d4e-7c8b1a2e3f40")
"""The namespace of ``uuid5(namespace, webhook_id)``: one webhook id, one Prefect event id, forever."""

_WEBHOOK_ID = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII, no spaces
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_MAX_SIGNATURE_HEADER = 4096

EventSink = Callable[["Event"], Awaitable[None]]
"""Where accepted deliveries go: by default Prefect's events client; tests and benchmarks pass their own."""


class DeliveryRefused(Exception):
    """A delivery that is not accepted. ``status`` is what the sender gets (with an empty body);
    ``reason`` is for this side's log only."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Delivery:
    """A verified delivery. ``data`` is ``None`` for an event type or status we do not act on."""

    webhook_id: str
    type: str
    data: Mapping[str, Any] | None


class WebhookVerifier:
    """Checks Standard Webhooks signatures against one or several secrets (several during a rotation).

    Example:
        >>> from pydantic import SecretStr
        >>> WebhookVerifier([SecretStr("secret-one"), SecretStr("secret-two")])
        WebhookVerifier(<2 secrets>)
    """

    def __init__(self, secrets: Iterable[SecretStr]) -> None:
        self._webhooks = tuple(_StandardWebhook(webhook_key(secret)) for secret in secrets)
        if not self._webhooks:
            raise MissingCredentialsError("A webhook receiver needs at least one webhook secret.")

    def __repr__(self) -> str:
        return f"WebhookVerifier(<{len(self._webhooks)} secrets>)"

    def verify(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        """The delivery, if it is signed with one of the secrets within the time tolerance and well formed.

        Raises:
            DeliveryRefused: 401 for anything about the signature, its headers or its timestamp; 400 for a
                signed body that is not a JSON object or lacks a usable run id.
        """
        webhook_id = headers.get("webhook-id") or ""
        timestamp = headers.get("webhook-timestamp") or ""
        signature = headers.get("webhook-signature") or ""
        if not (_WEBHOOK_ID.fullmatch(webhook_id) and _TIMESTAMP.fullmatch(timestamp)):
            raise DeliveryRefused(401, "missing or malformed webhook-id or webhook-timestamp")
        if not signature or len(signature) > _MAX_SIGNATURE_HEADER:
            raise DeliveryRefused(401, "missing or oversized webhook-signature")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise DeliveryRefused(401, "body is not UTF-8, so it cannot have been signed") from None
        stamped = {"webhook-id": webhook_id, "webhook-timestamp": timestamp}
        if not any(
            _verifies(webhook, text, {**stamped, "webhook-signature": entry})
            for entry in signature.split(" ")
            for webhook in self._webhooks
        ):
            raise DeliveryRefused(401, "no valid signature within the time tolerance")
        return _parse(webhook_id, text)


def _verifies(webhook: _StandardWebhook, text: str, headers: dict[str, str]) -> bool:
    """Whether one signature entry verifies. One entry at a time: the library gives up on the whole header at the
    first malformed entry, which would hide a valid one after it."""
    try:
        webhook.verify(text, headers, json_parse=False)
    except (WebhookVerificationError, ValueError):  # ValueError: a malformed entry or bad base64
        return False
    return True


def _parse(webhook_id: str, text: str) -> Delivery:
    """A signed body as a delivery; 400 when it is not what Parallel sends."""
    try:
        body = json.loads(text)
    except ValueError:
        raise DeliveryRefused(400, "signed body is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise DeliveryRefused(400, "signed body is not an object with a type")
    if body["type"] != "task_run.status":
        return Delivery(webhook_id, body["type"], None)
    data = body.get("data")
    if not isinstance(data, dict):
        raise DeliveryRefused(400, "task_run.status without a data object")
    try:
        validate_run_id(data.get("run_id"))
    except InvalidRunIdError:
        raise DeliveryRefused(400, "task_run.status without a usable run_id") from None
    if data.get("status") not in EVENT_TYPES:
        return Delivery(webhook_id, body["type"], None)
    return Delivery(webhook_id, body["type"], {**data, "timestamp": body.get("timestamp")})


def event_id_for(webhook_id: str) -> uuid.UUID:
    """The Prefect event id of a delivery: the same for every delivery of one webhook id."""
    return uuid.uuid5(EVENT_ID_NAMESPACE, webhook_id)


def _label(value: Any) -> str:
    return value if isinstance(value, str) else ""


def build_event(delivery: Delivery, redactor: Redactor | None = None) -> Event:
    """The Prefect event of an actionable delivery; its payload passes the project's redaction policy
    (``redactor``: the policy bound to the webhook secrets; by default one that knows no secret)."""
    from prefect.events import Event

    data = delivery.data or {}
    run_id, status = data["run_id"], data["status"]
    fields = ("status", "is_active", "processor", "metadata", "created_at", "modified_at", "timestamp")
    payload = {key: data.get(key) for key in fields}
    if data.get("error") is not None:
        payload["error"] = data["error"]
    payload = (redactor or Redactor()).tree(payload)
    payload["webhook_id"] = delivery.webhook_id
    return Event(
        id=event_id_for(delivery.webhook_id),
        event=EVENT_TYPES[status],  # occurred: now, the receipt (a late retry must still reach reactive triggers)
        resource={
            "prefect.resource.id": f"parallel.task-run.{run_id}",
            "prefect.resource.name": run_id,
            "parallel.task-run.id": run_id,
            "parallel.task-run.status": status,
            "parallel.task-run.processor": _label(data.get("processor")),
        },
        payload=payload,
    )


class RecentIds:
    """The webhook ids seen lately, oldest forgotten first: a bounded window for dropping duplicates.

    An id is claimed before its event is sent and released if sending fails, so a retry is not mistaken
    for a duplicate and two concurrent copies never both get through.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._ids: OrderedDict[str, bool] = OrderedDict()  # id -> its event is still being sent

    def claim(self, webhook_id: str) -> bool:
        """True the first time an id is seen (within the window), False for a duplicate."""
        if webhook_id in self._ids:
            return False
        self._ids[webhook_id] = True
        if len(self._ids) > self.limit:
            self._ids.popitem(last=False)
        return True

    def in_flight(self, webhook_id: str) -> bool:
        """Whether the id's first copy is still being sent (its fate, and so the copy's, is not known yet)."""
        return self._ids.get(webhook_id, False)

    def settle(self, webhook_id: str) -> None:
        """The id's event was sent: later copies are plain duplicates."""
        if webhook_id in self._ids:
            self._ids[webhook_id] = False

    def release(self, webhook_id: str) -> None:
        """Forget an id whose event could not be sent, so the sender's retry is accepted."""
        self._ids.pop(webhook_id, None)

    def __len__(self) -> int:
        return len(self._ids)


async def _read_in_time(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body within ``timeout_s``, else a 408."""
    try:
        return await asyncio.wait_for(_read_capped(request, limit), timeout_s)
    except asyncio.TimeoutError:
        raise DeliveryRefused(408, f"body not received within {timeout_s:g} s") from None


async def _read_capped(request: Request, limit: int) -> bytes:
    """The body, or a 413 as soon as it (or its declared length) passes ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise DeliveryRefused(413, "declared body over the limit")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise DeliveryRefused(413, "body over the limit")
    return bytes(body)


@asynccontextmanager
async def _prefect_sink() -> AsyncIterator[EventSink]:
    """Each event posted to the Prefect API, which answers once it has taken it: the delivery is acknowledged only
    then. (Prefect's streaming events client returns as soon as the event is on its socket; an event lost with
    that connection would be a delivery acknowledged to Parallel and never audited.)"""
    from prefect.client.orchestration import get_client

    async with get_client() as client:

        async def emit(event: Event) -> None:
            await post_events(client, [event.model_dump(mode="json")])

        yield emit


def create_webhook_app(
    secrets: Iterable[SecretStr],
    *,
    sink: EventSink | None = None,
    path: str = DEFAULT_PATH,
    max_body_bytes: int = MAX_BODY_BYTES,
    body_timeout_s: float = BODY_TIMEOUT_S,
    recent: RecentIds | None = None,
    reconcile_every: float | None = None,
    deployment: str = DEFAULT_DEPLOYMENT,
) -> Starlette:
    """The receiver as a Starlette app: ``POST {path}`` takes deliveries, ``GET /healthz`` answers ``ok``.

    Args:
        secrets: The webhook secrets (several during a rotation); see :func:`resolve_webhook_secrets`.
        sink: Where events go; by default Prefect's events client for ``PREFECT_API_URL``, opened at startup.
        path: The route Parallel posts to.
        max_body_bytes: Larger bodies are refused with 413 before they are read in full.
        body_timeout_s: A body not received in full this long after its headers is refused with 408.
        recent: The duplicate window (a fresh one of 100,000 ids by default).
        reconcile_every: Seconds between passes of :func:`parallel_tasks.reconcile.reconcile_once` for
            ``deployment`` while the app runs (``None``: no reconciliation).
        deployment: The deployment the events' trigger runs (``flow/deployment``).

    Answers: 204 for an accepted, repeated or ignored delivery; 401, 400, 408 or 413 with an empty body for a
    refused one; 503 when the event could not be sent (the sender retries, and the retry is not a duplicate).
    """
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    secrets = tuple(secrets)
    verifier = WebhookVerifier(secrets)
    known = tuple(_reveal(s) for s in secrets)  # only ever handed to the redaction, never logged
    redactor = Redactor(known)
    seen = recent or RecentIds()
    logger = get_logger(secrets=known)
    emit: list[EventSink] = [sink] if sink else []

    async def receive(request: Request) -> Response:
        try:
            body = await _read_in_time(request, max_body_bytes, body_timeout_s)
            delivery = verifier.verify(request.headers, body)
        except DeliveryRefused as refused:
            logger.warning("parallel.webhook.refused", status=refused.status, reason=refused.reason)
            return Response(status_code=refused.status)
        if delivery.data is None:
            logger.info("parallel.webhook.ignored", webhook_id=delivery.webhook_id, type=delivery.type)
            return Response(status_code=204)
        if not seen.claim(delivery.webhook_id):
            if seen.in_flight(delivery.webhook_id):  # acknowledging it now would lose it if the first copy fails
                logger.info("parallel.webhook.in_flight", webhook_id=delivery.webhook_id)
                return Response(status_code=409)
            logger.info("parallel.webhook.duplicate", webhook_id=delivery.webhook_id)
            return Response(status_code=204)
        event = build_event(delivery, redactor)
        try:
            await asyncio.wait_for(emit[0](event), EMIT_TIMEOUT_S)
        except Exception as error:
            seen.release(delivery.webhook_id)
            logger.error("parallel.webhook.emit_failed", webhook_id=delivery.webhook_id, error=type(error).__name__)
            return Response(status_code=503)
        seen.settle(delivery.webhook_id)
        logger.info(
            "parallel.webhook.accepted",
            webhook_id=delivery.webhook_id,
            run_id=event.resource.id.removeprefix("parallel.task-run."),
            prefect_event=event.event,
        )
        return Response(status_code=204)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with _reconciling(reconcile_every, deployment):
            if emit:
                yield
                return
            async with _prefect_sink() as prefect_emit:
                emit.append(prefect_emit)
                try:
                    yield
                finally:
                    emit.clear()

    routes = [Route(path, receive, methods=["POST"]), Route("/healthz", health, methods=["GET"])]
    return Starlette(routes=routes, lifespan=lifespan)


@asynccontextmanager
async def _reconciling(every_s: float | None, deployment: str) -> AsyncIterator[None]:
    """Reconcile in the background while the app runs (see :mod:`parallel_tasks.reconcile`)."""
    if not every_s:
        yield
        return
    task = asyncio.create_task(reconcile_forever(every_s, deployment))
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


# -- the command ---------------------------------------------------------------------------------------------


def add_commands(commands: Any) -> None:
    """``webhooks serve``, under the package's command line."""
    webhooks = commands.add_parser("webhooks", help="receive Parallel's signed webhooks")
    actions = webhooks.add_subparsers(dest="webhooks_command", required=True)
    serve = actions.add_parser("serve", help="serve the receiver until interrupted; prints its URL first")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any)")
    serve.add_argument("--path", default=DEFAULT_PATH, help=f"the route deliveries come to (default {DEFAULT_PATH})")
    serve.add_argument(
        "--block",
        metavar="NAME",
        help="a ParallelCredentials block with a webhook_secret, or a Secret block holding the secret "
        "(default: the PARALLEL_WEBHOOK_SECRET environment variable)",
    )
    serve.add_argument(
        "--deployment",
        default=DEFAULT_DEPLOYMENT,
        help=f"the deployment the events' trigger runs, for the reconciliation (default {DEFAULT_DEPLOYMENT})",
    )
    serve.add_argument(
        "--reconcile-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="look for completed runs whose trigger started no flow run, and start it, this often "
        "(default 60; 0: never)",
    )
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    """Resolve the secret, bind, print the delivery URL, serve until SIGINT or SIGTERM."""
    import logging
    import socket

    import uvicorn
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        print("PREFECT_API_URL is not set: the receiver sends its events to a Prefect server", file=sys.stderr)
        return 1
    try:
        secrets = resolve_webhook_secrets(args.block)
    except MissingCredentialsError as error:
        print(f"webhooks serve: {error}", file=sys.stderr)
        return 1
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request to the Prefect API
    app = create_webhook_app(secrets, path=args.path, reconcile_every=args.reconcile_every, deployment=args.deployment)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=False, server_header=False)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))  # bound before printing, so port 0 prints the port really used
    host, port = sock.getsockname()[:2]
    print(f"http://{f'[{host}]' if ':' in host else host}:{port}{args.path}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
