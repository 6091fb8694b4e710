"""Time an audit of 200 runs with and without one hostile task-spec schema among them.

    .venv/bin/python benchmarks/hostile_schema.py [--repeat 2]

One Prefect test server, the emulator over HTTP in this process, records in a temporary folder.
The hostile run's schema doubles its ``$ref``s at each of 18 levels (2**18 leaf checks unbounded).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

KEY = "bench-key-0123456789"
HOSTILE = "trun_" + "e" * 32


def doubling_refs(levels: int = 18) -> dict[str, Any]:
    defs: dict[str, Any] = {
        f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]} for i in range(levels)
    }
    defs[f"d{levels}"] = {"type": "integer"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    from prefect.filesystems import LocalFileSystem
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from flows.audit_run_inputs import audit_run_inputs
    from parallel_tasks import ParallelCredentials
    from parallel_tasks.emulator import Emulator, generate_runs, run_emulator_server

    innocent = generate_runs(200, seed=5)
    hostile = copy.deepcopy(next(iter(innocent.values())))
    hostile["input"] = {}
    hostile["task_spec"] = {
        "output_schema": {"type": "text"},
        "input_schema": {"type": "json", "json_schema": doubling_refs()},
    }
    ids = list(innocent)
    sets = {"200 innocent": ids, "199 innocent + 1 hostile": [*ids[:100], HOSTILE, *ids[100:199]]}

    with (
        prefect_test_harness(server_startup_timeout=120),
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
        run_emulator_server(Emulator({**innocent, HOSTILE: hostile}, api_keys=[KEY])) as base_url,
        tempfile.TemporaryDirectory() as folder,
    ):
        ParallelCredentials(api_key=KEY, base_url=base_url).save("bench", overwrite=True)
        audit_run_inputs(run_ids=ids[:20], credentials_block="bench", return_state=True)  # warm-up
        for _ in range(args.repeat):
            for name, run_ids in sets.items():
                block = f"records-{uuid.uuid4().hex[:8]}"
                LocalFileSystem(basepath=str(Path(folder) / block)).save(block, overwrite=True)
                start = time.perf_counter()
                state = audit_run_inputs(
                    run_ids=run_ids, credentials_block="bench", storage_block=f"local-file-system/{block}",
                    batch_size=50, return_state=True,
                )  # fmt: skip
                elapsed = time.perf_counter() - start
                print(f"{name:26s} {elapsed:6.2f} s  {state.result().describe()}", flush=True)


if __name__ == "__main__":
    main()
