"""``python -m zerodl.experiments NAME [options]`` (the same as ``zerodl experiment NAME``)."""

import sys

from zerodl.experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
