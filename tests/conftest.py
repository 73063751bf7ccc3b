"""Shared fixtures: the tiny model folder and an encoder on it (both built once per session)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The tests exercise this checkout, installed or not; tiny_model.py sits beside this file.
_TESTS = Path(__file__).resolve().parent
for _path in (str(_TESTS.parent), str(_TESTS)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from tiny_model import build_tiny_model  # noqa: E402

from edge_colbert.encoder import Encoder  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model folder (default settings of ``build_tiny_model``); do not modify it."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-colbert")


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path) -> Iterator[Encoder]:
    """An :class:`Encoder` on the CPU provider over ``tiny_model_dir``."""
    yield Encoder(tiny_model_dir, providers=["CPUExecutionProvider"], threads=1)
