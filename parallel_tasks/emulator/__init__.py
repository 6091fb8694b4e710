"""A local Parallel API for tests, demos and benchmarks: ``GET /v1/tasks/runs/{run_id}/input``.

Like moto for AWS: serve realistic runs from memory, inject faults deterministically, and read back
what was requested. The library itself never imports this package.

Example:
    >>> import httpx
    >>> from parallel_tasks.emulator import Emulator, FaultConfig, generate_runs
    >>> runs = generate_runs(100, seed=1)
    >>> emulator = Emulator(runs, api_keys=["k"], faults=FaultConfig(rates={503: 0.1}), seed=7)
    >>> client = httpx.Client(transport=emulator.transport(), base_url="http://emulator")
    >>> run_id = next(iter(runs))
    >>> client.get(f"/v1/tasks/runs/{run_id}/input", headers={"x-api-key": "k"}).status_code in (200, 503)
    True

Run it as a server with ``run_emulator_server()`` (a context manager yielding the base URL) or
``python -m parallel_tasks.emulator --port 8787 --runs 1000 --seed 1 --api-key KEY``.
"""

from __future__ import annotations

from .asgi import EmulatorApp
from .core import DEFAULT_API_KEY, Emulator, EmulatorResponse, RequestRecord, run_id_problem
from .faults import FAULT_NAMES, Fault, FaultConfig, RetryAfterStyle
from .generator import INPUT_SCHEMA_FORMS, OUTPUT_SCHEMA_FORMS, PROCESSORS, demo_runs, generate_runs
from .server import run_emulator_server
from .store import RunStore
from .transports import AsyncEmulatorTransport, EmulatorTransport
from .webhooks import DeliveryAttempt, WebhookFaults, WebhookSender

__all__ = [
    "DEFAULT_API_KEY",
    "FAULT_NAMES",
    "INPUT_SCHEMA_FORMS",
    "OUTPUT_SCHEMA_FORMS",
    "PROCESSORS",
    "AsyncEmulatorTransport",
    "DeliveryAttempt",
    "Emulator",
    "EmulatorApp",
    "EmulatorResponse",
    "EmulatorTransport",
    "Fault",
    "FaultConfig",
    "RequestRecord",
    "RetryAfterStyle",
    "RunStore",
    "WebhookFaults",
    "WebhookSender",
    "demo_runs",
    "generate_runs",
    "run_emulator_server",
    "run_id_problem",
]
