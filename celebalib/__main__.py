"""Entry point for ``python -m celebalib``."""

import sys

from celebalib.cli import main

if __name__ == "__main__":
    sys.exit(main())
