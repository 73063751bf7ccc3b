"""Every read of stored data fails as :class:`IndexFileError`, naming the file, the row
and what to do.

A damaged or crafted file can hold any value in any column: a text BLOB that is not zlib
(``zlib.error``), metadata that is not JSON (``JSONDecodeError``), a ``rowid_high`` of
2**63-1 (``OverflowError`` on the next insert), a page of flipped bytes (SQLite's bare
"database disk image is malformed"). Callers catch :class:`EdgeColbertError`; none of those
is one. :func:`guard_reads` wraps the public methods of the store so that each of these
becomes one :class:`IndexFileError` with the file, the method, the row where known, and the
way out (``edge-colbert check``, ``repair``, a backup).
"""

from __future__ import annotations

import functools
import inspect
import sqlite3
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from edge_colbert.errors import EdgeColbertError, IndexFileError
from edge_colbert.filecheck import open_error

__all__ = ["READ_ERRORS", "BadRowError", "damaged", "guard_reads", "stored_data_error"]

# What decoding stored values raises when they are not what edge-colbert wrote.
# (json.JSONDecodeError and UnicodeDecodeError are ValueErrors; zlib.error is its own.)
READ_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
    zlib.error,
)

# Methods that are not reads of stored data, or whose callers' own code runs inside them.
_UNGUARDED = frozenset({"transaction", "close", "check_writable", "check_model"})
# Context managers whose own statements (BEGIN, COMMIT) read the file.
_CONTEXTS = frozenset({"snapshot"})

_T = TypeVar("_T")


class BadRowError(ValueError):
    """A stored row that cannot be decoded: which table, which rowid, and why."""

    def __init__(self, table: str, rowid: Any, reason: BaseException | str) -> None:
        self.table = table
        self.rowid = rowid
        self.reason = reason
        super().__init__(f"{table} row {rowid!r}: {reason}")


def stored_data_error(path: Any, what: str, error: BaseException) -> IndexFileError:
    """The :class:`IndexFileError` for ``error`` raised while ``what`` on the file ``path``."""
    if isinstance(error, sqlite3.DatabaseError):
        detail = f"SQLite says: {error}"
    elif isinstance(error, BadRowError):
        detail = f"{error.table} row {error.rowid} cannot be decoded ({error.reason})"
    else:
        detail = f"a stored value cannot be decoded ({type(error).__name__}: {error})"
    # One line: SQLite quotes undecodable bytes of the row in its message.
    detail = "".join(c if c.isprintable() else "?" for c in " ".join(detail.split()))
    if len(detail) > 240:
        detail = detail[:240] + "..."
    return IndexFileError(
        f"{path} is damaged: {detail}, while {what}. Run `edge-colbert check {path}` to see "
        f"what is damaged, then `edge-colbert repair {path}` (or restore a backup made with "
        "`edge-colbert backup`); documents that are not damaged can still be read."
    )


def damaged(error: BaseException) -> bool:
    """Whether a SQLite error says the file is damaged: a bare ``DatabaseError``
    ("malformed", "not a database") or one with such words."""
    if not isinstance(error, sqlite3.DatabaseError):
        return False
    text = str(error).lower()
    return type(error) is sqlite3.DatabaseError or any(
        word in text
        for word in ("malformed", "corrupt", "not a database", "too big", "could not decode")
    )


def _maps(error: BaseException) -> bool:
    """Whether ``error`` is one of the stored-data errors (never one of ours)."""
    if isinstance(error, EdgeColbertError):
        return False
    if isinstance(error, sqlite3.DatabaseError):
        # Locked, busy, read-only, full: the store's own mapping says what to do.
        return damaged(error)
    return isinstance(error, READ_ERRORS)


def _mapped(store: Any, error: BaseException, what: str) -> BaseException | None:
    """The project error for ``error`` raised in a store method, or None to re-raise it."""
    if isinstance(error, sqlite3.Error) and not isinstance(error, EdgeColbertError):
        closed = getattr(store, "_closed", None)
        if closed is False:
            mapped: BaseException = store._error(error)  # busy, full, read-only media
            if mapped is not error:
                return mapped
        else:  # opening failed (and closed what it had opened): media, disk, permissions
            opened = open_error(store.path, error, readonly=bool(getattr(store, "readonly", 0)))
            if opened is not None:
                return opened
    if not _maps(error):
        return None
    return stored_data_error(store.path, what, error)


