"""Fixtures for the reliability suite: 1,000 generated runs served over real HTTP, fast client backoff,
stored credentials, a storage block per test, and helpers to read the records a flow left behind.

The session emulator is this suite's own (the flow tests have theirs): tests here change its faults and
latency, and ``emu`` clears them before and after each test.
"""

from __future__ import annotations

import functools
import json
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from parallel_tasks import ParallelCredentials, RetryPolicy
from parallel_tasks.emulator import Emulator, demo_runs, generate_runs, run_emulator_server
from parallel_tasks.emulator.server import serve_in_thread
from parallel_tasks.lineage import RECORD_PREFIX, verify_record
from parallel_tasks.models import RunInputRecord
from tests.conftest import CANARY_KEY

RELIABILITY_KEY = "reliability-key-5a1e0c2d"
RUN_COUNT = 1000
RUN_SEED = 23
FAULT_SEED = 4242
# The client's own backoff, shrunk: these tests are about outcomes and counts, not about waiting.
FAST_BACKOFF = {"initial_delay": 0.01, "max_delay": 0.05}


@pytest.fixture(scope="session")
def rel_runs() -> dict[str, dict[str, Any]]:
    """1,000 generated runs (seed 23); never mutate them."""
    return generate_runs(RUN_COUNT, seed=RUN_SEED)


@pytest.fixture(scope="session")
def rel_emulator(rel_runs: dict[str, dict[str, Any]]) -> Emulator:
    """The 1,000 generated runs (all valid) and the demo runs (some invalid)."""
    return Emulator(
        {**rel_runs, **demo_runs()}, api_keys=[RELIABILITY_KEY, CANARY_KEY], seed=FAULT_SEED, log_limit=200_000
    )


@pytest.fixture(scope="session")
def rel_url(rel_emulator: Emulator) -> Iterator[str]:
    with run_emulator_server(rel_emulator) as base_url:
        yield base_url


def _clear(emulator: Emulator) -> None:
    emulator.set_faults(None)
    for run_id in list(emulator._run_faults):
        emulator.set_faults(None, run_id=run_id)
    emulator.reset()


@pytest.fixture
def emu(rel_emulator: Emulator, rel_url: str) -> Iterator[Emulator]:
    """The suite's emulator (served at ``rel_url``) with faults, latency, log and counters cleared."""
    _clear(rel_emulator)
    yield rel_emulator
    _clear(rel_emulator)


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients built from a block keep the block's ``max_retries`` but back off 10-50 ms instead of 0.5-8 s."""
    monkeypatch.setattr("parallel_tasks.client.RetryPolicy", functools.partial(RetryPolicy, **FAST_BACKOFF))


def save_credentials(api_key: str, base_url: str, *, max_retries: int) -> str:
    name = f"reliability-{uuid.uuid4().hex[:8]}"
    ParallelCredentials(api_key=api_key, base_url=base_url, max_retries=max_retries).save(name, overwrite=True)
    return name


# --- reading what a flow stored ------------------------------------------------------------------


@dataclass
class StoredRun:
    """Everything stored for one run id: its folder, its latest pointer, its content records."""

    run_id: str
    folder: Path
    latest: list[Path] = field(default_factory=list)
    contents: list[Path] = field(default_factory=list)
    partials: list[Path] = field(default_factory=list)  # temporary files of an atomic write cut short
    others: list[Path] = field(default_factory=list)

    def pointer(self) -> RunInputRecord:
        (path,) = self.latest
        return RunInputRecord.model_validate_json(path.read_bytes())


def stored_runs(root: Path) -> dict[str, StoredRun]:
    """The run folders under ``root/parallel-run-inputs``, by decoded run id; every file is classified."""
    runs: dict[str, StoredRun] = {}
    base = root / RECORD_PREFIX
    if not base.is_dir():
        return runs
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and p.name != "_manifests"):
        run = StoredRun(unquote(folder.name), folder)
        for path in sorted(folder.rglob("*")):
            if path.is_dir():
                continue
            if path.parent == folder and path.name == "latest.json":
                run.latest.append(path)
            elif path.parent == folder and path.suffix == ".json" and len(path.stem) == 64:
                run.contents.append(path)
            elif path.parent == folder and path.name.startswith(".") and path.name.endswith(".partial"):
                run.partials.append(path)
            else:
                run.others.append(path)
        runs[run.run_id] = run
    return runs


def stray_files(root: Path) -> list[Path]:
    """Files under ``root`` that are not inside a run folder or the manifests' folder (nothing else should be there)."""
    base = root / RECORD_PREFIX
    manifests = base / "_manifests"
    return [p for p in root.rglob("*") if p.is_file() and p.parent.parent != base and manifests not in p.parents]


def check_complete_run(run: StoredRun) -> RunInputRecord:
    """A fetched run has exactly one pointer and one content record, which verifies and matches it
    (leftover temporary files are the caller's to judge)."""
    assert len(run.latest) == 1, f"{run.run_id}: {len(run.latest)} latest.json"
    assert len(run.contents) == 1 and not run.others, f"{run.run_id}: {run.contents + run.others}"
    pointer = run.pointer()
    assert pointer.run_id == run.run_id and pointer.status in ("ok", "invalid"), pointer
    content = verify_record(run.contents[0].read_bytes())
    assert content.run_id == run.run_id and content.sha256 == pointer.sha256 == run.contents[0].stem
    return pointer


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# --- a tiny real HTTP server for tests that need a second origin ---------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Handler = Callable[[Scope, dict[str, str]], tuple[int, list[tuple[str, str]], bytes]]


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]


class RecordingApp:
    """An ASGI app that records every request (method, raw path, headers) and answers with ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[SeenRequest] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        with self._lock:
            self.requests.append(SeenRequest(scope["method"], path, headers))
        status, response_headers, body = self.handler(scope, headers)
        all_headers = [("content-length", str(len(body))), *response_headers]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in all_headers],
            }
        )
        await send({"type": "http.response.body", "body": body})


def serve_app(app: Any, host: str = "127.0.0.1") -> AbstractContextManager[str]:
    """Serve an ASGI app with uvicorn from a thread on a free port of ``host``; yield its base URL."""
    import uvicorn

    config = uvicorn.Config(app, lifespan="off", access_log=False, log_config=None, log_level="warning")
    return serve_in_thread(uvicorn.Server(config), host=host)
