"""The stall benchmark: ``python bench/stall.py [--scenarios N] [--seed S]``.

The same as ``trio-sync bench stall``; see trio_sync/cli/_bench.py for what it measures.
"""

from __future__ import annotations

import sys

from trio_sync.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "stall", *sys.argv[1:]]))
