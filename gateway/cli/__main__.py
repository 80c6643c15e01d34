"""`python -m gateway.cli` runs the leadgate command."""

import sys

from gateway.cli import main

sys.exit(main())
