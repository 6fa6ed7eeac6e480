"""``python -m minifim``: the ``minifim`` command line (see :mod:`minifim.oracle.cli`)."""

import sys

from .oracle.cli import main

if __name__ == "__main__":
    sys.exit(main())
