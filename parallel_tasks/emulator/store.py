"""The runs the emulator serves, held as bytes serialized once, when stored.

File formats accepted by ``RunStore.load`` (chosen by extension: ``.jsonl``/``.ndjson`` is JSON Lines,
anything else JSON):

- JSON object: ``{"trun_...": {<TaskRunInput body>}, ...}``.
- JSON array of records, or JSON Lines with one record per line (blank lines skipped):
  ``{"run_id": "trun_...", "run_input": {<TaskRunInput body>}}``. Other keys of a record (such as
  ``"note"``) are ignored.

Bodies are stored as given, without validation, so a test can serve a body the API should never send.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["RunBody", "RunStore", "encode_body"]

RunBody = Mapping[str, Any] | bytes
"""A run's body: a JSON object, or raw bytes served verbatim (even if not JSON)."""


def encode_body(body: RunBody) -> bytes:
    """Compact UTF-8 JSON for a body (bytes pass through unchanged)."""
    if isinstance(body, bytes):
        return body
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _record(item: Any, where: str) -> tuple[str, Any]:
    """The (run_id, body) of one record, or a ValueError saying where the file is wrong."""
    if not isinstance(item, dict) or not isinstance(item.get("run_id"), str) or "run_input" not in item:
        raise ValueError(f'{where}: expected an object {{"run_id": "...", "run_input": {{...}}}}')
    if not isinstance(item["run_input"], dict):
        raise ValueError(f"{where}: run_input must be a JSON object")
    return item["run_id"], item["run_input"]


class RunStore:
    """A mapping of run id to the response body served for it.

    Example:
        >>> store = RunStore({"trun_1": {"processor": "base", "input": "What is 2+2?"}})
        >>> store.get("trun_1")
        b'{"processor":"base","input":"What is 2+2?"}'
    """

    def __init__(self, runs: Mapping[str, RunBody] | None = None) -> None:
        self._bodies: dict[str, bytes] = {}
        if runs:
            self.update(runs)

    def add(self, run_id: str, body: RunBody) -> None:
        """Store (or replace) one run; a mapping is serialized now, never per request."""
        self._bodies[run_id] = encode_body(body)

    def update(self, runs: Mapping[str, RunBody]) -> None:
        """Store several runs."""
        for run_id, body in runs.items():
            self.add(run_id, body)

    def get(self, run_id: str) -> bytes | None:
        """The stored bytes for a run, or None."""
        return self._bodies.get(run_id)

    def body(self, run_id: str) -> Any:
        """The stored body parsed back from JSON (raises KeyError for an unknown run)."""
        return json.loads(self._bodies[run_id])

    def ids(self) -> list[str]:
        """The run ids, in insertion order."""
        return list(self._bodies)

    def __len__(self) -> int:
        return len(self._bodies)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._bodies

    def __iter__(self) -> Iterator[str]:
        return iter(self._bodies)

    def load(self, path: str | Path) -> int:
        """Add the runs of a JSON or JSON Lines file (format in the module docstring); return how many."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        runs: dict[str, Any] = {}
        if path.suffix in (".jsonl", ".ndjson"):
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    run_id, body = _record(json.loads(line), f"{path}:{number}")
                    runs[run_id] = body
        else:
            data = json.loads(text)
            if isinstance(data, list):
                runs.update(_record(item, f"{path}[{index}]") for index, item in enumerate(data))
            elif isinstance(data, dict):
                for run_id, body in data.items():
                    if not isinstance(body, dict):
                        raise ValueError(f"{path}: the body of {run_id!r} must be a JSON object")
                runs = data
            else:
                raise ValueError(f"{path}: expected a JSON object or array")
        self.update(runs)
        return len(runs)

    @classmethod
    def from_file(cls, path: str | Path) -> RunStore:
        """A store holding the runs of one file."""
        store = cls()
        store.load(path)
        return store
