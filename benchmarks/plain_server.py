"""A plain Starlette app on uvicorn serving the generated run inputs: the bench's second server.

Nothing of the emulator's server code: one route, the bodies serialized once at start-up, an
``asyncio.sleep`` for the added latency, served by ``uvicorn.run`` with its defaults (it picks
httptools and uvloop by itself when they are installed). So the client figures do not depend on
the emulator being light. Prints its base URL as the only stdout line once it accepts connections.

Usage:
    python benchmarks/plain_server.py --runs N [--seed S] [--latency-ms MS] [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time

import uvicorn
from _common import SEED
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

HOST = "127.0.0.1"
NOT_FOUND = b'{"type":"error","error":{"message":"Not found"}}'
UNAUTHORIZED = b'{"type":"error","error":{"message":"Missing x-api-key"}}'


def make_app(bodies: dict[str, bytes], latency_s: float) -> Starlette:
    """The app: ``GET /v1/tasks/runs/{run_id}/input`` answers a pre-serialized body after the latency."""

    async def run_input(request: Request) -> Response:
        if "x-api-key" not in request.headers:
            return Response(UNAUTHORIZED, status_code=401, media_type="application/json")
        if latency_s > 0:
            await asyncio.sleep(latency_s)
        body = bodies.get(request.path_params["run_id"])
        if body is None:
            return Response(NOT_FOUND, status_code=404, media_type="application/json")
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/v1/tasks/runs/{run_id}/input", run_input, methods=["GET"])])


def free_port() -> int:
    """A TCP port free on the host right now (uvicorn.run binds by itself, so it needs a number)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def announce_when_listening(port: int, timeout_s: float = 60) -> None:
    """Print the base URL once the port accepts connections (from a thread: ``uvicorn.run`` blocks)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
        except OSError:
            time.sleep(0.05)
            continue
        print(f"http://{HOST}:{port}", flush=True)
        return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, required=True, help="how many generated runs to serve")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added before each answer")
    parser.add_argument("--port", type=int, default=0, help="0: a free one")
    args = parser.parse_args()

    from parallel_tasks.emulator import generate_runs

    bodies = {
        run_id: json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        for run_id, body in generate_runs(args.runs, args.seed).items()
    }
    port = args.port or free_port()
    threading.Thread(target=announce_when_listening, args=(port,), daemon=True).start()
    uvicorn.run(make_app(bodies, args.latency_ms / 1000), host=HOST, port=port, log_level="warning")


if __name__ == "__main__":
    main()
