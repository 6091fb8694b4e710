"""Deployments end to end, with the real parts: ``prefect server start``, ``python -m parallel_tasks setup``
(deploying ``deployments/prefect.yaml``), ``prefect deployment run``, ``prefect worker start --run-once``, the
server's scheduler, and the emulator over HTTP. The tests share one server and run in file order.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import DeploymentScheduleCreate, WorkPoolCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.exceptions import ObjectNotFound

from parallel_tasks import ParallelCredentials
from parallel_tasks import server_setup as setup
from parallel_tasks.audit import load_run_ids
from parallel_tasks.flows import SUMMARY_ARTIFACT_KEY
from parallel_tasks.lineage import artifact_key, latest_key, verify_record
from parallel_tasks.manifests import chain_folder
from parallel_tasks.publishing import AUDIT_REPORT_KEY
from parallel_tasks.verify import LocalStore, verify_store
from tests.e2e.conftest import BLOCK, E2E_KEY, POOL, REPO, SetupRuns, Stack, started

pytestmark = pytest.mark.e2e

AUDIT = "audit-run-inputs/nightly"
FETCH = "fetch-run-input/on-demand"
RUN_ID = "trun_bbf5d6d60a5a8aca6d19f35c5426fab0"
SCHEDULED_RUN_ID = "trun_298c00492d5fc38ee78951c3257ff3a0"
SERVED_RUN_ID = "trun_97f403dc1d430d70f55d51f1dfc81ab5"


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[SyncPrefectClient]:
    """A client of the e2e server (not of the test session's own Prefect)."""
    with SyncPrefectClient(stack.api_url) as prefect_client:
        yield prefect_client


def steps(output: str) -> dict[str, str]:
    """``step: outcome`` lines of the set-up output (up to ``setup: ...``; what to do next follows)."""
    steps_part = output.partition("\nNext: ")[0]
    return dict(line.split(": ", 1) for line in steps_part.splitlines() if ": " in line)


def test_setup_configures_everything_then_changes_nothing(
    setup_runs: SetupRuns, client: SyncPrefectClient, emulator_url: str, stack: Stack
) -> None:
    first, second = steps(setup_runs[0].stdout), steps(setup_runs[1].stdout)
    worker = Path(sys.executable).parent.relative_to(REPO) / "prefect"
    ui = stack.api_url.removesuffix("/api")
    for run in setup_runs:  # then what to run next, and where to look
        assert run.stdout.endswith(
            f"Next: start a worker, from the repository root:\n  {worker} worker start --pool {POOL}\n"
            f"Then watch the runs at {ui}/runs\n"
        ), run.stdout
    assert first == {
        "block types": "registered parallel-credentials",
        f"credentials block {BLOCK!r}": f"created (base_url {emulator_url})",
        f"work pool {POOL!r}": "created (type process)",
        "deployments": f"deployed {AUDIT} (new); audit-run-inputs/audit-chunk (new); {FETCH} (new); "
        "fetch-run-input/on-completion (new)",
        "setup": "done",
    }
    assert set(second.values()) == {"unchanged"} and len(second) == 5, setup_runs[1].stdout
    assert not any(E2E_KEY in run.stdout + run.stderr for run in setup_runs)

    assert client.read_work_pool(POOL).type == "process"
    audit, fetch = client.read_deployment_by_name(AUDIT), client.read_deployment_by_name(FETCH)
    (nightly,) = audit.schedules
    assert nightly.active and nightly.schedule.model_dump() == {"cron": "0 2 * * *", "timezone": "UTC", "day_or": True}
    assert audit.parameters["credentials_block"] == fetch.parameters["credentials_block"] == BLOCK
    assert audit.global_concurrency_limit and audit.global_concurrency_limit.limit == 1
    assert fetch.global_concurrency_limit and fetch.global_concurrency_limit.limit == 4
    assert {"parallel", "nightly"} <= set(audit.tags)
    assert audit.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    for deployment in (audit, fetch):  # the key is in the block only: not a parameter, not a job variable
        assert E2E_KEY not in json.dumps(deployment.model_dump(mode="json"))


@pytest.fixture
def on_stack(stack: Stack, setup_runs: SetupRuns, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's Prefect settings pointed at the e2e server, for calling the set-up steps in-process."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PARALLEL_API_KEY", raising=False)
    monkeypatch.delenv("PARALLEL_BASE_URL", raising=False)
    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        yield


def test_command_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        setup.main(["--help"])
    shown = capsys.readouterr().out
    assert exited.value.code == 0
    assert "setup make a Prefect server ready to run the example flows on a schedule" in " ".join(shown.split())
    assert "``" not in shown and ":mod:" not in shown


def test_setup_without_deployments_says_to_serve_them() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4999/api"}):
        told = setup.next_steps(Path(sys.executable).parent.parent.parent, no_deploy=True)
    venv = Path(sys.executable).parent.parent.name
    assert told == (
        f"Next: serve the flows, from the repository root:\n  {venv}/bin/python deployments/serve.py\n"
        "Then watch the runs at http://127.0.0.1:4999/runs"
    )


def test_setup_steps_update_what_changed_and_keep_what_is_not_given(
    on_stack: None, client: SyncPrefectClient, emulator_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    with pytest.raises(setup.SetupError, match="PARALLEL_API_KEY"):
        setup.save_credentials(name)  # no key anywhere and no block yet
    monkeypatch.setenv("PARALLEL_API_KEY", "key-one")
    assert setup.save_credentials(name, emulator_url).startswith("created")
    assert setup.save_credentials(name, emulator_url) == "unchanged"
    monkeypatch.setenv("PARALLEL_API_KEY", "key-two")
    assert setup.save_credentials(name, emulator_url).startswith("updated")
    monkeypatch.delenv("PARALLEL_API_KEY")
    assert setup.save_credentials(name).startswith("unchanged (PARALLEL_API_KEY not set")
    assert ParallelCredentials.load(name).base_url == emulator_url

    assert setup.register_block_types(client) == setup.ensure_work_pool(client) == "unchanged"
    client.create_work_pool(WorkPoolCreate(name="e2e-not-process", type="prefect-agent"))
    with pytest.raises(setup.SetupError, match="type 'prefect-agent'"):
        setup.ensure_work_pool(client, "e2e-not-process")


def test_setup_expects_the_version_prefect_deploy_infers_from_git(tmp_path: Path) -> None:
    """In a clone with a remote (CI's clean clone), ``prefect deploy`` versions a deployment by its commit;
    elsewhere the flow's own version is used. Setup must expect the same, or its second run redeploys."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "--allow-empty", "-m", "first")
    assert setup._inferred_version(None, tmp_path) is None  # no remote: prefect deploy falls back to the flow's
    git("remote", "add", "origin", "https://github.com/acme/pipelines.git")
    assert setup._inferred_version(None, tmp_path) == git("rev-parse", "HEAD")[:8]
    assert setup._inferred_version("prefect:simple", tmp_path) is None


def test_setup_sees_which_deployment_fields_differ(on_stack: None, client: SyncPrefectClient, tmp_path: Path) -> None:
    text = (REPO / "deployments" / "prefect.yaml").read_text()
    assert setup.outdated_deployments(client, REPO / "deployments" / "prefect.yaml", REPO) == []
    changed = tmp_path / "prefect.yaml"
    changed.write_text(text.replace('cron: "0 2 * * *"', 'cron: "0 3 * * *"').replace("limit: 1", "limit: 2"))
    assert setup.outdated_deployments(client, changed, REPO) == [f"{AUDIT} (concurrency, schedules)"]
    changed.write_text(text.replace("name: on-demand", "name: on-demand-2").replace("fetch, on-demand]", "fetch]"))
    assert setup.outdated_deployments(client, changed, REPO) == ["fetch-run-input/on-demand-2 (new)"]
    changed.write_text(text.replace("within: 0\n", "within: 60\n"))
    assert setup.outdated_deployments(client, changed, REPO) == ["fetch-run-input/on-completion (triggers)"]


def has_children(pid: int) -> bool:
    """Whether process ``pid`` has child processes (Linux's /proc, elsewhere ``pgrep -P``)."""
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():
        return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, check=False).returncode == 0
    try:
        return any(f.read_text().strip() for f in tasks.glob("*/children"))
    except OSError:  # a thread ended while we read
        return True


def wait_for_children(pid: int, timeout: float) -> None:
    """Wait until process ``pid`` has no child processes left, polling; fail if that takes over ``timeout``."""
    deadline = time.monotonic() + timeout
    while has_children(pid):
        assert time.monotonic() < deadline, f"process {pid} still has children after {timeout:g}s"
        time.sleep(0.2)


def completed(client: SyncPrefectClient, flow_run_id: str | uuid.UUID) -> FlowRun:
    flow_run = client.read_flow_run(uuid.UUID(str(flow_run_id)))
    assert flow_run.state is not None
    assert flow_run.state.type == StateType.COMPLETED, (flow_run.name, flow_run.state)
    return flow_run


def stored_record(stack: Stack, run_id: str) -> dict[str, object]:
    """The run's latest outcome, after checking the content record it points to."""
    latest = json.loads((stack.results / latest_key(run_id)).read_text())
    content = stack.results / latest["record_key"]
    record = verify_record(content.read_bytes())  # raises if the stored record does not match its hash
    assert record.run_id == run_id and record.sha256 == latest["sha256"]
    return dict(latest)


def test_deployment_runs_complete_on_a_process_worker(
    stack: Stack, setup_runs: SetupRuns, client: SyncPrefectClient
) -> None:
    fetch_run = stack.deployment_run(FETCH, f"run_id={RUN_ID}")
    audit_run = stack.deployment_run(AUDIT)

    stack.worker_once()

    fetched, audited = completed(client, fetch_run), completed(client, audit_run)
    assert fetched.parameters == {"run_id": RUN_ID, "credentials_block": BLOCK}
    listed = load_run_ids(REPO / "deployments" / "run_ids.txt")
    assert f"{len(set(listed))} runs" in (audited.state.message if audited.state else "")
    for run_id in listed:
        assert stored_record(stack, run_id)["status"] in ("ok", "invalid")
    keys = [artifact_key(RUN_ID), SUMMARY_ARTIFACT_KEY, AUDIT_REPORT_KEY]
    artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    made_by = {artifact.key: artifact.flow_run_id for artifact in artifacts}
    assert made_by == {keys[0]: fetched.id, keys[1]: audited.id, keys[2]: audited.id}
    # Each deployment has its manifest chain, and the trail verifies.
    for deployment in (AUDIT, FETCH):
        assert list((stack.results / chain_folder(deployment)).glob("00000001-*.json")), deployment
    assert verify_store(LocalStore(stack.results)).clean


def test_interval_schedule_gets_runs_from_the_scheduler_and_the_worker_runs_one(
    stack: Stack, setup_runs: SetupRuns, client: SyncPrefectClient
) -> None:
    on_demand = client.read_deployment_by_name(FETCH)
    deployment_id = client.create_deployment(
        flow_id=on_demand.flow_id,
        name=f"every-10s-{uuid.uuid4().hex[:6]}",
        entrypoint=on_demand.entrypoint,
        work_pool_name=POOL,
        pull_steps=on_demand.pull_steps,
        parameter_openapi_schema=on_demand.parameter_openapi_schema,
        parameters={"run_id": SCHEDULED_RUN_ID, "credentials_block": BLOCK},
        schedules=[DeploymentScheduleCreate(schedule=IntervalSchedule(interval=timedelta(seconds=10)), active=True)],
    )
    only_this = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    try:
        deadline = time.monotonic() + 60
        while True:  # the scheduler service creates the runs; nothing here does
            runs = client.read_flow_runs(deployment_filter=only_this)
            now = datetime.now(timezone.utc)
            if any(r.expected_start_time and r.expected_start_time <= now + timedelta(seconds=8) for r in runs):
                break
            assert time.monotonic() < deadline, "the scheduler made no run due within 60 s"
            time.sleep(1)
        assert all(r.auto_scheduled for r in runs)

        stack.worker_once("--limit", "1")

        runs = client.read_flow_runs(deployment_filter=only_this)
        done = [r for r in runs if r.state and r.state.type == StateType.COMPLETED]
        assert done, [(r.name, r.state) for r in runs]
        assert stored_record(stack, SCHEDULED_RUN_ID)["status"] == "ok"
    finally:
        client.delete_deployment(deployment_id)  # stop the schedule


def test_serve_registers_both_deployments_and_runs_a_flow_run(
    stack: Stack, setup_runs: SetupRuns, client: SyncPrefectClient
) -> None:
    log = stack.home / "serve.log"
    serve_env = {**stack.env, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    with started([sys.executable, str(REPO / "deployments" / "serve.py")], serve_env, log) as serving:
        deadline = time.monotonic() + 90
        while True:
            try:
                fetch = client.read_deployment_by_name("fetch-run-input/on-demand-serve")
                break
            except ObjectNotFound:
                assert time.monotonic() < deadline, f"serve.py registered nothing in 90 s:\n{log.read_text()}"
                time.sleep(1)
        nightly = client.read_deployment_by_name("audit-run-inputs/nightly-serve")
        assert nightly.schedules[0].schedule.model_dump()["cron"] == "0 2 * * *"
        on_completion = client.read_deployment_by_name("fetch-run-input/on-completion-serve")
        try:  # the trigger prefect.yaml declares, named after the served deployment
            specs = yaml.safe_load((REPO / setup.PREFECT_FILE).read_text())["deployments"]
            (yaml_trigger,) = next(d for d in specs if d["name"] == "on-completion")["triggers"]
            unnamed = {key: value for key, value in yaml_trigger.items() if key != "name"}
            wanted = setup._wanted_triggers("fetch-run-input/on-completion-serve", [unnamed])
            assert [key["name"] for key in wanted] == ["fetch-run-input/on-completion-serve__automation_1"]
            assert setup._current_triggers(client, on_completion.id) == wanted
        finally:  # or the deployments' tests that follow would see each event start a served run too
            client.delete_resource_owned_automations(f"prefect.deployment.{on_completion.id}")
        flow_run = client.create_flow_run_from_deployment(fetch.id, parameters={"run_id": SERVED_RUN_ID})
        while True:
            state = client.read_flow_run(flow_run.id).state
            if state and state.is_final():
                break
            assert time.monotonic() < deadline + 90, f"the served run did not finish:\n{log.read_text()}"
            time.sleep(1)
        # A runner stopped while a finished run's process is still exiting marks that run Cancelled: let it exit.
        wait_for_children(serving.pid, timeout=30)
    completed(client, flow_run.id)
    assert stored_record(stack, SERVED_RUN_ID)["status"] == "ok"
