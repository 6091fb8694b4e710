"""Scale out (``make test-scale``): 20,000 run ids audited in chunks of 1,000, each chunk a flow run of a
deployment taken by process workers, on a Prefect server backed by PostgreSQL, against the emulator with
50 ms latency. Run with one worker, with two, and with the batches on a Dask LocalCluster of 2 workers; every
run must be recorded exactly once each time. Wall time and runs per second go to
``benchmarks/results/scale.md`` (reported, never asserted).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from parallel_tasks.emulator import generate_runs
from parallel_tasks.lineage import verify_record
from tests.e2e.conftest import PREFECT, REPO, Stack, free_port, prefect_env, started

pytestmark = [pytest.mark.scale, pytest.mark.timeout(3600)]

RUNS = int(os.environ.get("SCALE_RUNS", "20000"))
CHUNK = int(os.environ.get("SCALE_CHUNK", "1000"))
SEED = 7
KEY = "scale-emulator-key"
POOL = "parallel-scale"
WORKER_LIMIT = 2  # chunk flow runs one worker runs at once
RESULTS = REPO / "benchmarks" / "results" / "scale.md"


def sh(*argv: str, user: str | None = None, **kwargs: object) -> None:
    """Run a command (as ``user`` when given) and fail loudly with its output."""
    command = ["runuser", "-u", user, "--", *argv] if user else list(argv)
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}{done.stderr}"


def postgres_bin() -> Path:
    """The PostgreSQL server binaries, installed from Debian's packages when missing."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        sh("apt-get", "update", "-q")
        sh("apt-get", "install", "-y", "-q", "postgresql", env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    assert found, "PostgreSQL is not installed and apt-get did not install it"
    return found[-1].parent


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server of the test's own on 127.0.0.1 (a fresh cluster, trust auth), stopped at the end."""
    bindir = postgres_bin()
    # PostgreSQL refuses to run as root: its data lives in a folder the postgres user can reach.
    root = Path(tempfile.mkdtemp(prefix="parallel-scale-pg-"))
    root.chmod(0o755)
    data = root / "data"
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    sh(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", user="postgres")
    port = free_port()
    options = f"-p {port} -h 127.0.0.1 -k {data} -c max_connections=200 -c fsync=off"
    sh(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(data / "log"), "-w", "start", user="postgres")
    try:
        sh(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "prefect", user="postgres")
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
    finally:
        sh(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop", user="postgres")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``prefect server start`` on PostgreSQL, with the emulator (50 ms) and, for the Dask runs, a LocalCluster."""
    home = tmp_path_factory.mktemp("scale")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = prefect_env(home, api_url)
    env.update(PREFECT_API_DATABASE_CONNECTION_URL=postgres, PREFECT_WORKER_QUERY_SECONDS="1")
    with ExitStack() as stack:
        server = stack.enter_context(
            started([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, home / "server.log")
        )
        emulator_port = free_port()
        stack.enter_context(
            started(
                [
                    sys.executable,
                    "-m",
                    "parallel_tasks.emulator",
                    "--port",
                    str(emulator_port),
                    "--runs",
                    str(RUNS),
                    "--seed",
                    str(SEED),
                    "--api-key",
                    KEY,
                    "--latency-ms",
                    "50",
                ],
                env,
                home / "emulator.log",
            )
        )
        dask_port = free_port()
        dask = (
            "from dask.distributed import LocalCluster; import time; "
            f"c = LocalCluster(n_workers=2, threads_per_worker=1, host='127.0.0.1', scheduler_port={dask_port}, "
            "dashboard_address=None); print(c.scheduler_address, flush=True); time.sleep(1e9)"
        )
        # Dask workers unpickle what the flow run sends them, the flow's module included: like any Dask
        # deployment they need the same code importable (here, the repository's flows/ folder).
        dask_env = {**env, "PYTHONPATH": os.pathsep.join([str(REPO / "flows"), str(REPO)])}
        stack.enter_context(started([sys.executable, "-c", dask], dask_env, home / "dask.log"))
        wait_for(f"{api_url}/health", server, home / "server.log")
        wait_for(f"http://127.0.0.1:{emulator_port}/v1/tasks/runs/x/input", None, home / "emulator.log", ok=(401,))
        env["SCALE_EMULATOR_URL"] = f"http://127.0.0.1:{emulator_port}"
        env["SCALE_DASK_ADDRESS"] = f"tcp://127.0.0.1:{dask_port}"
        yield Stack(api_url=api_url, env=env, home=home)


def wait_for(url: str, process: subprocess.Popen[bytes] | None, log: Path, ok: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + 240
    while True:
        assert process is None or process.poll() is None, log.read_text()[-4000:]
        assert time.monotonic() < deadline, f"{url} did not answer:\n{log.read_text()[-4000:]}"
        try:
            if httpx.get(url, timeout=2).status_code in ok:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)


SETUP = """
import os
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.filesystems import LocalFileSystem
from parallel_tasks import ParallelCredentials

ParallelCredentials(api_key=os.environ["SCALE_KEY"], base_url=os.environ["SCALE_EMULATOR_URL"]).save(
    "scale-emulator", overwrite=True
)
for name in ("one", "two", "dask"):
    LocalFileSystem(basepath=os.path.join(os.environ["SCALE_RECORDS"], name)).save(f"scale-{name}", overwrite=True)
with get_client(sync_client=True) as client:
    from prefect.client.schemas.actions import WorkPoolCreate
    client.create_work_pool(WorkPoolCreate(name="parallel-scale", type="process"), overwrite=True)
source = flow.from_source(source=os.getcwd(), entrypoint="flows/audit_run_inputs.py:audit_run_inputs")
source.deploy(name="scale-chunk", work_pool_name="parallel-scale")
source.deploy(
    name="scale-chunk-dask",
    work_pool_name="parallel-scale",
    job_variables={"env": {"PARALLEL_TASKS_DASK_ADDRESS": os.environ["SCALE_DASK_ADDRESS"]}},
)
"""

AUDIT = """
import os, sys, time
from parallel_tasks.flows import audit_run_inputs
started = time.monotonic()
state = audit_run_inputs(
    run_ids_file=os.environ["SCALE_IDS"],
    credentials_block="scale-emulator",
    storage_block=f"local-file-system/scale-{sys.argv[1]}",
    chunk_size=int(os.environ["SCALE_CHUNK"]),
    chunk_deployment=f"audit-run-inputs/{sys.argv[2]}",
    max_concurrency=16,
    return_state=True,
)
print(f"WALL {time.monotonic() - started:.2f}")
print(f"STATE {state.name}: {state.message}")
"""

CONFIGS = [
    ("one", 1, "scale-chunk", "1 process worker, default task runner"),
    ("two", 2, "scale-chunk", "2 process workers, default task runner"),
    ("dask", 2, "scale-chunk-dask", "2 process workers, batches on a Dask LocalCluster (2 workers)"),
]


def test_twenty_thousand_runs_in_chunks_across_workers(stack: Stack, tmp_path: Path) -> None:
    run_ids = list(generate_runs(RUNS, seed=SEED))
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(run_ids) + "\n")
    records = tmp_path / "records"
    env = {
        **stack.env,
        "SCALE_KEY": KEY,
        "SCALE_RECORDS": str(records),
        "SCALE_IDS": str(ids_file),
        "SCALE_CHUNK": str(CHUNK),
    }
    stack.run(sys.executable, "-c", SETUP, **{k: v for k, v in env.items() if k.startswith("SCALE_")})

    figures = []
    for name, workers, deployment, label in CONFIGS:
        with ExitStack() as running:
            for number in range(workers):
                log = stack.home / f"worker-{name}-{number}.log"
                command = [PREFECT, "worker", "start", "--pool", POOL, "--limit", str(WORKER_LIMIT)]
                running.enter_context(started(command, stack.env, log))
            audit = stack.run(
                sys.executable,
                "-c",
                AUDIT,
                name,
                deployment,
                timeout=1800,
                **{k: v for k, v in env.items() if k.startswith("SCALE_")},
            )
        wall = float(next(line for line in audit.stdout.splitlines() if line.startswith("WALL")).split()[1])
        state = next(line for line in audit.stdout.splitlines() if line.startswith("STATE"))
        assert state.startswith("STATE Completed"), audit.stdout + audit.stderr[-3000:]
        assert_every_run_recorded_once(records / name, run_ids)
        figures.append((label, wall, RUNS / wall))
    write_figures(figures)


def assert_every_run_recorded_once(folder: Path, run_ids: list[str]) -> None:
    pointers = list(folder.glob("parallel-run-inputs/*/latest.json"))
    assert len(pointers) == len(run_ids) == len({p.parent.name for p in pointers})
    statuses = {}
    for pointer in pointers:
        record = json.loads(pointer.read_text())
        statuses[record["run_id"]] = record["status"]
    assert set(statuses) == set(run_ids)
    assert set(statuses.values()) <= {"ok", "invalid"}, {s for s in statuses.values()}
    contents = [p for p in folder.glob("parallel-run-inputs/*/*.json") if p.name != "latest.json"]
    assert len(contents) == len(run_ids)
    for path in contents:
        verify_record(path.read_bytes())


def write_figures(figures: list[tuple[str, float, float]]) -> None:
    baseline = figures[0][2]
    lines = [
        "# Scale-out: the latest run",
        "",
        f"`make test-scale`: {RUNS:,} run ids in chunks of {CHUNK:,}, each chunk a flow run of a deployment on a",
        "process work pool (each worker runs up to 2 chunk flow runs at once); Prefect server on PostgreSQL; the",
        "emulator with 50 ms latency; 16 requests in flight per chunk. Every run was recorded exactly once each time.",
        "",
        f"- **Machine**: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {platform.platform()}",
        f"- **Date**: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; load average now {os.getloadavg()[0]:.2f}",
        "",
        "| configuration | wall time s | runs/s | x first row |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {label} | {wall:,.1f} | {rate:,.0f} | {rate / baseline:.2f}x |" for label, wall, rate in figures]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
