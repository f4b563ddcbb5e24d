"""``python -m trioalpaca`` runs the command line."""

import sys

from trioalpaca.cli import main

sys.exit(main())
