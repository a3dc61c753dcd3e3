"""``python -m trio_sync``: the ``trio-sync`` command."""

import sys

from .cli import main

sys.exit(main())
