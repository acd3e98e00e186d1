"""``python -m kgdistill`` runs the command-line interface (the same as the ``kgdistill`` script)."""

import sys

from kgdistill.cli import main

sys.exit(main())
