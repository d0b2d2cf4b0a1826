"""`python -m rejection_sampling --config configs/rs/quickstart.yaml [key=value ...]`."""

import sys

from rejection_sampling.cli import main

sys.exit(main())
