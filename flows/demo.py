"""The main job on a fresh machine: both example flows against the local emulator, on Prefect's
ephemeral server. ``make demo`` runs it; nothing here needs the network or a real key.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_LOGGERS_HTTPX_LEVEL", "WARNING")  # one line per request is noise here

from parallel_tasks import ParallelCredentials
from parallel_tasks._prefect_server import local_server_defaults, ui_address
from parallel_tasks.emulator import Emulator, demo_runs, run_emulator_server
from parallel_tasks.flows import SUMMARY_ARTIFACT_KEY, audit_run_inputs, fetch_run_input
from parallel_tasks.publishing import AUDIT_REPORT_KEY, MATERIALIZED_EVENT, artifact_key

DEMO_KEY = "demo-key-not-a-secret"
DEMO_BLOCK = "parallel-demo"
MISSING_RUN = "trun_e1d07a55c2b94f3e8a6b0c9d4f21a7e3"  # not in the demo set: a not_found run


def print_table(rows: list[dict[str, object]], columns: list[str]) -> None:
    cells = [[str(row[c])[:64] for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for line in cells:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def main() -> int:
    runs = demo_runs()
    run_ids = list(runs)
    emulator = Emulator(runs, api_keys=[DEMO_KEY])
    with local_server_defaults(), run_emulator_server(emulator) as base_url:
        print(f"Local Parallel API emulator serving {len(runs)} demo runs at {base_url}")
        ParallelCredentials(api_key=DEMO_KEY, base_url=base_url).save(DEMO_BLOCK, overwrite=True)
        print(f"Saved ParallelCredentials block {DEMO_BLOCK!r} (the flows get its name, never the key)\n")

        single = fetch_run_input(run_ids[0], credentials_block=DEMO_BLOCK)
        print(f"\nfetch-run-input {run_ids[0]}: {single['status']} ({single['verdict']}), sha256 {single['sha256']}\n")

        state = audit_run_inputs(
            run_ids=[*run_ids, MISSING_RUN],
            credentials_block=DEMO_BLOCK,
            per_run_artifacts=True,
            fail_on_errors=False,
            return_state=True,
        )
    summary = state.result()
    print(f"\naudit-run-inputs: {state.name}: {state.message}\n")
    print_table(summary.rows, ["run_id", "status", "detail", "processor", "sha256"])
    from prefect.settings import get_current_settings

    records = Path(get_current_settings().results.local_storage_path) / "parallel-run-inputs"
    print(f"\nRecords (redacted canonical JSON, sha256-addressed): {records}/<run id>/")
    print("  check them all (records, latest.json pointers, the manifests' hash chains):")
    print(f"  .venv/bin/python -m parallel_tasks verify --path {records.parent}")
    print("\nArtifacts:")
    print(f"  {SUMMARY_ARTIFACT_KEY}  (the audit's summary table, problems first)")
    print(f"  {AUDIT_REPORT_KEY}  (its report: counts, violations by rule, links to the problem runs)")
    for run_id in run_ids[:3]:
        print(f"  {artifact_key(run_id)}")
    print(f"  ... one markdown artifact per run ({len(run_ids) + 1} runs)")
    print("\nLook at them:")
    print("  .venv/bin/prefect artifact ls")
    print(f"  .venv/bin/prefect artifact inspect {SUMMARY_ARTIFACT_KEY}")
    ui = ui_address()
    if get_current_settings().api.url is None:  # the demo's own server has stopped; this one reads the same database
        print(f"  .venv/bin/prefect server start   # serves the UI at {ui}, then open:")
    print(f"  {ui}/runs       the flow runs, each with its logs and Artifacts tab")
    print(f"  {ui}/artifacts  every artifact (the audit summary: {SUMMARY_ARTIFACT_KEY})")
    print(f"  {ui}/events     the Event Feed: each audited run's event, among Prefect's own")
    print(f"  {ui}/events?events={MATERIALIZED_EVENT}  just the fetched runs' asset materializations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
