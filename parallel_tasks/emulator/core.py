"""The emulator's request handling, as plain logic: (method, path, headers) in, a response plan out.

The ASGI app and the httpx transports only play the plan (sleep, send the status and headers, send
the body in parts, maybe drop the connection), so every way of running the emulator behaves alike.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote_to_bytes

from .faults import FaultConfig
from .store import RunBody, RunStore

if TYPE_CHECKING:
    from .asgi import EmulatorApp
    from .transports import AsyncEmulatorTransport, EmulatorTransport
    from .webhooks import WebhookSender

__all__ = [
    "DEFAULT_API_KEY",
    "MAX_RUN_ID_LENGTH",
    "Emulator",
    "EmulatorResponse",
    "RequestRecord",
    "run_id_problem",
]

DEFAULT_API_KEY = "test-key"
"""The key an ``Emulator`` accepts when none is configured."""

MAX_RUN_ID_LENGTH = 256
"""Longer run ids are refused with 422: real ones are 37 characters."""

_PREFIX = "/v1/tasks/runs/"
_SUFFIX = "/input"
_JSON = "application/json"

_MESSAGES = {
    401: "Unauthorized: invalid or missing credentials",
    404: "Run id not found",
    408: "Request timeout",
    409: "Conflict: the resource is busy",
    422: "Request validation error",
    429: "Too many requests: retry later",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}

_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>Service Unavailable</title></head>\n"
    b"<body><h1>Service Unavailable</h1><p>The upstream server is temporarily unreachable.</p>"
    b"<hr><address>emulated-proxy</address></body></html>\n"
)


class EmulatorResponse(NamedTuple):
    """How to answer one request; transports play it.

    Attributes:
        status: The HTTP status.
        headers: Response headers (name, value); Content-Length is the full body's length.
        body: The body bytes.
        delay_s: Seconds to wait before the status line (latency).
        chunks: How many parts the body is sent in.
        chunk_delay_s: Seconds to wait between two parts.
        reset_after: If set, send only this many body bytes, then drop the connection.
        fault: The fault played, or None.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    delay_s: float = 0.0
    chunks: int = 1
    chunk_delay_s: float = 0.0
    reset_after: int | None = None
    fault: str | None = None

    def parts(self) -> list[bytes]:
        """The body bytes actually sent, in order (a reset cuts them short)."""
        body = self.body if self.reset_after is None else self.body[: self.reset_after]
        if self.chunks <= 1 or not body:
            return [body]
        size = -(-len(body) // self.chunks)
        return [body[start : start + size] for start in range(0, len(body), size)]


class RequestRecord(NamedTuple):
    """One line of the request log.

    Attributes:
        time: Wall-clock time the request was handled (``time.time()``).
        method: The HTTP method.
        path: The path as received (percent-encoded, without the query).
        run_id: The decoded run id, when the path named a well-formed one.
        status: The status answered.
        fault: The fault played (``"503"``, ``"reset"``, ...), or None.
        attempt: How many requests to this run id came before (from 0), when there is a run id.
    """

    time: float
    method: str
    path: str
    run_id: str | None
    status: int
    fault: str | None
    attempt: int | None


def run_id_problem(run_id: str) -> str | None:
    """Why a decoded run id is malformed (answered with 422), or None if it is acceptable.

    The API does not publish a pattern, so anything printable is accepted (an unknown id is a 404);
    only ids no client could mean are refused: empty, longer than 256 characters, holding control
    characters, or the dot segments ``.`` and ``..``.
    """
    if not run_id:
        return "run_id must not be empty"
    if len(run_id) > MAX_RUN_ID_LENGTH:
        return f"run_id must be at most {MAX_RUN_ID_LENGTH} characters"
    if any(ord(char) < 32 or 127 <= ord(char) < 160 for char in run_id):
        return "run_id must not contain control characters"
    if run_id in (".", ".."):
        return "run_id must not be a dot segment"
    return None


def _route(path: str) -> str | None:
    """The raw run-id segment when ``path`` is the run-input route (it may be empty), else None."""
    if len(path) < len(_PREFIX) + len(_SUFFIX) or not path.startswith(_PREFIX) or not path.endswith(_SUFFIX):
        return None
    segment = path[len(_PREFIX) : len(path) - len(_SUFFIX)]
    return None if "/" in segment else segment


def _decode_segment(segment: str) -> str | None:
    """Percent-decode one path segment as UTF-8; None if the bytes are not UTF-8."""
    if "%" not in segment:
        return segment
    try:
        return unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _error_body(status: int, message: str | None = None, detail: dict[str, Any] | None = None) -> bytes:
    """The spec's error envelope, with a fresh ref_id."""
    error: dict[str, Any] = {
        "ref_id": str(uuid.uuid4()),
        "message": message or _MESSAGES.get(status) or HTTPStatus(status).phrase,
    }
    if detail is not None:
        error["detail"] = detail
    return json.dumps({"type": "error", "error": error}, separators=(",", ":")).encode()


class Emulator:
    """A local Parallel API serving ``GET /v1/tasks/runs/{run_id}/input``, with fault injection.

    Use it in-process (``transport()``, ``async_transport()``), as an ASGI app (``app``), or as a real
    server (``run_emulator_server``). Thread-safe: the log and counters are updated under a lock.

    Attributes:
        store: The runs served.
        seed: Fixes every random fault and jitter draw.
        requests_by_status: How many responses of each status were sent.
        requests_by_run: How many requests named each run id (well-formed ids only).

    Example:
        >>> import httpx
        >>> emulator = Emulator({"trun_1": {"processor": "base", "input": "2+2?"}}, api_keys=["k"])
        >>> with httpx.Client(transport=emulator.transport(), base_url="http://emulator") as client:
        ...     client.get("/v1/tasks/runs/trun_1/input", headers={"x-api-key": "k"}).json()
        {'processor': 'base', 'input': '2+2?'}
    """

    def __init__(
        self,
        runs: RunStore | Mapping[str, RunBody] | None = None,
        *,
        api_keys: Iterable[str] = (DEFAULT_API_KEY,),
        faults: FaultConfig | None = None,
        seed: int = 0,
        log_limit: int = 100_000,
    ) -> None:
        """Create an emulator.

        Args:
            runs: The runs to serve: a ``RunStore`` (shared, not copied) or a mapping of run id to body.
                None serves the demo set (``demo_runs()``).
            api_keys: The ``x-api-key`` values accepted; any other value, or none, gets 401.
            faults: Faults for every run (per-run ones are set with ``set_faults``).
            seed: Fixes every random fault and jitter draw.
            log_limit: How many recent requests the log keeps.
        """
        if runs is None:
            from .generator import demo_runs

            runs = demo_runs()
        self.store = runs if isinstance(runs, RunStore) else RunStore(runs)
        self.api_keys = frozenset(api_keys)
        self.faults = faults or FaultConfig()
        self.seed = seed
        self._run_faults: dict[str, FaultConfig] = {}
        self._lock = threading.Lock()
        self._attempts: Counter[str] = Counter()
        self._log: deque[RequestRecord] = deque(maxlen=log_limit)
        self.requests_by_status: Counter[int] = Counter()
        self.requests_by_run: Counter[str] = Counter()
        self.webhooks: WebhookSender | None = None
        """Sends the signed deliveries of completed runs (the ``/_emulator/`` routes); None: webhooks are off."""

    # -- configuration -------------------------------------------------------------------------

    def set_faults(self, faults: FaultConfig | None, *, run_id: str | None = None) -> None:
        """Set the faults for every run, or (with ``run_id``) replace them for one run.

        ``None`` clears them: no faults emulator-wide, or the run falls back to the emulator's faults.
        The attempt numbers of the runs concerned start again from 0, so a script starts at its first
        entry whatever was requested before.
        """
        with self._lock:
            if run_id is None:
                self.faults = faults or FaultConfig()
                self._attempts.clear()
            else:
                if faults is None:
                    self._run_faults.pop(run_id, None)
                else:
                    self._run_faults[run_id] = faults
                self._attempts.pop(run_id, None)

    def reset(self) -> None:
        """Forget the log, the counters and the per-run attempt numbers (scripts start over)."""
        with self._lock:
            self._attempts.clear()
            self._log.clear()
            self.requests_by_status.clear()
            self.requests_by_run.clear()

    @property
    def log(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._log)

    # -- the ways to run it --------------------------------------------------------------------

    @property
    def app(self) -> EmulatorApp:
        """An ASGI app over this emulator."""
        from .asgi import EmulatorApp

        return EmulatorApp(self)

    def transport(self) -> EmulatorTransport:
        """A sync httpx transport over this emulator."""
        from .transports import EmulatorTransport

        return EmulatorTransport(self)

    def async_transport(self) -> AsyncEmulatorTransport:
        """An async httpx transport over this emulator."""
        from .transports import AsyncEmulatorTransport

        return AsyncEmulatorTransport(self)

    # -- request handling ----------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str]) -> EmulatorResponse:
        """Answer one request.

        Args:
            method: The HTTP method.
            path: The raw (percent-encoded) request target; a query string is ignored.
            headers: Request headers with lower-case names, or a case-insensitive mapping (httpx.Headers).

        Returns:
            The response plan, already recorded in the log and counters.
        """
        path = path.partition("?")[0]
        segment = _route(path)
        if segment is None:
            return self._finish(method, path, None, None, self._error(404, "Not found"))
        if method != "GET":
            allow = (("allow", "GET"),)
            return self._finish(method, path, None, None, self._error(405, "Method not allowed", allow))
        if headers.get("x-api-key") not in self.api_keys:
            return self._finish(method, path, None, None, self._error(401))
        run_id = _decode_segment(segment)
        problem = "run_id must be UTF-8" if run_id is None else run_id_problem(run_id)
        if run_id is None or problem is not None:
            detail = {"loc": ["path", "run_id"], "msg": problem}
            return self._finish(method, path, None, None, self._error(422, detail=detail))

        with self._lock:
            attempt = self._attempts[run_id]
            self._attempts[run_id] = attempt + 1
        faults = self._run_faults.get(run_id, self.faults)
        fault = faults.choose(self.seed, run_id, attempt)
        delay = faults.delay_s(self.seed, run_id, attempt) if faults.latency_ms or faults.jitter_ms else 0.0
        return self._finish(method, path, run_id, attempt, self._respond(run_id, fault, faults, delay))

    def _respond(self, run_id: str, fault: int | str | None, faults: FaultConfig, delay: float) -> EmulatorResponse:
        """The response to a well-formed, authorized request for ``run_id`` under ``fault``."""
        if fault == "html":
            headers = (("content-type", "text/html; charset=utf-8"), ("content-length", str(len(_HTML))))
            return EmulatorResponse(faults.html_status, headers, _HTML, delay, fault="html")
        if isinstance(fault, int) and fault != 200:
            error = self._error(fault, extra=_retry_after(faults) if fault == 429 else ())
            return error._replace(delay_s=delay, fault=str(fault))
        body = self.store.get(run_id)
        status = 200 if body is not None else 404
        if body is None:
            body = _error_body(404)
        if fault == "truncate":
            body = body[: len(body) // 2]
        headers = (("content-type", _JSON), ("content-length", str(len(body))))
        if fault == "reset":
            return EmulatorResponse(status, headers, body, delay, reset_after=len(body) // 2, fault="reset")
        if fault == "slow":
            chunk_delay = faults.slow_chunk_delay_ms / 1000.0
            return EmulatorResponse(status, headers, body, delay, faults.slow_chunks, chunk_delay, fault="slow")
        return EmulatorResponse(status, headers, body, delay, fault="truncate" if fault == "truncate" else None)

    def _error(
        self,
        status: int,
        message: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
        *,
        detail: dict[str, Any] | None = None,
    ) -> EmulatorResponse:
        """An error response in the spec's envelope."""
        body = _error_body(status, message, detail)
        headers = (("content-type", _JSON), ("content-length", str(len(body))), *extra)
        delay = self.faults.delay_s(self.seed, "", 0) if self.faults.latency_ms or self.faults.jitter_ms else 0.0
        return EmulatorResponse(status, headers, body, delay)

    def _finish(
        self, method: str, path: str, run_id: str | None, attempt: int | None, response: EmulatorResponse
    ) -> EmulatorResponse:
        """Record the response in the log and counters, then return it."""
        record = RequestRecord(time.time(), method, path, run_id, response.status, response.fault, attempt)
        with self._lock:
            self._log.append(record)
            self.requests_by_status[response.status] += 1
            if run_id is not None:
                self.requests_by_run[run_id] += 1
        return response


def _retry_after(faults: FaultConfig) -> tuple[tuple[str, str], ...]:
    """The header telling a client when to retry a 429, in the configured style."""
    seconds = faults.retry_after_s
    if faults.retry_after == "seconds":
        return (("retry-after", f"{seconds:g}"),)
    if faults.retry_after == "ms":
        return (("retry-after-ms", str(round(seconds * 1000))),)
    if faults.retry_after == "http-date":
        from email.utils import formatdate

        return (("retry-after", formatdate(time.time() + seconds, usegmt=True)),)
    return ()
