"""edge-colbert: ColBERT late-interaction search on a laptop or an edge board.

The runtime needs only numpy, onnxruntime, tokenizers and sqlite-utils; it never
imports torch, transformers or optimum.

>>> from edge_colbert import Encoder, Index
>>> index = Index("notes.db", encoder=Encoder())       # doctest: +SKIP
>>> index.add(["first text", "second text"], ids=["a", "b"])  # doctest: +SKIP
>>> index.search("a question", k=10)                   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_colbert.errors import (
    EdgeColbertError,
    ExportError,
    IndexBusyError,
    IndexClosedError,
    IndexFileError,
    InvalidInputError,
    ModelFolderError,
    ModelMismatchError,
    ReadOnlyIndexError,
    StorageFullError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from edge_colbert.encoder import Encoder
    from edge_colbert.index import Hit, Index

__all__ = [
    "EdgeColbertError",
    "Encoder",
    "ExportError",
    "Hit",
    "Index",
    "IndexBusyError",
    "IndexClosedError",
    "IndexFileError",
    "InvalidInputError",
    "ModelFolderError",
    "ModelMismatchError",
    "ReadOnlyIndexError",
    "StorageFullError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import edge_colbert` (and the CLI's --help) does not load onnxruntime.
    if name == "Encoder":
        from edge_colbert.encoder import Encoder

        return Encoder
    if name in ("Index", "Hit"):
        from edge_colbert import index

        return getattr(index, name)
    raise AttributeError(f"module 'edge_colbert' has no attribute {name!r}")
