"""The export step: a ColBERT checkpoint -> an edge-colbert model folder.

Needs the ``export`` extra (PyTorch, transformers); the runtime package ``edge_colbert`` never
imports this one. Entry points: :func:`export_model` and :func:`main` (the argv of
``edge-colbert export``).
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ImportError as _error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the export step needs PyTorch: pip install 'edge-colbert[export]'"
    ) from _error

from export.cli import main
from export.pipeline import export_model

__all__ = ["export_model", "main"]
