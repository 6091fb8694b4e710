"""``python -m parallel_tasks setup``: make a Prefect server ready to run the example flows on a schedule.

Four steps, each comparing what the server has with what it should have before writing anything, so a
second run reports "unchanged" and changes nothing:

1. register the package's block types (what ``prefect block register -m parallel_tasks`` does);
2. create or update the ``ParallelCredentials`` block from ``PARALLEL_API_KEY`` (+ ``PARALLEL_BASE_URL``),
   or point it at a local emulator with ``--emulator BASE_URL``;
3. create the ``parallel-process`` work pool;
4. deploy ``deployments/prefect.yaml`` (``prefect deploy --all``, in a subprocess run from the project folder),
   with the deployment triggers it declares.

The key is read from the environment only, compared as a ``SecretStr`` and never printed; the deploy
subprocess does not even get it in its environment.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import SecretStr

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.responses import DeploymentResponse

__all__ = [
    "BLOCK_NAME",
    "PREFECT_FILE",
    "WORK_POOL",
    "SetupError",
    "add_arguments",
    "deploy",
    "deployment_triggers",
    "ensure_work_pool",
    "main",
    "outdated_deployments",
    "register_block_types",
    "run",
    "save_credentials",
]

BLOCK_NAME = "parallel"
WORK_POOL = "parallel-process"
PREFECT_FILE = Path("deployments") / "prefect.yaml"
UNCHANGED = "unchanged"
SETUP_HELP = "make a Prefect server ready to run the example flows on a schedule"
SETUP_DESCRIPTION = (
    "Make the Prefect server at PREFECT_API_URL ready to run the example flows on a schedule: register the block"
    " types, save the ParallelCredentials block (from PARALLEL_API_KEY, or --emulator), create the work pool and"
    " deploy deployments/prefect.yaml. Each step changes only what differs, so it can run again at any time."
)


class SetupError(Exception):
    """Something the user has to fix first; its message says what."""


def register_block_types(client: SyncPrefectClient) -> str:
    """Register ``ParallelCredentials`` unless the server already has this exact type and schema."""
    from prefect.exceptions import ObjectNotFound

    from parallel_tasks.credentials import ParallelCredentials

    fields = {"name", "logo_url", "documentation_url", "description", "code_example"}
    local = ParallelCredentials._to_block_type().model_dump(include=fields)
    try:
        server = client.read_block_type_by_slug(ParallelCredentials.get_block_type_slug())
        client.read_block_schema_by_checksum(ParallelCredentials._calculate_schema_checksum())
        if server.model_dump(include=fields) == local:
            return UNCHANGED
    except ObjectNotFound:
        pass
    ParallelCredentials.register_type_and_schema()
    return f"registered {ParallelCredentials.get_block_type_slug()}"


def _wanted_key(emulator: str | None) -> SecretStr | None:
    """The key to store: ``PARALLEL_API_KEY``, else the emulator's default key when ``--emulator`` is given."""
    from parallel_tasks.settings import get_settings

    key = get_settings().api_key
    if key is not None:
        return key
    if emulator:
        from parallel_tasks.emulator.core import DEFAULT_API_KEY  # the emulator's well-known test key

        return SecretStr(DEFAULT_API_KEY)
    return None


def save_credentials(name: str, emulator: str | None = None) -> str:
    """Create or update the ``ParallelCredentials`` block ``name``; other fields of an existing block are kept."""
    from parallel_tasks.credentials import ParallelCredentials
    from parallel_tasks.settings import API_KEY_ENV_VAR, get_settings

    base_url = emulator or get_settings().base_url
    key = _wanted_key(emulator)
    try:
        existing: ParallelCredentials | None = cast(ParallelCredentials, ParallelCredentials.load(name))
    except ValueError:  # no block of that name
        existing = None
    if key is None:
        if existing is None:
            raise SetupError(f"Set {API_KEY_ENV_VAR} (or pass --emulator BASE_URL) to create the {name!r} block.")
        return f"{UNCHANGED} ({API_KEY_ENV_VAR} not set: kept the stored key)"
    wanted = ParallelCredentials(api_key=key, base_url=base_url)  # validates the URL
    if existing is None:
        wanted.save(name)
        return f"created (base_url {wanted.base_url})"
    if existing.api_key == wanted.api_key and existing.base_url == wanted.base_url:  # SecretStr compares values
        return UNCHANGED
    existing.model_copy(update={"api_key": wanted.api_key, "base_url": wanted.base_url}).save(name, overwrite=True)
    return f"updated (base_url {wanted.base_url})"


