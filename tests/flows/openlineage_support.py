"""For the OpenLineage tests: a lineage backend on loopback, and validation of every event against the
OpenLineage spec (2-0-2), the schema of each facet it carries, and the package's own facet schema."""

from __future__ import annotations

import gzip
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from parallel_tasks.openlineage import CUSTOM_FACET_SCHEMA
from tests.conftest import REPO

SPEC = REPO / "spec" / "openlineage"
RUN_EVENT_REF = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"


def _registry() -> tuple[Registry[Any], set[str]]:
    paths = [SPEC / "OpenLineage.json", *sorted((SPEC / "facets").glob("*.json")), CUSTOM_FACET_SCHEMA]
    schemas = [json.loads(path.read_text()) for path in paths]
    registry: Registry[Any] = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas
    )
    return registry, {schema["$id"] for schema in schemas}


REGISTRY, SCHEMA_IDS = _registry()
_FORMATS = Draft202012Validator.FORMAT_CHECKER


def facets_of(event: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, facet) for every facet of an event: run, job, each dataset's facets and input/output facets."""
    yield from (("run." + name, facet) for name, facet in event["run"].get("facets", {}).items())
    yield from (("job." + name, facet) for name, facet in event["job"].get("facets", {}).items())
    for side in ("inputs", "outputs"):
        for dataset in event.get(side, []):
            for group in ("facets", "inputFacets", "outputFacets"):
                for name, facet in dataset.get(group, {}).items():
                    yield f"{side}[{dataset['name']}].{group}.{name}", facet


def schema_errors(event: dict[str, Any]) -> list[str]:
    """Every way an event breaks the RunEvent schema or the schema its facets name (empty: valid)."""
    found = [
        f"event: {error.message}"
        for error in Draft202012Validator(
            {"$ref": RUN_EVENT_REF}, registry=REGISTRY, format_checker=_FORMATS
        ).iter_errors(event)
    ]
    for where, facet in facets_of(event):
        url = facet.get("_schemaURL", "")
        if url.partition("#")[0] not in SCHEMA_IDS:
            found.append(f"{where}: no schema known for {url!r}")
            continue
        validator = Draft202012Validator({"$ref": url}, registry=REGISTRY, format_checker=_FORMATS)
        found += [f"{where}: {error.message}" for error in validator.iter_errors(facet)]
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """A lineage backend on 127.0.0.1 that keeps what it is sent. ``mode``: ``ok`` answers 200,
    ``error`` 500, ``hang`` holds every request until ``release`` is set."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.held = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with receiver._lock:
                    receiver.bodies.append(body)
                    receiver.headers.append(dict(self.headers))
                    receiver.paths.append(self.path)
                    receiver.held += receiver.mode == "hang"
                if receiver.mode == "hang":
                    receiver.release.wait(120)
                self.send_response(500 if receiver.mode == "error" else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(body) for body in self.bodies]
