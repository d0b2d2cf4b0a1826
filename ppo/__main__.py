import sys

from ppo.cli import main

sys.exit(main())