def ensure_work_pool(client: SyncPrefectClient, name: str = WORK_POOL) -> str:
    """Create the process work pool with Prefect's default job template, unless it exists."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        template = ProcessWorker.get_default_base_job_template()
        client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
        return "created (type process)"
    if pool.type != "process":
        raise SetupError(f"Work pool {name!r} exists with type {pool.type!r}; this set-up deploys to a process pool.")
    return UNCHANGED


def _schedule_key(schedule: Mapping[str, Any]) -> tuple[Any, ...]:
    """What identifies a schedule, alike for a prefect.yaml entry and a server schedule."""
    interval = schedule.get("interval")
    seconds = getattr(interval, "total_seconds", lambda: interval)()
    every = ("cron", schedule["cron"]) if "cron" in schedule else ("interval", seconds, schedule.get("rrule"))
    return (*every, schedule.get("timezone") or "UTC", schedule.get("active", True), schedule.get("slug"))


def _wanted_deployment(spec: Mapping[str, Any], pull: Any, project_dir: Path) -> tuple[str, dict[str, Any]]:
    """A deployment's full name and the fields ``prefect deploy`` would give it."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    path, _, function = spec["entrypoint"].rpartition(":")
    flow: Flow[..., Any] = load_flow_from_entrypoint(f"{project_dir / path}:{function}")
    pool = spec.get("work_pool") or {}
    limit = spec.get("concurrency_limit")
    concurrency = (limit.get("limit"), limit.get("collision_strategy")) if isinstance(limit, dict) else (limit, None)
    wanted = {
        "entrypoint": spec["entrypoint"],
        "work_pool_name": pool.get("name"),
        "work_queue_name": pool.get("work_queue_name") or "default",
        "job_variables": pool.get("job_variables") or {},
        "parameters": spec.get("parameters") or {},
        "tags": spec.get("tags") or [],
        "description": spec.get("description") or flow.description,
        "version": spec.get("version") or _inferred_version(spec.get("version_type"), project_dir) or flow.version,
        "pull_steps": spec.get("pull", pull)
        or [{"prefect.deployments.steps.set_working_directory": {"directory": str(project_dir)}}],
        "parameter_openapi_schema": parameter_schema(flow).model_dump(exclude_unset=True),
        "concurrency": concurrency,
        "schedules": [_schedule_key(s) for s in spec.get("schedules") or []],
        "triggers": _wanted_triggers(f"{flow.name}/{spec['name']}", spec.get("triggers") or []),
    }
    return f"{flow.name}/{spec['name']}", wanted


def _trigger_key(automation: Any) -> dict[str, Any]:
    """What identifies a deployment trigger's automation, alike for a prefect.yaml entry and the server's copy
    (the deployment's id left out: the wanted one does not know it yet)."""
    key: dict[str, Any] = automation.model_dump(
        mode="json", include={"name", "description", "enabled", "trigger", "actions"}
    )
    for action in key["actions"]:
        action.pop("deployment_id", None)
    _sort_sets(key["trigger"])
    return key


def _sort_sets(trigger: dict[str, Any]) -> None:
    """Sort a trigger's set-valued fields in place (nested triggers too): the server keeps ``expect``, ``after`` and
    ``for_each`` as sets, so the order it returns them in changes from one server process to the next."""
    for field in ("expect", "after", "for_each"):
        if isinstance(trigger.get(field), list):
            trigger[field] = sorted(trigger[field])
    for nested in trigger.get("triggers") or []:
        _sort_sets(nested)


