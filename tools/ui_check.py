"""What a person sees, in a real browser: run the demo against a Prefect server of its own and screenshot the UI.

    make ui-check        # or: .venv/bin/python tools/ui_check.py [--out docs/screenshots]

Installs headless Chromium from Debian's packages if it is missing, starts ``prefect server start`` on a free port
(a fresh ``PREFECT_HOME``, analytics off, the UI told where its API is), runs ``flows/demo.py`` against it with the
emulator, then saves, through Chromium's DevTools protocol, the audit's run page on its Artifacts tab, its progress
artifact, its summary table and markdown report, and one valid, one invalid and one not-found per-run artifact.
Not part of ``make test``: it takes a minute and needs Chromium.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    "--window-size=1920,1080",  # wide enough for the summary table's sha256 column
]
# JavaScript conditions awaited before a screenshot: an artifact page has drawn its data; the run page's Artifacts
# tab lists the audit's progress artifact (Prefect draws it as a card with the percentage in text, not as a bar).
ARTIFACT_DRAWN = "!!document.querySelector('.artifact-data-markdown, .artifact-data-table, .artifact-data-progress')"
PROGRESS_CARD = (
    "[...document.querySelectorAll('.artifact-card__subheader')].some(e => e.textContent.trim() === 'progress')"
)


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


def screenshot(browser: str, url: str, path: Path, *, click: str | None = None, ready: str = ARTIFACT_DRAWN) -> None:
    """Open url in headless Chromium over the DevTools protocol, click the element whose text is `click` (if any),
    wait until the JavaScript condition `ready` holds and save the viewport as a PNG."""
    from websockets.sync.client import connect

    # Chromium's helper processes can still be writing its profile as it exits: leave what they leave.
    with tempfile.TemporaryDirectory(prefix="ui-check-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(  # noqa: S603 - the browser found above, our own flags
            [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            until(port_file.exists, f"Chromium wrote no {port_file.name}")
            port = port_file.read_text().split()[0]
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            page = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            with connect(page, max_size=None, open_timeout=10) as ws:
                ids = iter(range(1, 1_000_000))

                def call(method: str, **params: object) -> dict[str, Any]:
                    ws.send(json.dumps({"id": (sent := next(ids)), "method": method, "params": params}))
                    while (reply := json.loads(ws.recv(timeout=30))).get("id") != sent:
                        pass  # an event: not ours
                    if "error" in reply:
                        sys.exit(f"{method} failed on {url}: {reply['error']}")
                    return dict(reply["result"])

                def holds(expression: str) -> bool:
                    return bool(
                        call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")
                    )

                call("Emulation.setDeviceMetricsOverride", width=1920, height=1080, deviceScaleFactor=1, mobile=False)
                call("Page.navigate", url=url)
                if click is not None:
                    candidates = "[...document.querySelectorAll('[role=tablist] > *, button, a')]"
                    tab = f"{candidates}.find(e => e.textContent.trim() === {json.dumps(click)})"
                    until(lambda: holds(f"!!{tab}"), f"no {click!r} to click on {url}")
                    holds(f"{tab}.click()")
                until(lambda: holds(ready), f"{url} never showed {ready}")
                shot = call("Page.captureScreenshot", format="png")
                path.write_bytes(base64.b64decode(shot["data"]))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"  {path.relative_to(REPO) if path.is_relative_to(REPO) else path}  <- {url}")


def until(condition: Callable[[], bool], failure: str, timeout: float = 60.0) -> None:
    """Poll `condition` until it holds; exit naming `failure` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(failure)
        time.sleep(0.2)


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
            if name == "audit-run-page":
                screenshot(browser, url, args.out / f"{name}.png", click="Artifacts", ready=PROGRESS_CARD)
            else:
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
