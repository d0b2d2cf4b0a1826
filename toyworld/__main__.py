"""`python -m toyworld export --out DIR [--seed N]` (the same as `rlhf toyworld export ...`)."""

from __future__ import annotations

import sys

from toyworld.export import main

if __name__ == "__main__":
    sys.exit(main())