def deployment_triggers(deployment_name: str, specs: list[dict[str, Any]]) -> list[Any]:
    """The triggers of a prefect.yaml deployment entry, each named as ``prefect deploy`` names it: its own name,
    else ``<flow>/<deployment>__automation_<n>``."""
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(DeploymentTriggerTypes)
    return [
        adapter.validate_python({"name": f"{deployment_name}__automation_{number}", **spec})
        for number, spec in enumerate(specs, start=1)
    ]


def _wanted_triggers(deployment_name: str, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The automations ``prefect deploy`` makes of a deployment's ``triggers``."""
    import uuid

    keys = []
    for trigger in deployment_triggers(deployment_name, specs):
        trigger.set_deployment_id(uuid.UUID(int=0))
        keys.append(_trigger_key(trigger.as_automation()))
    return sorted(keys, key=repr)


def _current_triggers(client: SyncPrefectClient, deployment_id: Any) -> list[dict[str, Any]]:
    """The automations that run this deployment (an automation added by hand that runs it counts too, and then
    every set-up redeploys; ``prefect deploy`` replaces only the ones it made)."""
    related = client.read_resource_related_automations(f"prefect.deployment.{deployment_id}")
    runs_it = [
        a for a in related if any(getattr(action, "deployment_id", None) == deployment_id for action in a.actions)
    ]
    return sorted((_trigger_key(a) for a in runs_it), key=repr)


def _inferred_version(version_type: str | None, project_dir: Path) -> str | None:
    """The version ``prefect deploy`` gives a deployment whose file names none: the commit, when the project
    is a git clone with a remote (or a CI's variables say so); else it falls back to the flow's version."""
    from prefect._internal.versioning import VersionType, get_inferred_version_info
    from prefect.client.schemas.objects import VersionInfo
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect.utilities.filesystem import tmpchdir

    with tmpchdir(str(project_dir)):  # prefect deploy runs from there, and asks git there
        info: VersionInfo | None = run_coro_as_sync(
            get_inferred_version_info(VersionType(version_type) if version_type else None)
        )
    return info.version if info else None


def _current_deployment(deployment: DeploymentResponse) -> dict[str, Any]:
    """The same fields, as the server has them."""
    limit = deployment.global_concurrency_limit
    options = deployment.concurrency_options
    schedules = [{**s.schedule.model_dump(), "active": s.active, "slug": s.slug} for s in deployment.schedules]
    return {
        **deployment.model_dump(
            include={
                "entrypoint",
                "work_pool_name",
                "work_queue_name",
                "job_variables",
                "parameters",
                "tags",
                "description",
                "version",
                "pull_steps",
                "parameter_openapi_schema",
            }
        ),
        "concurrency": (
            limit.limit if limit else None,
            options.collision_strategy.value if options and options.collision_strategy else None,
        ),
        "schedules": [_schedule_key(s) for s in schedules],
    }


def outdated_deployments(client: SyncPrefectClient, prefect_file: Path, project_dir: Path) -> list[str]:
    """Deployments of ``prefect_file`` that are missing or differ on the server, with the fields that differ."""
    import yaml  # type: ignore[import-untyped]  # PyYAML comes with Prefect
    from prefect.exceptions import ObjectNotFound

    config = yaml.safe_load(prefect_file.read_text(encoding="utf-8")) or {}
    outdated = []
    for spec in config.get("deployments") or []:
        name, wanted = _wanted_deployment(spec, config.get("pull"), project_dir)
        try:
            deployment = client.read_deployment_by_name(name)
        except ObjectNotFound:
            outdated.append(f"{name} (new)")
            continue
        current = {**_current_deployment(deployment), "triggers": _current_triggers(client, deployment.id)}
        changed = [field for field, value in wanted.items() if current.get(field) != value]
        if changed:
            outdated.append(f"{name} ({', '.join(changed)})")
    return outdated


def deploy(client: SyncPrefectClient, project_dir: Path, prefect_file: Path = PREFECT_FILE) -> str:
    """Run ``prefect deploy --all`` when a deployment is missing or differs; the key stays out of its environment."""
    from parallel_tasks.settings import API_KEY_ENV_VAR

    prefect_file = project_dir / prefect_file
    if not prefect_file.is_file():
        raise SetupError(f"No {prefect_file}: run this from the repository root or pass --project-dir.")
    outdated = outdated_deployments(client, prefect_file, project_dir)
    if not outdated:
        return UNCHANGED
    env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV_VAR}  # the subprocess's, not a setting
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)]
    done = subprocess.run(command, cwd=project_dir, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise SetupError(f"prefect deploy failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return "deployed " + "; ".join(outdated)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``setup`` command's options."""
    parser.add_argument(
        "--block-name", default=BLOCK_NAME, help=f"ParallelCredentials block name (default {BLOCK_NAME})"
    )
    parser.add_argument(
        "--emulator",
        metavar="BASE_URL",
        help="point the block at a local emulator (key: PARALLEL_API_KEY, else the emulator's default test key)",
    )
    parser.add_argument("--project-dir", type=Path, default=Path.cwd(), help="the repository root (default: .)")
    parser.add_argument("--no-deploy", action="store_true", help="skip the deployments (for deployments/serve.py)")


def run(args: argparse.Namespace) -> int:
    """Run the steps, printing one line per step; 0 on success, 1 with a message when something must be fixed."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        print("PREFECT_API_URL is not set: start `prefect server start` and run", file=sys.stderr)
        print("  prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api", file=sys.stderr)
        return 1
    project_dir = Path(args.project_dir).resolve()
    changed = False

    def report(step: str, outcome: str) -> None:
        nonlocal changed
        changed = changed or not outcome.startswith(UNCHANGED)
        print(f"{step}: {outcome}", flush=True)

    try:
        with get_client(sync_client=True) as client:
            if (error := client.api_healthcheck()) is not None:
                raise SetupError(f"The Prefect API at {client.api_url} does not answer: {error}")
            report("block types", register_block_types(client))
            report(f"credentials block {args.block_name!r}", save_credentials(args.block_name, args.emulator))
            report(f"work pool {WORK_POOL!r}", ensure_work_pool(client))
            if not args.no_deploy:
                report("deployments", deploy(client, project_dir))
    except SetupError as error:
        print(f"setup: {error}", file=sys.stderr)
        return 1
    print("setup: done" if changed else f"setup: {UNCHANGED}")
    print(next_steps(project_dir, args.no_deploy))
    return 0


def next_steps(project_dir: Path, no_deploy: bool) -> str:
    """What to run next (a worker for the deployments, or the serving process) and where to watch the runs."""
    from parallel_tasks._prefect_server import ui_address

    bin_dir = Path(sys.executable).parent
    if bin_dir.is_relative_to(project_dir):  # the project's virtualenv: say .venv/bin/...
        bin_dir = bin_dir.relative_to(project_dir)
    if no_deploy:
        start = f"serve the flows, from the repository root:\n  {bin_dir / 'python'} deployments/serve.py"
    else:
        start = f"start a worker, from the repository root:\n  {bin_dir / 'prefect'} worker start --pool {WORK_POOL}"
    return f"Next: {start}\nThen watch the runs at {ui_address()}/runs"


def main(argv: list[str] | None = None) -> int:
    """``python -m parallel_tasks setup [options]``."""
    parser = argparse.ArgumentParser(prog="python -m parallel_tasks", description="prefect-parallel-tasks commands.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_arguments(commands.add_parser("setup", help=SETUP_HELP, description=SETUP_DESCRIPTION))
    commands.add_parser("verify", help="check the audit trail (python -m parallel_tasks verify --help)")
    from parallel_tasks.webhooks import add_commands as add_webhook_commands

    add_webhook_commands(commands)
    args = parser.parse_args(argv)
    return int(args.handler(args)) if hasattr(args, "handler") else run(args)
