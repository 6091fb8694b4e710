"""Audit many Parallel task runs from the command line: fetch every input, validate it, record it, and summarize.

    python flows/audit_run_inputs.py --run-ids-file ids.txt --credentials-block parallel

The flow itself is :func:`parallel_tasks.flows.audit_run_inputs`; deployments point at this file.
"""

from __future__ import annotations

import argparse
import sys

from parallel_tasks._prefect_server import local_server_defaults
from parallel_tasks.credentials import resolve_credentials
from parallel_tasks.errors import MissingCredentialsError
from parallel_tasks.flows import audit_run_inputs
from parallel_tasks.settings import DEFAULT_CONCURRENCY

__all__ = ["audit_run_inputs", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_ids", nargs="*")
    parser.add_argument("--run-ids-file")
    parser.add_argument("--credentials-block")
    parser.add_argument("--max-concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--per-run-artifacts", action="store_true")
    args = parser.parse_args(argv)
    with local_server_defaults():
        try:  # before the flow starts: a missing key is reported once, without a traceback
            resolve_credentials(args.credentials_block)
        except MissingCredentialsError as error:
            parser.exit(2, f"{parser.prog}: {error}\n  here: --credentials-block NAME, or PARALLEL_API_KEY=...\n")
        state = audit_run_inputs(
            run_ids=args.run_ids,
            run_ids_file=args.run_ids_file,
            credentials_block=args.credentials_block,
            max_concurrency=args.max_concurrency,
            per_run_artifacts=args.per_run_artifacts,
            return_state=True,
        )
    print(state.message)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