def _check_centroids(store: Any, result: Any) -> None:
    """The stored centroids: a whole number of finite ``dim``-d float32 vectors."""
    if result is None:
        return
    blob = result[1]
    width = 4 * int(store.dim)
    if not blob or len(blob) % width:
        raise BadRowError(
            "centroids", 0, f"{len(blob)} bytes, not a whole number of {width}-byte vectors"
        )
    if not np.isfinite(np.frombuffer(blob, dtype=np.float32)).all():
        raise BadRowError("centroids", 0, "the centroids hold NaN or infinity")


def _centroid_count(store: Any) -> int | None:
    """How many centroids are stored (None before any training), from the blob's length."""
    row = store._conn.execute("SELECT length(vectors) FROM centroids WHERE id = 0").fetchone()
    return None if row is None or row[0] is None else int(row[0]) // (4 * int(store.dim))


def _check_ids(store: Any, largest: int | None, where: str) -> None:
    if largest is None:
        return
    count = _centroid_count(store)
    if count is not None and largest >= count:
        raise BadRowError(
            "centroid_lists", where, f"centroid id {largest}, but only {count} centroids exist"
        )


def _check_doc_centroids(store: Any, result: Any) -> None:
    """Each document's centroid ids: whole ids, each naming a stored centroid."""
    _rowids, lists = result
    largest = max((int(ids.max()) for ids in lists if len(ids)), default=None)
    _check_ids(store, largest, "some")


def _check_doc_centroids_flat(store: Any, result: Any) -> None:
    """:func:`_check_doc_centroids` for the CSR form: the lengths must add up to the ids."""
    _rowids, lengths, flat = result
    if int(np.asarray(lengths).sum()) != len(flat):
        raise BadRowError("centroid_lists", "some", "a centroid id list of a broken length")
    _check_ids(store, int(flat.max()) if len(flat) else None, "some")


# Checks of a method's result, where a bad value would fail later, far from the file.
_RESULT_CHECKS: dict[str, Callable[[Any, Any], None]] = {
    "centroids": _check_centroids,
    "doc_centroids": _check_doc_centroids,
    "doc_centroids_flat": _check_doc_centroids_flat,
}


class _MappedContext:
    """A context manager whose own enter and exit map stored-data errors (a failed
    ``COMMIT`` of a read transaction on a damaged page)."""

    def __init__(self, inner: AbstractContextManager[Any], path: Any, what: str) -> None:
        self._inner = inner
        self._path = path
        self._what = what

    def __enter__(self) -> Any:
        try:
            return self._inner.__enter__()
        except BaseException as error:
            if not _maps(error):
                raise
            raise stored_data_error(self._path, self._what, error) from error

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> bool | None:
        try:
            return self._inner.__exit__(kind, error, trace)
        except BaseException as raised:
            if raised is error or not _maps(raised):
                raise
            if error is not None:
                return False  # the error already on its way says it; keep it
            raise stored_data_error(self._path, self._what, raised) from raised


def _guard(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    what = name.strip("_").replace("_", " ")
    if name in _CONTEXTS:

        @functools.wraps(method)
        def context(self: Any, *args: Any, **kwargs: Any) -> _MappedContext:
            return _MappedContext(method(self, *args, **kwargs), self.path, f"in {what}")

        return context
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from method(self, *args, **kwargs)
            except BaseException as error:
                mapped = _mapped(self, error, f"reading {what}")
                if mapped is None:
                    raise
                raise mapped from error

        return generator

    check = _RESULT_CHECKS.get(name)

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = method(self, *args, **kwargs)
            if check is not None:
                check(self, result)
            return result
        except BaseException as error:
            doing = "opening it" if name == "__init__" else f"in {what}"
            mapped = _mapped(self, error, doing)
            if mapped is None:
                raise
            raise mapped from error

    return call


def guard_reads(cls: type[_T]) -> type[_T]:
    """Wrap ``cls.__init__`` and every public method of ``cls`` (but the transaction and
    snapshot context managers and ``close``) so stored-data errors become
    :class:`IndexFileError` (see :func:`stored_data_error`); use as a class decorator."""
    for name, member in list(vars(cls).items()):
        if name in _UNGUARDED or (name.startswith("_") and name != "__init__"):
            continue
        if isinstance(member, staticmethod):
            continue
        if inspect.isfunction(member):
            setattr(cls, name, _guard(name, member))
    return cls
