"""The runtime never pulls in the heavy export stack (torch, transformers, optimum)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "optimum", "sentence_transformers", "pylate")

SCRIPT = f"""
import importlib, importlib.metadata, pkgutil, re, sys
import edge_colbert
lazy = "onnxruntime" not in sys.modules
from edge_colbert import Encoder
# Import names of the optional extras' packages, from the package metadata (pyproject).
optional = {{
    re.match(r"[A-Za-z0-9._-]+", r).group(0).lower().replace("-", "_")
    for r in importlib.metadata.requires("edge-colbert") or []
    if "extra ==" in r
}}
for info in pkgutil.walk_packages(edge_colbert.__path__, "edge_colbert."):
    try:
        importlib.import_module(info.name)
    except ImportError as error:
        # A module of an extra that is not installed here (the runtime-only venv) may
        # refuse to import; a missing runtime dependency or a broken import may not.
        missing = (getattr(error, "name", None) or "").split(".")[0]
        if "edge-colbert[" not in str(error) and missing not in optional:
            raise
from edge_colbert import Index
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


@pytest.mark.parametrize(
    "statement",
    [
        "from edge_colbert import Index, Encoder",
        "import edge_colbert.index; import onnxruntime",
        "import edge_colbert.prefilter; import edge_colbert.encoder",
    ],
)
def test_import_orders_do_not_crash(statement: str) -> None:
    """Any import order works (usearch 2.26 loaded before onnxruntime 1.31 crashed the
    interpreter; the prefilter no longer uses usearch, and these orders stay tested)."""
    result = subprocess.run(
        [sys.executable, "-c", f"{statement}; print('ok')"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
