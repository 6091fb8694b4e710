"""Shared fixtures: the spec files, the canary key, and one Prefect test server per session."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Prefect reads settings at import: keep its home, database and results inside a temporary folder
# and its heartbeats off, before anything imports prefect.
_SESSION_HOME = Path(os.environ.setdefault("PARALLEL_TASKS_TEST_HOME", f"/tmp/parallel-tasks-tests-{os.getpid()}"))
(_SESSION_HOME / "prefect").mkdir(parents=True, exist_ok=True)
os.environ.setdefault("PREFECT_HOME", str(_SESSION_HOME / "prefect"))
os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(_SESSION_HOME / "results"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_UI_ENABLED", "false")

REPO = Path(__file__).resolve().parent.parent
SPEC_DIR = REPO / "spec"
RUN_INPUT_PATH = "/v1/tasks/runs/{run_id}/input"

# A distinctive fake key: if it shows up anywhere it was not meant to, a test finds it.
CANARY_KEY = "pk-canary-7f3e9c1d5b2a4e6f8091a2b3c4d5e6f7"


def load_spec(name: str) -> dict[str, Any]:
    return json.loads((SPEC_DIR / name).read_text())


def spec_examples() -> list[tuple[str, str, int, dict[str, Any]]]:
    """(spec file, label, status, body) for every response example in both spec files."""
    found = []
    for name in ("openapi.json", "openapi-current.json"):
        operation = load_spec(name)["paths"][RUN_INPUT_PATH]["get"]
        for status, response in operation["responses"].items():
            for media in response.get("content", {}).values():
                if "example" in media:
                    found.append((name, f"{name}:{status}", int(status), media["example"]))
                for label, example in media.get("examples", {}).items():
                    found.append((name, f"{name}:{status}:{label}", int(status), example["value"]))
    return found


@pytest.fixture(scope="session")
def canary_key() -> str:
    return CANARY_KEY


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test server for the whole session (starting one costs seconds), heartbeats off."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90), temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@pytest.fixture
def storage(prefect_harness: None, tmp_path: Path) -> tuple[str, Path]:
    """A LocalFileSystem block of the test's own (its slug, and the folder it writes to)."""
    from prefect.filesystems import LocalFileSystem

    name = f"records-{uuid.uuid4().hex[:8]}"
    LocalFileSystem(basepath=str(tmp_path / "records")).save(name, overwrite=True)
    return f"local-file-system/{name}", tmp_path / "records"
