"""The export step: a ColBERT checkpoint -> an edge-colbert model folder.

Needs the ``export`` extra (PyTorch, transformers); the runtime package ``edge_colbert`` never
imports this one. Entry points: :func:`export_model` and :func:`main` (the argv of
``edge-colbert export``). They load on first use, so that the torch-free parts
(``reduce``'s numpy functions, ``calibration_text``, ``requirements``) import without the
extra; without it, using either raises one line naming the install command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cli import main
    from .pipeline import export_model

__all__ = ["export_model", "main"]


def __getattr__(name: str) -> Any:
    """``export_model`` and ``main``, imported when first asked for (PEP 562)."""
    if name == "export_model":
        from .requirements import require_export_dependencies

        require_export_dependencies()
        from .pipeline import export_model

        return export_model
    if name == "main":
        from .cli import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
