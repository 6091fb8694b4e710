"""The package's command line: ``python -m parallel_tasks setup`` (see :mod:`parallel_tasks.server_setup`),
``python -m parallel_tasks webhooks serve`` (see :mod:`parallel_tasks.webhooks`) and ``python -m parallel_tasks verify``
(see :mod:`parallel_tasks.verify`)."""

import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the command named first."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["verify"]:
        from parallel_tasks.verify import main as verify

        return verify(args[1:])
    from parallel_tasks.server_setup import main as setup

    return setup(args)


if __name__ == "__main__":
    sys.exit(main())
