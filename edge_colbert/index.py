"""The :class:`Index`: add, search and delete documents in one SQLite file.

It ties the parts together: the :class:`~edge_colbert.encoder.Encoder` makes token vectors,
:mod:`~edge_colbert.quantize` stores them as int8, :class:`~edge_colbert.store.Store` keeps
them in SQLite, :class:`~edge_colbert.prefilter.Prefilter` (kept in step with the file by
:class:`~edge_colbert.mirror.PrefilterMirror`) narrows a search to candidate documents and
:mod:`~edge_colbert.maxsim` ranks them exactly. When centroids are trained is decided in
:mod:`~edge_colbert.training`; input checks live in :mod:`~edge_colbert.validation`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edge_colbert import schema
from edge_colbert.errors import InvalidInputError
from edge_colbert.maxsim import maxsim_int8_packed, maxsim_scores
from edge_colbert.mirror import PrefilterMirror
from edge_colbert.prefilter import DEFAULT_NPROBE, Prefilter, default_keep
from edge_colbert.quantize import dequantize_int8, quantize_int8
from edge_colbert.store import ModelInfo, NewDocument, PackedVectors, Store
from edge_colbert.training import (
    RETRAIN_FACTOR,
    TRAIN_TOKENS,
    train_prefilter,
    training_due,
    unique_per_document,
)
from edge_colbert.validation import (
    as_id,
    check_k,
    check_text,
    ids_for,
    metadata_for,
)

if TYPE_CHECKING:
    import sqlite3

    from edge_colbert.encoder import Encoder

__all__ = ["RETRAIN_FACTOR", "TRAIN_TOKENS", "Hit", "Index"]

logger = logging.getLogger(__name__)

# A filter that leaves this many tokens or fewer is scored exactly: cheaper than probing.
EXACT_FILTER_TOKENS = 65536
# Documents read from SQLite per exact-scoring step, so memory stays bounded.
SCORE_DOCS = 1024
# Texts per encoder call: the encoder sorts them by length and pads per batch of its own, so
# larger calls pad less; each call's float32 vectors are quantized before the next.
DEFAULT_BATCH = 1024


@dataclass(frozen=True)
class Hit:
    """One search result: the document's id, its MaxSim score, its text and its metadata."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _top(
    rowids: npt.NDArray[np.int64], scores: npt.NDArray[np.float32], k: int
) -> list[tuple[int, float]]:
    """The best ``k`` (rowid, score), by score then rowid (deterministic ties)."""
    order = np.lexsort((rowids, -scores.astype(np.float64)))[:k]
    return [(int(rowids[i]), float(scores[i])) for i in order]


