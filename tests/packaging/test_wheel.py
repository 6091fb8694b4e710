"""The built wheel on its own: installed in a fresh virtual environment, without this repository on the path,
it imports both flows and runs one against the emulator (the flows are part of the package, not of flows/), and
it ships the OpenLineage facet schema the events name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from parallel_tasks.emulator import Emulator, demo_runs, run_emulator_server
from parallel_tasks.openlineage import CUSTOM_FACET_SCHEMA_URL

pytestmark = [pytest.mark.wheel, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
KEY = "wheel-test-key-0123456789"
RUN_ID = "trun_bbf5d6d60a5a8aca6d19f35c5426fab0"

# Run inside the fresh environment: where the package came from, then the on-demand flow, with the key and
# the emulator's address from the environment (PARALLEL_API_KEY / PARALLEL_BASE_URL, read by the settings).
SCRIPT = """
import json, sys
import parallel_tasks
from parallel_tasks.flows import audit_run_inputs, fetch_run_input
from parallel_tasks.openlineage import CUSTOM_FACET_SCHEMA
summary = fetch_run_input(sys.argv[1])
facet = [str(CUSTOM_FACET_SCHEMA), json.loads(CUSTOM_FACET_SCHEMA.read_text())]
print(json.dumps({"package": parallel_tasks.__file__, "flows": [audit_run_inputs.name, fetch_run_input.name],
                  "summary": summary, "facet": facet}))
"""


def find_uv() -> str:
    """uv as the Makefile finds it: ``$UV`` (make passes it on), on PATH, else the project's .tools/bin/uv."""
    found = os.environ.get("UV") or shutil.which("uv") or ".tools/bin/uv"
    path = shutil.which(found) or (REPO / found if not Path(found).is_absolute() else Path(found))
    assert Path(path).is_file(), f"no uv at {found}: run `make install` first"
    return str(path)


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_the_wheel_alone_imports_both_flows_and_runs_one(prefect_harness: None, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    uv = find_uv()
    run([uv, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(REPO)], cwd=REPO)
    (wheel,) = (tmp_path / "dist").glob("prefect_parallel_tasks-*.whl")
    # The locked versions (so the same Prefect as the test server, and the warm cache serves them).
    pins = run([uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project"], cwd=REPO).stdout
    (tmp_path / "constraints.txt").write_text(pins)
    venv = tmp_path / "venv"
    run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)])
    python = venv / "bin" / "python"
    run([uv, "pip", "install", "--quiet", "--python", str(python), "-c", str(tmp_path / "constraints.txt"), str(wheel)])

    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),  # the session's test server
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PARALLEL_API_KEY": KEY,
    }
    with run_emulator_server(Emulator(demo_runs(), api_keys=[KEY])) as base_url:
        env["PARALLEL_BASE_URL"] = base_url
        done = run([str(python), "-c", SCRIPT, RUN_ID], cwd=tmp_path, env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(result["package"]).is_relative_to(venv)  # the installed wheel, not this checkout
    assert result["flows"] == ["audit-run-inputs", "fetch-run-input"]
    assert result["summary"]["run_id"] == RUN_ID and result["summary"]["status"] == "ok"
    stored = tmp_path / "results" / "parallel-run-inputs" / RUN_ID
    assert (stored / f"{result['summary']['sha256']}.json").is_file() and (stored / "latest.json").is_file()
    facet_path, facet_schema = result["facet"]
    assert Path(facet_path).is_relative_to(venv)
    assert facet_schema["$id"] == CUSTOM_FACET_SCHEMA_URL.partition("#")[0]
