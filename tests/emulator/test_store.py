"""The run store: serialization once, and the JSON / JSON Lines file formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parallel_tasks.emulator import RunStore, demo_runs

BODY = {"processor": "base", "input": "Qu'est-ce que le PIB ?", "metadata": {"n": 1}}


def test_bodies_are_serialized_once_and_compactly() -> None:
    store = RunStore({"r": BODY})
    first, second = store.get("r"), store.get("r")
    assert first is second  # the same bytes object: nothing is re-encoded per request
    assert first == json.dumps(BODY, ensure_ascii=False, separators=(",", ":")).encode()
    assert store.body("r") == BODY


def test_mapping_api() -> None:
    store = RunStore()
    store.add("a", BODY)
    store.update({"b": BODY, "c": b"{}"})
    assert len(store) == 3
    assert "b" in store and "z" not in store
    assert list(store) == store.ids() == ["a", "b", "c"]
    assert store.get("z") is None
    with pytest.raises(KeyError):
        store.body("z")


def test_loads_a_json_object(tmp_path: Path) -> None:
    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"r1": BODY, "r2": {"processor": "lite", "input": "x"}}))
    store = RunStore.from_file(path)
    assert store.ids() == ["r1", "r2"]
    assert store.body("r1") == BODY


def test_loads_a_json_array_of_records_ignoring_extra_keys(tmp_path: Path) -> None:
    path = tmp_path / "runs.json"
    path.write_text(json.dumps([{"run_id": "r1", "run_input": BODY, "note": "anything"}]))
    assert RunStore.from_file(path).body("r1") == BODY


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson"])
def test_loads_json_lines_skipping_blank_lines(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"runs{suffix}"
    lines = [json.dumps({"run_id": f"r{i}", "run_input": BODY}) for i in range(3)]
    path.write_text("\n".join([lines[0], "", lines[1], lines[2], ""]))
    store = RunStore()
    assert store.load(path) == 3
    assert store.ids() == ["r0", "r1", "r2"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", "[1]", r"bad.json\[0\]: expected an object"),
        ("bad.json", '[{"run_id": "r"}]', "expected an object"),
        ("bad.json", '[{"run_id": "r", "run_input": "text"}]', "run_input must be a JSON object"),
        ("bad.json", '{"r": [1, 2]}', "the body of 'r' must be a JSON object"),
        ("bad.json", '"just a string"', "expected a JSON object or array"),
        ("bad.jsonl", '{"run_id": "r", "run_input": {}}\n{"run_id": 5, "run_input": {}}', r"bad.jsonl:2"),
    ],
)
def test_malformed_files_say_where(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        RunStore.from_file(path)


def test_demo_file_loads_through_the_store() -> None:
    from importlib import resources

    path = Path(str(resources.files("parallel_tasks.emulator").joinpath("data/demo_runs.json")))
    store = RunStore.from_file(path)
    assert {run_id: store.body(run_id) for run_id in store} == demo_runs()
