"""``python -m kgdistill.cli`` runs the command line (the same as ``kgdistill`` and ``python -m kgdistill``)."""

import sys

from kgdistill.cli import main

sys.exit(main())
