"""`python -m aslfr`: the `aslfr` command."""

import sys

from aslfr.cli import entry

sys.exit(entry())
