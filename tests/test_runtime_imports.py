"""The runtime never pulls in the heavy export stack (torch, transformers, optimum)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "optimum", "sentence_transformers", "pylate")

SCRIPT = f"""
import importlib, pkgutil, sys
import edge_colbert
lazy = "onnxruntime" not in sys.modules
from edge_colbert import Encoder
for info in pkgutil.walk_packages(edge_colbert.__path__, "edge_colbert."):
    importlib.import_module(info.name)
try:
    from edge_colbert import Index
except ImportError:
    pass
heavy = sorted(name for name in sys.modules if name.split(".")[0] in {HEAVY!r})
print("lazy" if lazy else "eager", ",".join(heavy) or "-")
"""


def test_runtime_modules_import_no_heavy_packages() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lazy, heavy = result.stdout.split()
    assert heavy == "-", f"the runtime imported {heavy}"
    assert lazy == "lazy", "`import edge_colbert` alone must not load onnxruntime"
