"""``python -m edge_colbert``: the same as the ``edge-colbert`` command."""

from __future__ import annotations

import sys

from edge_colbert.cli import main

if __name__ == "__main__":
    sys.exit(main())
