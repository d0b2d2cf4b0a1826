"""`python -m reward train|eval ...` and `accelerate launch -m reward train ...`."""

import sys

from reward.cli import main

if __name__ == "__main__":
    sys.exit(main())
