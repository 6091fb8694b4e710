"""What a person sees, in a real browser: run the demo against a Prefect server of its own and screenshot the UI.

    make ui-check        # or: .venv/bin/python tools/ui_check.py [--out docs/screenshots]

Installs headless Chromium from Debian's packages if it is missing, starts ``prefect server start`` on a free port
(a fresh ``PREFECT_HOME``, analytics off, the UI told where its API is), runs ``flows/demo.py`` against it with the
emulator, then saves the audit's run page, its progress bar, its summary table and markdown report, and one valid,
one invalid and one not-found per-run artifact. Not part of ``make test``: it takes a minute and needs Chromium.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,1000",
    "--virtual-time-budget=15000",
]


def chromium() -> str:
    """The Chromium binary, installed from Debian's packages when there is none."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "install", "-y", "chromium"], check=True)  # noqa: S603 - fixed arguments
    return shutil.which("chromium") or sys.exit("chromium is still not on PATH after apt-get install")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(api: str, server: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the Prefect server exited with {server.returncode} before it was healthy")
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    sys.exit(f"the Prefect server at {api} was not healthy after {timeout:g}s")


def pages(ui: str) -> dict[str, str]:
    """Screenshot name -> UI address, found through the Prefect client (the server of PREFECT_API_URL)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import ArtifactSort

    from parallel_tasks.publishing import AUDIT_REPORT_KEY, SUMMARY_ARTIFACT_KEY

    with get_client(sync_client=True) as client:
        (audit,) = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["audit-run-inputs"])))
        artifacts = client.read_artifacts(sort=ArtifactSort.CREATED_DESC)

        def latest(key: str) -> str:
            keyed = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            return str(keyed[0].id)

        progress = next(a.id for a in artifacts if a.type == "progress" and a.flow_run_id == audit.id)

        def per_run(status: str) -> str:
            return next(str(a.id) for a in artifacts if (a.description or "").startswith(f"{status}: input of"))

        return {
            "audit-progress": f"{ui}/artifacts/artifact/{progress}",
            "audit-run-page": f"{ui}/runs/flow-run/{audit.id}",
            "audit-summary-table": f"{ui}/artifacts/artifact/{latest(SUMMARY_ARTIFACT_KEY)}",
            "audit-report": f"{ui}/artifacts/artifact/{latest(AUDIT_REPORT_KEY)}",
            "run-valid": f"{ui}/artifacts/artifact/{per_run('ok')}",
            "run-invalid": f"{ui}/artifacts/artifact/{per_run('invalid')}",
            "run-not-found": f"{ui}/artifacts/artifact/{per_run('not_found')}",
        }


def screenshot(browser: str, url: str, path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="ui-check-chromium-") as profile:
        subprocess.run(  # noqa: S603 - the browser found above, our own flags and UI address
            [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={path}", url],
            check=True,
            capture_output=True,
            timeout=120,
        )
    print(f"  {path.relative_to(REPO) if path.is_relative_to(REPO) else path}  <- {url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args(argv)
    browser = chromium()
    port = free_port()
    api, ui = f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}"
    home = tempfile.mkdtemp(prefix="ui-check-prefect-")
    env = {
        **os.environ,
        "PREFECT_HOME": home,
        "PREFECT_API_URL": api,
        "PREFECT_UI_API_URL": api,  # else the UI served on this port calls 4200
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
    }
    os.environ.update(env)
    prefect = str(Path(sys.executable).parent / "prefect")
    server = subprocess.Popen(  # noqa: S603 - our own virtualenv's prefect
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(api, server)
        print(f"Prefect server at {ui}; running the demo against it")
        subprocess.run(  # noqa: S603 - this interpreter and the repository's demo
            [sys.executable, str(REPO / "flows" / "demo.py")], env=env, check=True, stdout=subprocess.DEVNULL
        )
        args.out.mkdir(parents=True, exist_ok=True)
        print(f"Screenshots in {args.out}:")
        for name, url in pages(ui).items():
            screenshot(browser, url, args.out / f"{name}.png")
    finally:
        server.send_signal(signal.SIGTERM)  # a background server ignores SIGINT
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
