"""``python -m minifim``: the ``minifim`` command line (see :mod:`minifim.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
