"""``python -m trio_sync.cli``."""

import sys

from . import main

sys.exit(main())
