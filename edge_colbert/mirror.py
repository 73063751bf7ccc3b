"""The in-memory :class:`~edge_colbert.prefilter.Prefilter` that follows one index file.

Centroids and postings live in memory for speed; the file is the truth. This module keeps
the two in step: a full load on open (and whenever the centroids were retrained elsewhere),
local updates after this connection's own commits, and an *incremental* refresh after
another connection's commits while the centroids are unchanged.

The incremental refresh relies on rowids never being reused (:meth:`Store.insert` gives new
rows rowids above every rowid ever given): the documents added since the last look are
exactly those above the highest rowid seen, and a document count lower than expected means
deletions, found by comparing rowid lists (read from the small ``id`` index). A reader next
to a busy writer thus loads a batch's postings, not the whole collection's, per commit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edge_colbert import schema
from edge_colbert.prefilter import Prefilter
from edge_colbert.store import Store

__all__ = ["PrefilterMirror"]

logger = logging.getLogger(__name__)

_NO_ROWIDS = np.zeros(0, dtype=np.int64)


class PrefilterMirror:
    """The prefilter of ``store``'s file, kept in step with it.

    Thread-safe: one mirror is shared by the threads of an :class:`~edge_colbert.index.Index`;
    every load and update holds :attr:`lock`, and readers of :attr:`prefilter`'s postings
    hold it too. Updates only move forward: a refresh reads the newest committed state
    (outside any older read transaction), and this process's own-commit updates skip what
    a refresh in another thread already loaded.

    Args:
        store: the open file; its centroids and postings are loaded at once.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        # Re-entrant: sync() may fall back to load() while holding it.
        self.lock = threading.RLock()
        self.prefilter: Prefilter | None = None
        self.version = 0
        # Rowids posted in memory (sorted) and the highest rowid seen, for incremental loads.
        self._rowids: npt.NDArray[np.int64] = _NO_ROWIDS
        self._high = -1
        self.load()

    def id_dtype(self) -> str:
        """The dtype of the stored centroid-id blobs (``uint16`` or ``uint32``)."""
        return self._store.meta().get(schema.META_CENTROID_IDS, "uint32")

    def load(self) -> None:
        """(Re)build centroids and every posting from the file, in one read transaction.

        Centroids and postings must come from the same commit: a writer that retrains
        between the two reads would otherwise pair new postings with old centroids.
        """
        with self.lock, self._store.snapshot():
            self._load()

    def _load(self) -> None:
        stored = self._store.centroids()
        if stored is None:
            self.prefilter, self.version = None, 0
            self._rowids, self._high = _NO_ROWIDS, -1
            return
        version, blob = stored
        prefilter = Prefilter.from_bytes(blob, self._store.dim)
        rowids, lengths, flat = self._store.doc_centroids_flat(self.id_dtype())
        prefilter.set_postings_flat(rowids, lengths, flat)
        self.prefilter, self.version = prefilter, version
        self._rowids = rowids
        self._high = int(rowids[-1]) if rowids.size else -1

    def refresh(self) -> None:
        """Follow another connection's commits, if any happened since the last look."""
        with self.lock:
            if self._store.changed_elsewhere():
                self.sync()

    def sync(self) -> None:
        """Bring memory in step with the file: incrementally while the centroids are the
        ones in memory, by a full :meth:`load` when they were (re)trained elsewhere. All
        reads happen in one read transaction, so they see one commit."""
        with self.lock, self._store.snapshot():
            self._sync()

    def _sync(self) -> None:
        prefilter = self.prefilter
        if prefilter is None or self._store.centroid_version() != self.version:
            logger.debug("%s: centroids changed elsewhere; reloading", self._store.path)
            self.load()
            return
        new_rowids, lengths, flat = self._store.doc_centroids_flat(
            self.id_dtype(), after=self._high
        )
        if new_rowids.size:
            prefilter.add_postings_flat(new_rowids, lengths, flat)
            self._rowids = np.concatenate([self._rowids, new_rowids])
            self._high = int(new_rowids[-1])
        if self._store.count() != self._rowids.size:
            gone = np.setdiff1d(self._rowids, self._store.rowids(), assume_unique=True)
            prefilter.discard(gone)
            self._rowids = np.setdiff1d(self._rowids, gone, assume_unique=True)
            if self._store.count() != self._rowids.size:
                # Rows without postings: not written by this code; start over from the file.
                logger.warning("%s: postings out of step with rows; reloading", self._store.path)
                self.load()
                return
        logger.debug(
            "%s: loaded %d new postings, %d documents posted",
            self._store.path,
            new_rowids.size,
            self._rowids.size,
        )

    def added(
        self,
        replaced: Sequence[int],
        added: Sequence[int],
        assigned: list[npt.NDArray[np.uint32]],
    ) -> None:
        """Follow this connection's own committed upsert (rows ``replaced`` -> ``added``)."""
        with self.lock:
            if self.prefilter is None:
                return
            self.removed(replaced)
            new = np.asarray(added, dtype=np.int64)
            # Another thread's refresh may have loaded these rows since the commit.
            fresh = ~np.isin(new, self._rowids)
            new = new[fresh]
            self.prefilter.add_postings(new, [a for a, f in zip(assigned, fresh, strict=True) if f])
            self._rowids = np.union1d(self._rowids, new)
            if new.size:
                self._high = max(self._high, int(new.max()))

    def removed(self, rowids: Sequence[int]) -> None:
        """Follow this connection's own committed delete."""
        with self.lock:
            if self.prefilter is None or not len(rowids):
                return
            gone = np.asarray(rowids, dtype=np.int64)
            self.prefilter.discard(gone)
            self._rowids = np.setdiff1d(self._rowids, gone)

    def retrained(self, prefilter: Prefilter, version: int, rowids: npt.NDArray[np.int64]) -> None:
        """Adopt centroids this connection just trained and committed, with every document
        posted; ``rowids`` are the documents' rowids read in that same transaction."""
        with self.lock:
            if self.prefilter is not None and version <= self.version:
                return  # another thread's refresh loaded these centroids (or newer) already
            self.prefilter, self.version = prefilter, version
            self._rowids = np.asarray(rowids, dtype=np.int64)
            self._high = int(self._rowids[-1]) if self._rowids.size else -1
