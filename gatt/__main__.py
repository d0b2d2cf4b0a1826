"""`python -m gatt ...` and `accelerate launch -m gatt ...` (see gatt.cli)."""

import sys

from gatt.cli import main

sys.exit(main())
