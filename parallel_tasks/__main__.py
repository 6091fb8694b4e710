"""The package's command line: ``python -m parallel_tasks setup`` (see :mod:`parallel_tasks.server_setup`)."""

import sys

from parallel_tasks.server_setup import main

if __name__ == "__main__":
    sys.exit(main())
