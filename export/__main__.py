"""``python -m edge_colbert_export CHECKPOINT OUTDIR ...``: the same as ``edge-colbert export``."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
