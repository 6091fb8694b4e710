"""The emulator's webhooks: "complete" a run and POST a signed ``task_run.status`` delivery, as Parallel does.

Deliveries follow Standard Webhooks, signed with the secret's UTF-8 bytes (Parallel's scheme): headers
``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64>``. Like Parallel, the sender retries
an answer other than 2xx (or no answer) with exponential backoff, up to ``max_attempts``, re-signing each attempt
with a fresh timestamp and the same webhook id. Faults, drawn per delivery from the seed or asked for per call:

- ``duplicate``: the same delivery (same webhook id) is sent once more after the first;
- ``out_of_order``: the delivery is held back ``hold_ms`` so that later ones overtake it;
- ``bad_signature``: an extra delivery signed with a wrong secret (a forgery; sent once, never retried);
- ``stale_timestamp``: an extra delivery signed correctly ten minutes in the past (a replay; sent once).

Sending happens on the sender's own thread and event loop, so the ASGI app, the command and in-process tests all
drive it alike. Example:

    >>> from parallel_tasks.emulator import RunStore
    >>> sender = WebhookSender(RunStore({"trun_1": {"processor": "base", "input": "2+2?"}}), secret="s3cret-value")
    >>> sender.url is None and sender.eligible("trun_1")
    False
    >>> sender.close()
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from standardwebhooks.webhooks import Webhook as _StandardWebhook

from .faults import unit_draw
from .store import RunStore

__all__ = ["ADMIN_PREFIX", "DeliveryAttempt", "WebhookFaults", "WebhookSender", "handle_admin"]

ADMIN_PREFIX = "/_emulator/"
DeliveryKind = Literal["genuine", "duplicate", "forged", "stale"]
_FAULTS = ("duplicate", "out_of_order", "bad_signature", "stale_timestamp")
_STALE_BY = timedelta(minutes=10)


@dataclass(frozen=True)
class WebhookFaults:
    """Probabilities, per completed run, of each delivery fault (see the module docstring)."""

    duplicate: float = 0.0
    out_of_order: float = 0.0
    bad_signature: float = 0.0
    stale_timestamp: float = 0.0
    hold_ms: float = 500.0

    def __post_init__(self) -> None:
        for name in _FAULTS:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"webhook fault rate {name} must be within 0..1, got {getattr(self, name)}")


@dataclass(frozen=True)
class DeliveryAttempt:
    """One POST the sender made: which delivery, what kind, which attempt, and the answer (or the error)."""

    webhook_id: str
    run_id: str
    kind: DeliveryKind
    attempt: int
    status: int | None
    error: str | None = None
    time: float = field(default_factory=time.time)


class WebhookSender:
    """Sends signed ``task_run.status`` deliveries for the runs of a store.

    Args:
        store: The runs; a run's ``processor`` and ``metadata`` go into its delivery.
        secret: The webhook secret deliveries are signed with (its UTF-8 bytes are the key).
        url: Where every delivery goes; without it, a run's own ``webhook.url`` (runs without one cannot complete).
        faults: Fault rates; each ``complete`` call may override them.
        seed: Fixes every fault draw.
        max_attempts: Attempts per delivery, the first included.
        backoff_s: The first retry's delay; it doubles each time, up to ``max_backoff_s``.
        timeout_s: Each POST's timeout.
    """

    def __init__(
        self,
        store: RunStore,
        *,
        secret: str,
        url: str | None = None,
        faults: WebhookFaults | None = None,
        seed: int = 0,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        timeout_s: float = 5.0,
    ) -> None:
        if not secret:
            raise ValueError("a webhook secret is needed to sign deliveries")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.store = store
        self.url = url
        self.faults = faults or WebhookFaults()
        self.seed = seed
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self._signer = _StandardWebhook(secret.encode("utf-8"))
        self._forger = _StandardWebhook(b"not-the-secret-" + uuid.uuid4().bytes)
        self._lock = threading.Lock()
        self._log: list[DeliveryAttempt] = []
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._completions = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None

    def __repr__(self) -> str:
        return f"WebhookSender(url={self.url!r}, faults={self.faults!r})"

    # -- what a caller does ----------------------------------------------------------------------

    def target(self, run_id: str) -> str | None:
        """Where a run's delivery goes: the sender's URL, else the run's own ``webhook.url``."""
        if self.url:
            return self.url
        body = self.store.body(run_id) if run_id in self.store else {}
        webhook = body.get("webhook") if isinstance(body, dict) else None
        url = webhook.get("url") if isinstance(webhook, dict) else None
        return url if isinstance(url, str) and url else None

    def eligible(self, run_id: str) -> bool:
        """True when the run exists and has somewhere to send its delivery."""
        return run_id in self.store and self.target(run_id) is not None

    def complete(
        self,
        run_id: str,
        status: Literal["completed", "failed"] = "completed",
        *,
        after_s: float = 0.0,
        **faults: bool,
    ) -> str:
        """Complete a run: schedule its delivery (and any faults) and return its webhook id.

        ``faults`` (``duplicate=True``, ``bad_signature=False``, ...) override the drawn ones for this call.

        Raises:
            KeyError: Unknown run. ValueError: No URL for it, an unknown status or fault.
        """
        if run_id not in self.store:
            raise KeyError(run_id)
        url = self.target(run_id)
        if url is None:
            raise ValueError(f"run {run_id!r} has no webhook and the sender no --webhook-url")
        if status not in ("completed", "failed"):
            raise ValueError(f"status must be 'completed' or 'failed', not {status!r}")
        unknown = set(faults) - set(_FAULTS)
        if unknown:
            raise ValueError(f"unknown webhook faults {sorted(unknown)}; expected some of {_FAULTS}")
        with self._lock:
            number = self._completions
            self._completions += 1
            self._pending += 1
        chosen = {
            name: faults[name]
            if name in faults
            else unit_draw(self.seed, run_id, number, f"webhook-{name}") < getattr(self.faults, name)
            for name in _FAULTS
        }
        webhook_id = f"msg_{uuid.uuid4().hex}"  # new on every completion, as after a restart
        body = self._body(run_id, status)
        coroutine = self._deliver(url, run_id, webhook_id, body, after_s, chosen)
        asyncio.run_coroutine_threadsafe(coroutine, self._running_loop())
        return webhook_id

    def complete_all(self, after_s: float = 0.0) -> list[str]:
        """Complete every run that has somewhere to send to, ``after_s`` from now; their webhook ids."""
        return [self.complete(run_id, after_s=after_s) for run_id in self.store.ids() if self.eligible(run_id)]

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """Wait until every scheduled delivery (retries included) is done; False if ``timeout_s`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout_s)

    @property
    def log(self) -> list[DeliveryAttempt]:
        """Every POST made so far, in order."""
        with self._lock:
            return list(self._log)

    def close(self) -> None:
        """Stop the sender's thread; deliveries still pending are dropped."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._client is not None:
            asyncio.run_coroutine_threadsafe(self._client.aclose(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        self._loop = self._thread = None

    # -- how it is done --------------------------------------------------------------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="emulator-webhooks", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _body(self, run_id: str, status: str) -> str:
        run = self.store.body(run_id)
        run = run if isinstance(run, dict) else {}
        now = datetime.now(timezone.utc)
        error = {"ref_id": str(uuid.uuid4()), "message": "Task run failed (emulated)"} if status == "failed" else None
        data = {
            "run_id": run_id,
            "status": status,
            "is_active": False,
            "processor": run.get("processor"),
            "metadata": run.get("metadata"),
            "created_at": (now - timedelta(seconds=30)).isoformat(),
            "modified_at": now.isoformat(),
            "error": error,
            "warnings": None,
        }
        return json.dumps({"timestamp": now.isoformat(), "type": "task_run.status", "data": data})

    def _headers(self, webhook_id: str, body: str, *, forged: bool = False, stale: bool = False) -> dict[str, str]:
        when = datetime.now(timezone.utc) - (_STALE_BY if stale else timedelta(0))
        signature = (self._forger if forged else self._signer).sign(webhook_id, when, body)
        return {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": signature,
        }

    async def _deliver(
        self, url: str, run_id: str, webhook_id: str, body: str, after_s: float, faults: Mapping[str, bool]
    ) -> None:
        try:
            if after_s > 0:
                await asyncio.sleep(after_s)
            if faults["bad_signature"]:  # forgeries and replays come first: they must not make the genuine one fail
                forged_id = f"{webhook_id}-forged"
                await self._post(url, run_id, forged_id, "forged", 1, body, self._headers(forged_id, body, forged=True))
            if faults["stale_timestamp"]:
                stale_id = f"{webhook_id}-stale"
                await self._post(url, run_id, stale_id, "stale", 1, body, self._headers(stale_id, body, stale=True))
            if faults["out_of_order"]:
                await asyncio.sleep(self.faults.hold_ms / 1000)
            await self._with_retries(url, run_id, webhook_id, "genuine", body)
            if faults["duplicate"]:
                await self._with_retries(url, run_id, webhook_id, "duplicate", body)
        finally:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    async def _with_retries(self, url: str, run_id: str, webhook_id: str, kind: DeliveryKind, body: str) -> None:
        for attempt in range(1, self.max_attempts + 1):
            status = await self._post(url, run_id, webhook_id, kind, attempt, body, self._headers(webhook_id, body))
            if status is not None and 200 <= status < 300:
                return
            if attempt < self.max_attempts:
                await asyncio.sleep(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))

    async def _post(
        self,
        url: str,
        run_id: str,
        webhook_id: str,
        kind: DeliveryKind,
        attempt: int,
        body: str,
        headers: dict[str, str],
    ) -> int | None:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        status: int | None = None
        error: str | None = None
        try:
            response = await self._client.post(url, content=body.encode("utf-8"), headers=headers)
            status = response.status_code
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        with self._lock:
            self._log.append(DeliveryAttempt(webhook_id, run_id, kind, attempt, status, error))
        return status


def _json(status: int, value: Any) -> tuple[int, bytes]:
    return status, json.dumps(value, separators=(",", ":")).encode()


def handle_admin(sender: WebhookSender | None, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    """The admin routes: ``POST /_emulator/runs/{run_id}/complete`` (JSON body, all optional:
    ``{"status": "failed", "after_ms": 0, "duplicate": true, "out_of_order": true, "bad_signature": true,
    "stale_timestamp": true}``) answers 202 with the webhook id; ``GET /_emulator/webhooks`` lists every POST made.
    """
    from urllib.parse import unquote

    if sender is None:
        return _json(409, {"error": "webhooks are off: start the emulator with a webhook secret"})
    if path == f"{ADMIN_PREFIX}webhooks" and method == "GET":
        return _json(200, [attempt.__dict__ for attempt in sender.log])
    parts = path[len(ADMIN_PREFIX) :].split("/")
    if len(parts) != 3 or parts[0] != "runs" or parts[2] != "complete":
        return _json(404, {"error": "not found"})
    if method != "POST":
        return _json(405, {"error": "use POST"})
    try:
        options = json.loads(body) if body.strip() else {}
        if not isinstance(options, dict):
            raise ValueError("the body must be a JSON object")
        status = options.pop("status", "completed")
        after_s = float(options.pop("after_ms", 0)) / 1000
        faults = {name: bool(value) for name, value in options.items()}
        webhook_id = sender.complete(unquote(parts[1]), status, after_s=after_s, **faults)
    except KeyError:
        return _json(404, {"error": "no such run"})
    except (ValueError, TypeError) as exc:
        return _json(422, {"error": str(exc)})
    return _json(202, {"webhook_id": webhook_id})
