"""What the framework adapters (LangChain, LlamaIndex, MCP) share.

They import their framework only through :func:`require`, so that ``import edge_colbert``
never needs it and a missing one is one clear line naming the ``pip install`` that fixes it;
they open an index with :func:`open_index` and search it with :func:`search`, which passes
``mode`` on only when one is given.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from edge_colbert.errors import EdgeColbertError, InvalidInputError
from edge_colbert.validation import check_k

if TYPE_CHECKING:
    from edge_colbert.encoder import Encoder
    from edge_colbert.index import Hit, Index

__all__ = ["MissingExtraError", "check_mode", "open_index", "require", "search"]


class MissingExtraError(EdgeColbertError, ImportError):
    """An optional extra is not installed; the message names the ``pip install`` to run.

    An :class:`ImportError` (so ``try: import ... except ImportError`` keeps working) and an
    :class:`~edge_colbert.errors.EdgeColbertError` (so the CLI prints it as one line).
    """


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` naming ``extra``.

    Thread-safe (Python's import lock).
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        missing = error.name or module
        raise MissingExtraError(
            f"{module} is not installed (no module {missing!r}); install it with "
            f'pip install "edge-colbert[{extra}]"'
        ) from None


def open_index(
    index: Index | str | Path, *, encoder: Encoder | None = None, readonly: bool
) -> Index:
    """``index`` itself, or the :class:`~edge_colbert.index.Index` at that path.

    A read-only open needs the file to exist (opening a mistyped path would otherwise look
    like an empty index); a writable one creates it.

    Raises:
        InvalidInputError: not an Index or a path, or a read-only path that does not exist.
    """
    from edge_colbert.index import Index

    if isinstance(index, Index):
        return index
    if not isinstance(index, (str, Path)) or not str(index):
        raise InvalidInputError(
            f"index must be an edge_colbert.Index or the path of an index file; got "
            f"{type(index).__name__} ({index!r})."
        )
    path = Path(index)
    if path.is_dir():
        raise InvalidInputError(f"{path} is a folder, not an index file.")
    if readonly and not path.exists():
        raise InvalidInputError(
            f"index file {path} does not exist; build it first (edge-colbert index {path} "
            "PATH..., or Index(path).add(texts))."
        )
    return Index(path, encoder=encoder, readonly=readonly)


# Index class -> whether its search takes ``mode`` (added with hybrid search, issue 15).
_TAKES_MODE: dict[type, bool] = {}


def _takes_mode(index: Index) -> bool:
    """Whether this ``Index.search`` has a ``mode`` parameter (checked once per class)."""
    kind = type(index)
    if kind not in _TAKES_MODE:
        _TAKES_MODE[kind] = "mode" in inspect.signature(index.search).parameters
    return _TAKES_MODE[kind]


def check_mode(mode: Any) -> str | None:
    """``mode`` as given (None or a non-empty string); the index says which modes it knows."""
    if mode is None:
        return None
    if not isinstance(mode, str) or not mode:
        raise InvalidInputError(f"mode must be a search mode name (a string); got {mode!r}.")
    return mode


def search(
    index: Index,
    query: str,
    *,
    k: int,
    where: Mapping[str, Any] | None = None,
    mode: str | None = None,
) -> list[Hit]:
    """``index.search``, passing ``mode`` only when one is given.

    Thread-safe as far as the index is (see :class:`~edge_colbert.index.Index`).

    Raises:
        InvalidInputError: a bad ``k``, ``where`` or ``mode`` (from the index's own checks), or
            a mode given to an index whose search has none.
    """
    k = check_k(k)
    mode = check_mode(mode)
    if mode is None:
        return index.search(query, k, where=where)
    if not _takes_mode(index):
        raise InvalidInputError(
            f"search mode {mode!r} needs an edge-colbert whose Index.search takes mode=; "
            "this one has a single mode (upgrade edge-colbert, or leave mode unset)."
        )
    return index.search(query, k, where=where, mode=mode)  # type: ignore[call-arg,unused-ignore]
