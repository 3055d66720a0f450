"""Allow ``python -m implicit_rmt``."""

import sys

from implicit_rmt.cli import main

sys.exit(main())
