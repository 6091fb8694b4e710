"""Fetch one Parallel task run's input from the command line, validate it, and record its audit trail.

Run it against the real API with a key in the environment::

    PARALLEL_API_KEY=... python flows/fetch_run_input.py trun_...

or with a stored ParallelCredentials block: ``python flows/fetch_run_input.py trun_... --credentials-block parallel``.
The flow itself is :func:`parallel_tasks.flows.fetch_run_input`; deployments point at this file.
"""

from __future__ import annotations

import argparse
import json
import sys

from parallel_tasks._prefect_server import local_server_defaults
from parallel_tasks.credentials import resolve_credentials
from parallel_tasks.errors import MissingCredentialsError
from parallel_tasks.flows import fetch_run_input

__all__ = ["fetch_run_input", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("--credentials-block", default=None)
    parser.add_argument("--storage-block", default=None)
    parser.add_argument("--fail-on-invalid", action="store_true")
    args = parser.parse_args(argv)
    with local_server_defaults():
        try:  # before the flow starts: a missing key is reported once, without a traceback
            resolve_credentials(args.credentials_block)
        except MissingCredentialsError as error:
            parser.exit(2, f"{parser.prog}: {error}\n  here: --credentials-block NAME, or PARALLEL_API_KEY=...\n")
        summary = fetch_run_input(
            args.run_id,
            credentials_block=args.credentials_block,
            fail_on_invalid=args.fail_on_invalid,
            storage_block=args.storage_block,
        )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
