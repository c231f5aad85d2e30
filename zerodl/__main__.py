"""``python -m zerodl ...``: the same as the ``zerodl`` command."""

import sys

from zerodl.cli import main

if __name__ == "__main__":
    sys.exit(main())
