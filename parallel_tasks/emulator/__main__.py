"""Command: serve the emulator until interrupted, printing its base URL as the only stdout line and, on stderr,
the accepted key and how many runs it serves.

Example:
    python -m parallel_tasks.emulator --port 0 --runs 1000 --seed 1 --api-key KEY --rate-503 0.05
    PARALLEL_WEBHOOK_SECRET=... python -m parallel_tasks.emulator --demo \
        --webhook-url http://127.0.0.1:8790/webhooks/parallel --complete-after-ms 2000 --webhook-duplicate-rate 0.2
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from parallel_tasks.settings import WEBHOOK_SECRET_ENV_VAR, get_settings

from .core import DEFAULT_API_KEY, Emulator
from .faults import FAULT_NAMES, Fault, FaultConfig
from .generator import demo_runs, generate_runs
from .server import base_url_for, bind_socket, make_server
from .store import RunStore
from .webhooks import WebhookFaults, WebhookSender

_RATE_FAULTS: tuple[Fault, ...] = (408, 429, 500, 502, 503, 504, "reset", "truncate", "html", "slow")


def _fault(text: str) -> Fault:
    return int(text) if text.isdigit() else text


def _run_option(text: str) -> tuple[str, str]:
    """Split ``RUN_ID=VALUE``."""
    run_id, sep, value = text.rpartition("=")
    if not sep or not run_id or not value:
        raise argparse.ArgumentTypeError(f"expected RUN_ID=VALUE, got {text!r}")
    return run_id, value


def build_parser() -> argparse.ArgumentParser:
    """The command's options."""
    parser = argparse.ArgumentParser(
        prog="python -m parallel_tasks.emulator",
        description="Serve a local Parallel API (GET /v1/tasks/runs/{run_id}/input). Without --runs, "
        "--runs-file or --demo it serves the demo set.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8787, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help=f"accepted x-api-key value (repeatable; default {DEFAULT_API_KEY!r})",
    )
    parser.add_argument("--runs", type=int, default=0, help="number of generated runs to serve")
    parser.add_argument("--seed", type=int, default=0, help="seed for generated runs and fault draws")
    parser.add_argument("--demo", action="store_true", help="also serve the demo runs")
    parser.add_argument(
        "--runs-file",
        action="append",
        default=[],
        metavar="FILE",
        help="JSON or JSONL file of runs (repeatable)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    for fault in _RATE_FAULTS:
        parser.add_argument(
            f"--rate-{fault}",
            type=float,
            default=0.0,
            metavar="P",
            help=f"probability of the {fault} fault per request",
        )
    parser.add_argument(
        "--retry-after",
        choices=["seconds", "ms", "http-date", "none"],
        default="seconds",
        help="how a 429 says when to retry",
    )
    parser.add_argument("--retry-after-s", type=float, default=1.0, help="the delay a 429 asks for")
    parser.add_argument("--slow-chunks", type=int, default=4)
    parser.add_argument("--slow-chunk-delay-ms", type=float, default=100.0)
    parser.add_argument(
        "--script",
        action="append",
        default=[],
        type=_run_option,
        metavar="RUN_ID=F1,F2,...",
        help=f"faults played in order for one run: statuses or {', '.join(FAULT_NAMES)}",
    )
    parser.add_argument(
        "--run-status",
        action="append",
        default=[],
        type=_run_option,
        metavar="RUN_ID=STATUS",
        help="a status one run always answers with",
    )
    hooks = parser.add_argument_group("webhooks", "signed task_run.status deliveries when runs complete")
    hooks.add_argument("--webhook-url", help="send every run's delivery here (default: the run's own webhook.url)")
    hooks.add_argument(
        "--webhook-secret",
        help=f"the secret deliveries are signed with (default: ${WEBHOOK_SECRET_ENV_VAR}); without one, webhooks "
        "are off",
    )
    hooks.add_argument(
        "--complete-after-ms",
        type=float,
        metavar="MS",
        help="complete every run that has a webhook URL this long after start (else: POST "
        "/_emulator/runs/RUN_ID/complete)",
    )
    for fault in ("duplicate", "out-of-order", "bad-signature", "stale-timestamp"):
        hooks.add_argument(f"--webhook-{fault}-rate", type=float, default=0.0, metavar="P", help=f"{fault} fault")
    hooks.add_argument("--webhook-max-attempts", type=int, default=5, help="attempts per delivery (default 5)")
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    parser.add_argument("--log-level", default="warning")
    return parser


def build_emulator(args: argparse.Namespace) -> Emulator:
    """The emulator the parsed options describe."""
    store = RunStore()
    if args.runs:
        store.update(generate_runs(args.runs, args.seed))
    for path in args.runs_file:
        store.load(path)
    if args.demo or not (args.runs or args.runs_file):
        store.update(demo_runs())
    rates = {fault: getattr(args, f"rate_{fault}") for fault in _RATE_FAULTS if getattr(args, f"rate_{fault}")}
    faults = FaultConfig(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        rates=rates,
        retry_after=args.retry_after,
        retry_after_s=args.retry_after_s,
        slow_chunks=args.slow_chunks,
        slow_chunk_delay_ms=args.slow_chunk_delay_ms,
    )
    emulator = Emulator(store, api_keys=args.api_keys or [DEFAULT_API_KEY], faults=faults, seed=args.seed)
    for run_id, script in args.script:
        emulator.set_faults(FaultConfig(script=[_fault(f) for f in script.split(",")]), run_id=run_id)
    for run_id, status in args.run_status:
        emulator.set_faults(FaultConfig(status=int(status)), run_id=run_id)
    from_settings = get_settings().webhook_secret  # the receiver's variable: both ends share one secret
    secret = args.webhook_secret or (from_settings.get_secret_value() if from_settings else "")
    if secret:
        webhook_faults = WebhookFaults(
            duplicate=args.webhook_duplicate_rate,
            out_of_order=args.webhook_out_of_order_rate,
            bad_signature=args.webhook_bad_signature_rate,
            stale_timestamp=args.webhook_stale_timestamp_rate,
        )
        emulator.webhooks = WebhookSender(
            store,
            secret=secret,
            url=args.webhook_url,
            faults=webhook_faults,
            seed=args.seed,
            max_attempts=args.webhook_max_attempts,
        )
    elif args.webhook_url or args.complete_after_ms is not None:
        raise ValueError(f"--webhook-url and --complete-after-ms need --webhook-secret (or ${WEBHOOK_SECRET_ENV_VAR})")
    return emulator


def describe(emulator: Emulator, url: str) -> str:
    """What a person needs to use the running emulator (stdout keeps the base URL alone, for scripts)."""
    keys = ", ".join(sorted(emulator.api_keys))
    runs = len(emulator.store)
    return (
        f"Parallel API emulator at {url}, serving {runs} run{'s' * (runs != 1)}"
        f" (GET {url}/v1/tasks/runs/<run id>/input)\n"
        f"Accepted x-api-key: {keys}\n"
        f"Point the flows at it: PARALLEL_BASE_URL={url} and PARALLEL_API_KEY set to that key,\n"
        f"  or a credentials block: python -m parallel_tasks setup --emulator {url}\n"
        "Ctrl-C stops it."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse options, bind, print the base URL (stdout) and how to use it (stderr), serve until SIGINT or SIGTERM."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        emulator = build_emulator(args)
    except (OSError, ValueError, TypeError) as exc:
        parser.error(str(exc))
    server = make_server(emulator, http=args.http, loop=args.loop, log_level=args.log_level, configure_logging=True)
    sock = bind_socket(args.host, args.port)
    url = base_url_for(sock)
    print(url, flush=True)
    print(describe(emulator, url), file=sys.stderr, flush=True)
    if emulator.webhooks is not None and args.complete_after_ms is not None:
        emulator.webhooks.complete_all(after_s=args.complete_after_ms / 1000)
    try:
        server.run(sockets=[sock])
    finally:
        if emulator.webhooks is not None:
            emulator.webhooks.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
