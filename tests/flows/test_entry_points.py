"""The flows' command lines start Prefect's temporary server with settings that let it start on a fresh home
(analytics off, a long start-up timeout), unless the user set them. Run in a subprocess: Prefect reads the
environment once, at import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# Calls each entry point with its flow replaced by one that reports the settings it runs under.
PROBE = """
import json, types
import flows.audit_run_inputs as audit, flows.fetch_run_input as fetch
from prefect.settings import get_current_settings

seen = []

def look(*args, **kwargs):
    server = get_current_settings().server
    seen.append([server.analytics_enabled, server.ephemeral.startup_timeout_seconds])
    return types.SimpleNamespace(message="", is_completed=lambda: True)

fetch.fetch_run_input = lambda *args, **kwargs: look() and {}
audit.audit_run_inputs = look
fetch.main(["trun_x"])
audit.main(["trun_x"])
print("SEEN", json.dumps(seen))
"""


@pytest.mark.parametrize(
    ("user_settings", "expected"),
    [
        ({}, [False, 180]),
        (
            {"PREFECT_SERVER_ANALYTICS_ENABLED": "true", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "7"},
            [True, 7],
        ),
    ],
    ids=["defaults", "user-set"],
)
def test_entry_points_ready_the_temporary_server(
    tmp_path: Path, user_settings: dict[str, str], expected: list[object]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PARALLEL_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PYTHONPATH=str(REPO), PARALLEL_API_KEY="k", **user_settings)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(done.stdout.rpartition("SEEN ")[2])
    assert seen == [expected, expected]


@pytest.mark.parametrize("script", ["fetch_run_input.py", "audit_run_inputs.py"])
def test_a_missing_key_is_said_once_without_a_traceback(tmp_path: Path, script: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PARALLEL_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, f"flows/{script}", "trun_x"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert output.count("No Parallel API key was given") == 1 and "--credentials-block NAME" in output
    assert "Traceback" not in output and "Flow run" not in output  # no flow started
