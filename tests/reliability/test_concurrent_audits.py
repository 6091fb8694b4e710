"""Two audits of overlapping runs at the same time, each in a process of its own, into one store: the
manifest chain stays a line (the append is serialized) and verify finds the store clean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from parallel_tasks.emulator import Emulator, FaultConfig
from parallel_tasks.verify import LocalStore, verify_store
from tests.reliability.test_crash_rerun import start_audit, stop_group, subprocess_env

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(240)]


def test_two_concurrent_audits_then_verify_passes(
    emu: Emulator, rel_url: str, rel_runs: dict[str, Any], tmp_path: Path
) -> None:
    run_ids = list(rel_runs)[:120]
    halves = {"a": run_ids[:80], "b": run_ids[40:]}  # 40 runs audited by both
    env = subprocess_env(tmp_path, rel_url)
    emu.set_faults(FaultConfig(latency_ms=100))  # both audits are still fetching when the other starts
    processes = {}
    try:
        for name, ids in halves.items():
            (tmp_path / f"{name}.txt").write_text("\n".join(ids) + "\n")
            processes[name] = start_audit(tmp_path / f"{name}.txt", env, tmp_path / f"{name}.log")
        for name, process in processes.items():
            assert process.wait(timeout=180) == 0, (tmp_path / f"{name}.log").read_text()
    finally:
        for process in processes.values():
            stop_group(process)
    report = verify_store(LocalStore(tmp_path / "storage"))
    assert report.clean, report.findings
    assert report.counts["manifests"] == 2 and report.counts["runs"] == 120 and not report.notes
    chain = sorted((tmp_path / "storage/parallel-run-inputs/_manifests/audit-run-inputs").glob("0*.json"))
    assert [p.name[:8] for p in chain] == ["00000001", "00000002"]