class Index:
    """A ColBERT index in one SQLite file.

    Thread-safe: one Index may be shared by threads (a web server's workers, an async
    host's thread pool, a GUI's worker). Searches run side by side, each in a read
    transaction of its thread's own connection, so each sees one committed state; adds and
    deletes take turns (a lock within the process, SQLite's lock across processes) and
    commit whole or not at all; :meth:`close` may be called from any thread and closes
    every thread's connection. The in-memory prefilter is shared and updated under a lock.

    Args:
        path: the index file; created when absent (unless ``readonly``).
        encoder: the model; ``None`` uses the bundled default, loaded only when something
            must be encoded (so ``info``, ``get`` and ``delete`` need no model).
        readonly: open with SQLite's ``mode=ro``, e.g. from a second process; writes raise
            :class:`~edge_colbert.errors.ReadOnlyIndexError` (an ``IndexFileError``).
        timeout: seconds to wait for another writer before
            :class:`~edge_colbert.errors.IndexBusyError`.
        nprobe: centroids probed per query token (default
            :data:`~edge_colbert.prefilter.DEFAULT_NPROBE`).
        keep: candidates kept after pruning (default ``default_keep(k)``).
        train_tokens: stored tokens at which centroids are first trained.
        mmap: read the file through a memory map (the default): faster searches, and the
            pages they touch count in the process's resident memory (shared between reader
            processes, given back under memory pressure). ``False`` for memory-tight boards:
            on SciFact, 15.5 ms instead of 10.0 ms p50 per search, 58 MiB instead of 130 MiB
            above the loaded model.

    Raises:
        IndexFileError: the path is not an edge-colbert index (see :class:`Store`).
        ModelMismatchError: the file was written by another model.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        encoder: Encoder | None = None,
        readonly: bool = False,
        timeout: float = 30.0,
        nprobe: int | None = None,
        keep: int | None = None,
        train_tokens: int = TRAIN_TOKENS,
        mmap: bool = True,
    ) -> None:
        path = Path(path)
        new_file = not path.exists() or (path.is_file() and path.stat().st_size == 0)
        if encoder is None and new_file and not readonly:
            encoder = _default_encoder()
        self._encoder = encoder
        self._encoder_lock = threading.Lock()
        self.nprobe = DEFAULT_NPROBE if nprobe is None else int(nprobe)
        self.keep = keep
        self.train_tokens = int(train_tokens)
        if self.nprobe < 1 or (keep is not None and keep < 1) or self.train_tokens < 1:
            raise InvalidInputError(
                f"nprobe, keep and train_tokens must be >= 1; got {nprobe}, {keep}, {train_tokens}."
            )
        self._store = Store(
            path, model=_model_info(encoder), readonly=readonly, timeout=timeout, mmap=mmap
        )
        self._mirror = PrefilterMirror(self._store)

    # ---------------------------------------------------------------- plumbing

    @property
    def path(self) -> Path:
        """The index file."""
        return self._store.path

    @property
    def readonly(self) -> bool:
        """Whether the index was opened read-only."""
        return self._store.readonly

    @property
    def encoder(self) -> Encoder:
        """The encoder; the bundled default is loaded (and checked) on first use."""
        with self._encoder_lock:  # two threads' first searches load it once
            if self._encoder is None:
                encoder = _default_encoder()
                self._store.check_model(_required_info(encoder))
                self._encoder = encoder
            return self._encoder

    @property
    def store(self) -> Store:
        """The :class:`~edge_colbert.store.Store` under this index; ``index.store.connection``
        is its SQLite connection (for PRAGMAs, tracing and inspection in tests and tools).
        Writing through it behind the index's back leaves the in-memory postings stale."""
        return self._store

    @property
    def _prefilter(self) -> Prefilter | None:
        return self._mirror.prefilter

    def _refresh(self) -> None:
        """Follow another connection's commits (incrementally where the centroids are the same)."""
        self._mirror.refresh()

    # -------------------------------------------------------------------- add

    def add(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str | int] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> list[str]:
        """Encode and store documents; an id already stored is replaced (upsert).

        Everything is checked, then encoded (``batch_size`` texts per encoder call, each
        quantized to int8 at once), before the write lock is taken; the whole call is then
        written in one transaction: after a crash it is all there or not there at all.

        Returns:
            The ids, in the order of ``texts`` (new uuid4 hex ids where ``ids`` is None).

        Raises:
            InvalidInputError: a text is empty or not a string, ids or metadata do not match
                ``texts`` in length, an id repeats, or metadata is not a JSON dict.
            ReadOnlyIndexError: the index was opened with ``readonly=True``.
            IndexBusyError, StorageFullError: from the write (that batch is rolled back).
        """
        self._store.check_writable()
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
            raise InvalidInputError(
                f"texts must be a list of strings; got a {type(texts).__name__}. Wrap a single "
                "text in a list: add([text])."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer; got {batch_size!r}.")
        clean = [check_text(t, f"text at position {i}") for i, t in enumerate(texts)]
        doc_ids = ids_for(ids, len(clean))
        metas = metadata_for(metadata, len(clean))
        self._write(clean, doc_ids, metas, batch_size)
        return doc_ids

    def _write(self, texts: list[str], ids: list[str], metas: list[str], batch_size: int) -> None:
        """Encode and quantize (before the lock), then write everything in one transaction."""
        if not texts:
            return
        quantized: list[npt.NDArray[np.int8]] = []
        for start in range(0, len(texts), batch_size):
            encoded = self.encoder.encode_documents(texts[start : start + batch_size])
            quantized.extend(quantize_int8(v) for v in encoded)
        store = self._store
        # Posting is CPU work: do it before taking the write lock, with the centroids in
        # memory, and again inside only if another writer retrained them meanwhile.
        self._refresh()
        posted_with = self._prefilter
        assigned = _post(posted_with, quantized)
        with store.transaction() as conn:
            self._refresh()
            prefilter = self._prefilter
            if prefilter is not posted_with:
                assigned = _post(prefilter, quantized)
            docs = [
                NewDocument(
                    id=doc_id,
                    text=text,
                    metadata_json=meta,
                    codes=codes,
                    centroids=None if assigned is None else assigned[i],
                )
                for i, (doc_id, text, meta, codes) in enumerate(
                    zip(ids, texts, metas, quantized, strict=True)
                )
            ]
            replaced, added = store.insert(conn, docs, self._mirror.id_dtype())
            retrained = self._maybe_train(conn)
        # Only now, after the commit, does memory follow the file.
        if retrained is not None:
            self._mirror.retrained(*retrained)
        elif assigned is not None:
            self._mirror.added(replaced, added, assigned)

    def _maybe_train(
        self, conn: sqlite3.Connection
    ) -> tuple[Prefilter, int, npt.NDArray[np.int64]] | None:
        """Train or retrain the centroids inside the open transaction when it is time.

        Returns the new prefilter, its version and the rowids it posts, or None.
        """
        tokens = self._store.token_count()
        trained_on = int(self._store.meta().get(schema.META_TRAINED_ON_TOKENS, "0"))
        if not training_due(
            tokens,
            trained_on,
            trained=self._prefilter is not None,
            train_tokens=self.train_tokens,
        ):
            return None
        version = self._mirror.version + 1
        prefilter = train_prefilter(self._store, conn, tokens, version)
        logger.info(
            "trained %d centroids on %d tokens (version %d)",
            prefilter.num_centroids,
            tokens,
            version,
        )
        return prefilter, version, self._store.rowids()

    # ----------------------------------------------------------------- search

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        where: Mapping[str, Any] | None = None,
        exhaustive: bool = False,
    ) -> list[Hit]:
        """The ``k`` documents of highest MaxSim with ``query``.

        Args:
            query: the question, a non-empty string.
            k: how many hits, at least 1.
            where: metadata equality filter: ``{"key": value}``, a list or tuple value
                meaning "any of these"; keys are top-level metadata keys.
            exhaustive: score every (matching) document instead of the prefilter's
                candidates.

        Raises:
            InvalidInputError: empty query, ``k < 1``, or a filter it cannot apply.
        """
        check_text(query, "the query")
        k = check_k(k)
        vectors = self.encoder.encode_queries([query])[0]
        return self.search_vectors(vectors, k, where=where, exhaustive=exhaustive)

    def search_vectors(
        self,
        query_vectors: npt.ArrayLike,
        k: int = 10,
        *,
        where: Mapping[str, Any] | None = None,
        exhaustive: bool = False,
    ) -> list[Hit]:
        """:meth:`search` for query token vectors already encoded (``[Tq, dim]`` float)."""
        k = check_k(k)
        query = np.asarray(query_vectors)
        if query.ndim != 2 or not np.issubdtype(query.dtype, np.floating):
            raise InvalidInputError(
                f"query vectors must be a float array [tokens, dim]; got dtype {query.dtype}, "
                f"shape {query.shape}."
            )
        if query.shape[1] != self._store.dim:
            raise InvalidInputError(
                f"query vectors have {query.shape[1]} dimensions but the index holds "
                f"{self._store.dim}-d vectors; encode the query with the index's model."
            )
        if not np.isfinite(query).all():
            raise InvalidInputError("query vectors hold NaN or infinity.")
        query = np.ascontiguousarray(query, dtype=np.float32)
        if where is not None and not isinstance(where, Mapping):
            raise InvalidInputError(
                f"where must be a dict of metadata key -> value; got {type(where).__name__}."
            )
        # Follow other commits first, from the newest state: inside this search's read
        # transaction the refresh could only see that (possibly older) snapshot.
        self._refresh()
        with self._store.snapshot():
            ranked = self._rank(query, k, where or None, exhaustive)
            docs = self._store.documents([rowid for rowid, _ in ranked])
        return [
            Hit(docs[rowid].id, score, docs[rowid].text, docs[rowid].metadata)
            for rowid, score in ranked
            if rowid in docs
        ]

    def _rank(
        self,
        query: npt.NDArray[np.float32],
        k: int,
        where: Mapping[str, Any] | None,
        exhaustive: bool,
    ) -> list[tuple[int, float]]:
        prefilter = self._prefilter
        allowed: npt.NDArray[np.int64] | None = None
        if where is not None:
            allowed, tokens = self._store.filter(where)
            if allowed.size == 0:
                return []
            if exhaustive or prefilter is None or tokens <= EXACT_FILTER_TOKENS:
                return self._score(query, allowed, k)
        if exhaustive or prefilter is None:
            return self._score_all(query, k)
        with self._mirror.lock:  # another thread may be posting into it
            candidates = prefilter.candidates(query, nprobe=self.nprobe)
        if allowed is not None:
            candidates = np.intersect1d(candidates, allowed, assume_unique=True)
        wanted = min(k, allowed.size if allowed is not None else self._store.count())
        if candidates.size < wanted:
            # Too few candidates to fill k: the exact answer is cheap to get and complete.
            return (
                self._score(query, allowed, k) if allowed is not None else self._score_all(query, k)
            )
        keep = self.keep if self.keep is not None else default_keep(min(k, 1 << 20))
        with self._mirror.lock:
            pruned = prefilter.prune(query, candidates, keep=keep)
        return self._score(query, pruned, k)

    def _score_pack(self, query: npt.NDArray[np.float32], pack: PackedVectors) -> Any:
        return maxsim_int8_packed(query, pack.codes, pack.offsets)

    def _score(
        self, query: npt.NDArray[np.float32], rowids: npt.NDArray[np.int64], k: int
    ) -> list[tuple[int, float]]:
        """Exact MaxSim over the given documents, read in bounded chunks."""
        found_ids: list[npt.NDArray[np.int64]] = []
        found_scores: list[npt.NDArray[np.float32]] = []
        ordered = np.sort(rowids)
        for start in range(0, ordered.size, SCORE_DOCS):
            pack = self._store.vectors(ordered[start : start + SCORE_DOCS].tolist())
            found_ids.append(pack.rowids)
            found_scores.append(self._score_pack(query, pack))
        return self._merge(found_ids, found_scores, k)

    def _score_all(self, query: npt.NDArray[np.float32], k: int) -> list[tuple[int, float]]:
        found_ids: list[npt.NDArray[np.int64]] = []
        found_scores: list[npt.NDArray[np.float32]] = []
        for pack in self._store.iter_vectors():
            found_ids.append(pack.rowids)
            found_scores.append(self._score_pack(query, pack))
        return self._merge(found_ids, found_scores, k)

    @staticmethod
    def _merge(
        ids: list[npt.NDArray[np.int64]], scores: list[npt.NDArray[np.float32]], k: int
    ) -> list[tuple[int, float]]:
        if not ids:
            return []
        return _top(np.concatenate(ids), np.concatenate(scores), k)

    def rerank(self, query: str, texts: Sequence[str]) -> list[tuple[int, float]]:
        """Score ``texts`` against ``query`` with full-precision MaxSim; nothing is stored.

        Returns:
            ``(position in texts, score)`` pairs, best first (ties by position).
        """
        check_text(query, "the query")
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
            raise InvalidInputError(f"texts must be a list of strings; got {type(texts).__name__}.")
        clean = [check_text(t, f"text at position {i}") for i, t in enumerate(texts)]
        if not clean:
            return []
        q = self.encoder.encode_queries([query])[0]
        scores = maxsim_scores(q, self.encoder.encode_documents(clean))
        return _top(np.arange(len(clean), dtype=np.int64), scores, len(clean))

    # ------------------------------------------------------------ read & delete

    def delete(self, ids: str | int | Iterable[str | int]) -> int:
        """Delete documents by id (one id or several); returns how many were removed.

        Unknown ids are ignored, so deleting twice is harmless.
        """
        self._store.check_writable()
        if isinstance(ids, (str, int)):
            ids = [ids]
        if isinstance(ids, (bytes, Mapping)) or not isinstance(ids, Iterable):
            raise InvalidInputError(
                f"ids must be an id or a list of ids; got {type(ids).__name__}."
            )
        doomed = list(dict.fromkeys(as_id(v, f"id at position {i}") for i, v in enumerate(ids)))
        if not doomed:
            return 0
        with self._store.transaction() as conn:
            self._refresh()
            removed = self._store.delete(conn, doomed)
        self._mirror.removed(removed)
        return len(removed)

    def get(self, doc_id: str | int) -> Hit | None:
        """The stored document with this id (score NaN), or None."""
        stored = self._store.get(as_id(doc_id, "the id"))
        if stored is None:
            return None
        return Hit(stored.id, math.nan, stored.text, stored.metadata)

    def metadata(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every (id, metadata) pair, in insertion order."""
        yield from self._store.metadata()

    def __len__(self) -> int:
        return self._store.count()

    def __contains__(self, doc_id: object) -> bool:
        try:
            key = as_id(doc_id, "the id")
        except InvalidInputError:
            return False
        return self._store.contains(key)

    def __iter__(self) -> Iterator[str]:
        return self._store.ids()

    def info(self) -> dict[str, Any]:
        """Figures about the index: documents, tokens, model, size on disk, centroids."""
        meta = self._store.meta()
        tokens = self._store.token_count()
        size = self._store.size_bytes()
        return {
            "documents": self._store.count(),
            "tokens": tokens,
            "model": meta.get("model_identity", ""),
            "model_name": meta.get("model_name", ""),
            "dim": self._store.dim,
            "size_bytes": size,
            "bytes_per_token": round(size / tokens, 2) if tokens else None,
            "centroids": self._prefilter.num_centroids if self._prefilter else 0,
            "centroid_version": int(meta.get("centroid_version", "0")),
            "trained_on_tokens": int(meta.get("trained_on_tokens", "0")),
            "schema_version": int(meta.get("schema_version", "0")),
        }

    def close(self) -> None:
        """Close the file: every thread's connection. Callable from any thread; a write in
        progress in another thread finishes first. Later calls raise
        :class:`~edge_colbert.errors.IndexClosedError`."""
        self._store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Index({str(self.path)!r}, readonly={self.readonly})"


def _post(
    prefilter: Prefilter | None,
    quantized: Sequence[npt.NDArray[np.int8]],
) -> list[npt.NDArray[np.uint32]] | None:
    """Each document's sorted unique nearest centroids, from its stored int8 vectors (as
    retraining re-posts them), in one assignment over all tokens of the batch."""
    if prefilter is None or not quantized:
        return None
    codes = np.concatenate(list(quantized))
    offsets = np.zeros(len(quantized) + 1, dtype=np.int64)
    np.cumsum([len(c) for c in quantized], out=offsets[1:])
    labels = prefilter.assign(dequantize_int8(codes))
    return unique_per_document(labels, offsets, prefilter.num_centroids)


def _default_encoder() -> Encoder:
    from edge_colbert.encoder import Encoder

    return Encoder()


def _model_info(encoder: Encoder | None) -> ModelInfo | None:
    return None if encoder is None else _required_info(encoder)


def _required_info(encoder: Encoder) -> ModelInfo:
    return ModelInfo(
        identity=encoder.identity,
        name=encoder.manifest.name,
        dim=encoder.dim,
        legacy_identity=getattr(encoder, "legacy_identity", None),
    )
