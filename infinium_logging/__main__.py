"""``python -m infinium_logging``: the same command line as ``infinium-logging``."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
