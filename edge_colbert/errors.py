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


class QdrantError(EdgeColbertError):
    """Base class of the errors of :mod:`edge_colbert.qdrant` (and of
    :func:`edge_colbert.ray.write_qdrant`): the Qdrant side of a push or a search."""


class QdrantUnavailableError(QdrantError):
    """Qdrant could not be reached (server down, wrong URL, refused), its local-mode folder
    is locked by another client, or it failed a request."""


class CollectionMismatchError(QdrantError):
    """A collection exists but cannot take this index: another vector size, comparator,
    storage, points that another program wrote, or points pushed from another index file."""
