"""``python -m export CHECKPOINT OUTDIR ...``: the same as ``edge-colbert export``."""

from __future__ import annotations

import sys

from export.cli import main

sys.exit(main())
