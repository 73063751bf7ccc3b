"""The errors edge-colbert raises.

Every error a person can cause has its own class, and every message says what was wrong,
with the numbers, and what to do about it. The CLI prints ``str(error)`` as one line and
exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


class EdgeColbertError(Exception):
    """Base class of every error edge-colbert raises on purpose."""


class ModelFolderError(EdgeColbertError):
    """A model folder is missing, incomplete, damaged or of an unknown format."""


class IndexFileError(EdgeColbertError):
    """A path is not an edge-colbert index: not SQLite, another program's database, or a
    schema this version cannot read."""


class ReadOnlyIndexError(IndexFileError):
    """A write (add, delete, migration) on an index opened with ``readonly=True``."""


class IndexClosedError(EdgeColbertError):
    """An :class:`~edge_colbert.index.Index` used after :meth:`~edge_colbert.index.Index.close`
    (from this thread or another)."""


class ModelMismatchError(EdgeColbertError):
    """An index was written by one model and is being used with another."""


class InvalidInputError(EdgeColbertError, ValueError):
    """An argument is out of range or of the wrong shape or type (empty text, ``k <= 0``,
    metadata that is not JSON, a vector of the wrong dimension)."""


class IndexBusyError(EdgeColbertError):
    """Another process held the index's write lock for longer than the timeout."""


class StorageFullError(EdgeColbertError):
    """The disk (or the database's page limit) filled up; the batch was rolled back."""


class ExportError(EdgeColbertError):
    """The export step could not produce a faithful model folder."""
