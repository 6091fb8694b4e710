"""The single-process alternative to prefect.yaml + a worker: one long-running process that registers the
deployments (with their schedules and the on-completion trigger) and runs their flow runs itself. No work pool,
no worker.

    prefect server start                                        # another terminal
    python -m parallel_tasks setup --no-deploy                  # the ParallelCredentials block (and block types)
    python deployments/serve.py                                 # Ctrl-C (or SIGTERM) stops it
    prefect deployment run fetch-run-input/on-demand-serve --param run_id=trun_...
    python -m parallel_tasks webhooks serve --deployment fetch-run-input/on-completion-serve   # audits as runs end

It checks for scheduled runs every 10 s (PREFECT_RUNNER_POLL_FREQUENCY); when it is stopped its schedules
pause, and nothing runs until it is started again. For runs that must happen even when this process is down,
use deployments/prefect.yaml and a worker. Use one or the other for on-completion audits: with both deployed,
each event starts a flow run of each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from parallel_tasks.flows import audit_run_inputs, fetch_run_input
from parallel_tasks.server_setup import deployment_triggers

REPO = Path(__file__).resolve().parent.parent

CREDENTIALS_BLOCK = "parallel"  # the block's name; the key never becomes a parameter
RUN_IDS_FILE = REPO / "deployments" / "run_ids.txt"
PREFECT_FILE = REPO / "deployments" / "prefect.yaml"


def on_completion_triggers(deployment_name: str) -> list[Any]:
    """The triggers of prefect.yaml's ``on-completion`` deployment (their one definition), renamed for
    ``deployment_name`` so that the served deployment's automations are told apart from the deployed ones."""
    (spec,) = [d for d in yaml.safe_load(PREFECT_FILE.read_text())["deployments"] if d["name"] == "on-completion"]
    unnamed = [{key: value for key, value in trigger.items() if key != "name"} for trigger in spec["triggers"]]
    return deployment_triggers(deployment_name, unnamed)


def deployments() -> list[RunnerDeployment]:
    """The deployments of deployments/prefect.yaml but the chunks', named ``*-serve`` so that both can coexist."""
    nightly = audit_run_inputs.to_deployment(
        name="nightly-serve",
        description="Audit the run inputs listed in deployments/run_ids.txt every night at 02:00 UTC.",
        schedules=[Cron("0 2 * * *", timezone="UTC", slug="nightly-0200-utc")],
        parameters={"credentials_block": CREDENTIALS_BLOCK, "run_ids_file": str(RUN_IDS_FILE)},
        tags=["parallel", "audit", "nightly"],
        concurrency_limit=1,
    )
    on_demand = fetch_run_input.to_deployment(
        name="on-demand-serve",
        description="Fetch, validate and record one run's input; run it with --param run_id=trun_...",
        parameters={"credentials_block": CREDENTIALS_BLOCK},
        tags=["parallel", "fetch", "on-demand"],
        concurrency_limit=4,
    )
    on_completion = fetch_run_input.to_deployment(
        name="on-completion-serve",
        description="Fetch, validate and record a run's input as soon as Parallel reports it completed or failed.",
        parameters={"credentials_block": CREDENTIALS_BLOCK},
        tags=["parallel", "fetch", "on-completion"],
        concurrency_limit=4,
        triggers=on_completion_triggers("fetch-run-input/on-completion-serve"),
    )
    return [nightly, on_demand, on_completion]


if __name__ == "__main__":
    serve(*deployments())
