"""Start the pinned Prism mock server (tools/prism) on a free loopback port, for conformance tests.

Prism 5.14.2 (Node 20) serves the spec's examples; it answers 401 with the spec's 401 example when
``x-api-key`` is missing or empty (any non-empty value passes), honours ``Prefer: code=404`` /
``code=422`` and ``Prefer: dynamic=true``. Install it with ``npm ci --prefix tools/prism``.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
PRISM_BIN = REPO / "tools" / "prism" / "node_modules" / ".bin" / "prism"


class PrismUnavailableError(RuntimeError):
    """Prism is not installed, or did not start."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def prism_server(spec_path: str | Path, *, startup_timeout_s: float = 60.0) -> Iterator[str]:
    """Run ``prism mock`` on ``spec_path``; yield its base URL; stop it (by PID) on exit, even on failure.

    Raises:
        PrismUnavailableError: Prism is not installed under tools/prism, or it did not answer in time.
    """
    if not PRISM_BIN.exists():
        raise PrismUnavailableError(f"{PRISM_BIN} is missing: run `npm ci --prefix tools/prism`")
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [str(PRISM_BIN), "mock", "-h", "127.0.0.1", "-p", str(port), str(spec_path)]
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: Prism logs every request and would fill a pipe
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            deadline = time.monotonic() + startup_timeout_s
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise PrismUnavailableError(
                        f"prism exited with {process.returncode}: {log.read().decode()[-2000:]}"
                    )
                try:
                    httpx.get(f"{base_url}/v1/tasks/runs/ready/input", timeout=1.0)
                    break  # any answer (401 without a key) means it is serving
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise PrismUnavailableError(f"prism did not answer on {base_url}") from None
                    time.sleep(0.1)
            yield base_url
        finally:
            process.terminate()  # SIGTERM to this PID only; Prism takes a second or two to exit
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
