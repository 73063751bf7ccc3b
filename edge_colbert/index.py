"""The :class:`Index`: add, search and delete documents in one SQLite file.

It ties the parts together: the :class:`~edge_colbert.encoder.Encoder` makes token vectors,
:mod:`~edge_colbert.quantize` stores them as int8, :class:`~edge_colbert.store.Store` keeps
them in SQLite, :class:`~edge_colbert.prefilter.Prefilter` (kept in step with the file by
:class:`~edge_colbert.mirror.PrefilterMirror`) narrows a search to candidate documents and
:mod:`~edge_colbert.maxsim` ranks them exactly, along the search path of
:class:`~edge_colbert.ranking.Ranker`. When centroids are trained is decided in
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
from edge_colbert.codec import ResidualCodec, check_codec, settle_codec
from edge_colbert.errors import InvalidInputError
from edge_colbert.lexical import fts_terms
from edge_colbert.maxsim import maxsim_scores
from edge_colbert.mirror import PrefilterMirror
from edge_colbert.pooling import check_pool_factor, pool_documents, settle_pool_factor
from edge_colbert.prefilter import Prefilter
from edge_colbert.quantize import dequantize_int8, quantize_int8
from edge_colbert.ranking import Ranker, Scored, top
from edge_colbert.store import ModelInfo, NewDocument, Store, StoredDocument
from edge_colbert.training import (
    RETRAIN_FACTOR,
    TRAIN_TOKENS,
    retrain,
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
    from edge_colbert.encoder import Encoder

__all__ = ["DEFAULT_MODE", "RETRAIN_FACTOR", "SEARCH_MODES", "TRAIN_TOKENS", "Hit", "Index"]

logger = logging.getLogger(__name__)

# Texts per encoder call: the encoder sorts them by length and pads per batch of its own, so
# larger calls pad less; each call's float32 vectors are quantized before the next.
DEFAULT_BATCH = 1024
# Search modes; the default is the best on the held-out half of scifact-dev (docs/hybrid.md).
SEARCH_MODES = ("hybrid", "semantic", "keyword")
DEFAULT_MODE = "hybrid"


@dataclass(frozen=True)
class Hit:
    """One search result: the document's id, its score, its text and its metadata.

    ``score`` is the ranking's score: fused (hybrid search), MaxSim (semantic) or BM25
    (keyword). ``lexical`` is the document's BM25 score where it was among the keyword hits
    and ``semantic`` its exact MaxSim score where it was computed; None otherwise.
    Immutable, so thread-safe.
    """

    id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    lexical: float | None = None
    semantic: float | None = None


def _hit(doc: StoredDocument, scored: Scored) -> Hit:
    return Hit(doc.id, scored.score, doc.text, doc.metadata, scored.lexical, scored.semantic)


def _check_mode(mode: object) -> str:
    if mode not in SEARCH_MODES:
        raise InvalidInputError(f"mode must be one of {', '.join(SEARCH_MODES)}; got {mode!r}.")
    return str(mode)


def _check_where(where: object) -> Mapping[str, Any] | None:
    if where is not None and not isinstance(where, Mapping):
        raise InvalidInputError(
            f"where must be a dict of metadata key -> value; got {type(where).__name__}."
        )
    return where or None


class Index:
    """A ColBERT index in one SQLite file.

    Thread-safe: one Index may be shared by threads (a web server's workers, an async
    host's thread pool, a GUI's worker). Searches run side by side, each in a read
    transaction of its thread's own connection, so each sees one committed state; adds and
    deletes take turns (a lock within the process, SQLite's lock across processes) and
    commit whole or not at all; :meth:`close` may be called from any thread and closes
    every thread's connection. The in-memory prefilter is shared and updated under a lock.
    A hybrid search runs the prefilter on the index's one helper thread while it asks the
    full-text index, when no other search is using that thread. ``index.ranker`` is that
    search path (:class:`~edge_colbert.ranking.Ranker`) with its knobs: ``nprobe``,
    ``keep``, and hybrid search's ``lexical_weight``, ``fusion`` and ``fts_candidates``.

    Args:
        path: the index file; created when absent (unless ``readonly``).
        encoder: the model; ``None`` uses the bundled default, loaded only when something
            must be encoded (so ``info``, ``get`` and ``delete`` need no model).
        readonly: open with SQLite's ``mode=ro``, e.g. from a second process; writes raise
            :class:`~edge_colbert.errors.ReadOnlyIndexError` (an ``IndexFileError``).
        timeout: seconds to wait for another writer before
            :class:`~edge_colbert.errors.IndexBusyError`.
        nprobe: centroids probed per query token (default: by the collection's size,
            :func:`~edge_colbert.prefilter.search_settings`; 4 at every size measured).
        keep: candidates kept after pruning (default: ``search_settings(documents, k)``,
            half of it in hybrid search).
        train_tokens: stored tokens at which centroids are first trained.
        mmap: read the file through a memory map (the default): faster searches, and the
            pages they touch count in the process's resident memory (shared between reader
            processes, given back under memory pressure). ``False`` for memory-tight boards:
            on SciFact, 15.5 ms instead of 10.0 ms p50 per search, 58 MiB instead of 130 MiB
            above the loaded model.
        pool_factor: token pooling (:mod:`~edge_colbert.pooling`): each document keeps
            about ``1 / pool_factor`` of its token vectors, merged by Ward clustering. Recorded
            in a new file and applied to every later add; ``None`` takes what the file
            records (1, no pooling, for a new file). Must match a file that holds documents.
        codec: how token vectors are stored (:mod:`~edge_colbert.codec`): ``"int8"`` (64
            bytes per token at 64 dimensions), ``"residual4"`` (34) or ``"residual2"`` (18):
            a centroid id and a few bits per dimension, ColBERTv2's residual codes.
            Recorded in a new file; ``None`` takes what the file records (``"int8"`` for a
            new file). Must match a file that holds documents (``edge-colbert compact``
            converts one).

    Raises:
        InvalidInputError: a bad ``pool_factor`` or ``codec``, or one that differs from the
            file's.
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
        pool_factor: int | None = None,
        codec: str | None = None,
    ) -> None:
        path = Path(path)
        if pool_factor is not None:
            check_pool_factor(pool_factor)  # before anything touches the file
        if codec is not None:
            check_codec(codec)
        new_file = not path.exists() or (path.is_file() and path.stat().st_size == 0)
        if encoder is None and new_file and not readonly:
            encoder = _default_encoder()
        self._encoder = encoder
        self._encoder_lock = threading.Lock()
        nprobe = None if nprobe is None else int(nprobe)
        self.train_tokens = int(train_tokens)
        if (
            (nprobe is not None and nprobe < 1)
            or (keep is not None and keep < 1)
            or self.train_tokens < 1
        ):
            raise InvalidInputError(
                f"nprobe, keep and train_tokens must be >= 1; got {nprobe}, {keep}, {train_tokens}."
            )
        self._store = Store(
            path, model=_model_info(encoder), readonly=readonly, timeout=timeout, mmap=mmap
        )
        try:
            self.codec = settle_codec(self._store, codec)
            self.pool_factor = settle_pool_factor(self._store, pool_factor)
        except BaseException:
            self._store.close()
            raise
        self._mirror = PrefilterMirror(self._store)
        self.ranker = Ranker(self._store, self._mirror, nprobe=nprobe, keep=keep)

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
        """Encode and quantize (before the lock), write everything in one transaction, then
        (outside it) train the centroids if the batch made it due."""
        if not texts:
            return
        quantized: list[npt.NDArray[np.int8]] = []
        for start in range(0, len(texts), batch_size):
            encoded = self.encoder.encode_documents(texts[start : start + batch_size])
            encoded = pool_documents(encoded, self.pool_factor)
            quantized.extend(quantize_int8(v) for v in encoded)
        store = self._store
        # Posting and residual coding are CPU work: do them before taking the write lock,
        # with the centroids in memory, and again inside only if another writer retrained
        # them meanwhile.
        self._refresh()
        with store.snapshot():  # the coding and the centroids it needs from one commit
            residual = store.residual_codec()
        prepared = _prepare(self._prefilter, residual, quantized)
        with store.transaction() as conn:
            self._refresh()
            prefilter, residual = self._prefilter, store.residual_codec()
            if prefilter is not prepared.prefilter or residual is not prepared.residual:
                prepared = _prepare(prefilter, residual, quantized)
            docs = [
                NewDocument(
                    id=doc_id,
                    text=text,
                    metadata_json=meta,
                    codes=codes,
                    centroids=None if prepared.unique is None else prepared.unique[i],
                )
                for i, (doc_id, text, meta, codes) in enumerate(
                    zip(ids, texts, metas, prepared.codes, strict=True)
                )
            ]
            replaced, added = store.insert(conn, docs, self._mirror.id_dtype())
        # Only now, after the commit, does memory follow the file.
        if prepared.unique is not None:
            self._mirror.added(replaced, added, prepared.unique)
        self._maybe_train()

    def _maybe_train(self) -> None:
        """Train or retrain the centroids when it is time, outside the write lock.

        k-means and the assignment of every stored document run with no transaction open;
        one short write transaction then swaps the result in (see
        :func:`~edge_colbert.training.retrain`). Killed before that, nothing was written.
        """
        store = self._store
        with store.snapshot():
            tokens = store.token_count()
            trained_on = int(store.meta().get(schema.META_TRAINED_ON_TOKENS, "0"))
            version = store.centroid_version()
        if not training_due(
            tokens, trained_on, trained=version > 0, train_tokens=self.train_tokens
        ):
            return
        done = retrain(store, seen_version=version)
        if done is None:
            self._refresh()  # another writer's centroids: follow them
            return
        prefilter, new_version, postings = done
        self._mirror.retrained(prefilter, new_version, postings.rowids)

    # ----------------------------------------------------------------- search

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        where: Mapping[str, Any] | None = None,
        exhaustive: bool = False,
        mode: str = DEFAULT_MODE,
    ) -> list[Hit]:
        """The ``k`` best documents for ``query``.

        Thread-safe; each search reads one committed state of the file.

        Args:
            query: the question, a non-empty string.
            k: how many hits, at least 1.
            where: metadata equality filter: ``{"key": value}``, a list or tuple value
                meaning "any of these"; keys are top-level metadata keys. Applies in every
                mode.
            exhaustive: score every (matching) document instead of the prefilter's
                candidates.
            mode: ``"hybrid"`` (the default): the full-text index's BM25 top hits and the
                prefilter's candidates, all scored by exact MaxSim, the two scores fused
                (:func:`edge_colbert.lexical.fuse`); ``"semantic"``: MaxSim alone;
                ``"keyword"``: BM25 alone (no encoder is loaded; a part in double quotes is
                an exact phrase).

        Returns:
            Hits best first. ``Hit.score`` is the fused score (hybrid), the MaxSim score
            (semantic) or the BM25 score (keyword); ``Hit.lexical`` and ``Hit.semantic``
            hold the two signals where they were computed.

        Raises:
            InvalidInputError: empty query, ``k < 1``, an unknown mode, or a filter it
                cannot apply.
        """
        check_text(query, "the query")
        k = check_k(k)
        mode = _check_mode(mode)
        if mode == "keyword":
            return self._keyword_search(query, k, _check_where(where))
        vectors = self.encoder.encode_queries([query])[0]
        return self.search_vectors(
            vectors, k, where=where, exhaustive=exhaustive, query=query, mode=mode
        )

    def search_vectors(
        self,
        query_vectors: npt.ArrayLike,
        k: int = 10,
        *,
        where: Mapping[str, Any] | None = None,
        exhaustive: bool = False,
        query: str | None = None,
        mode: str | None = None,
    ) -> list[Hit]:
        """:meth:`search` for query token vectors already encoded (``[Tq, dim]`` float).

        ``mode`` defaults to ``"hybrid"`` when the query's text is given as ``query`` (the
        keyword side needs it), else to ``"semantic"``. Thread-safe.
        """
        k = check_k(k)
        mode = _check_mode("hybrid" if mode is None and query is not None else mode or "semantic")
        if mode != "semantic" and query is None:
            raise InvalidInputError(
                f'mode "{mode}" needs the query text; pass query=TEXT to search_vectors.'
            )
        if query is not None:
            check_text(query, "the query")
        if mode == "keyword":
            return self._keyword_search(str(query), k, _check_where(where))
        vectors = np.asarray(query_vectors)
        if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
            raise InvalidInputError(
                f"query vectors must be a float array [tokens, dim]; got dtype {vectors.dtype}, "
                f"shape {vectors.shape}."
            )
        if vectors.shape[1] != self._store.dim:
            raise InvalidInputError(
                f"query vectors have {vectors.shape[1]} dimensions but the index holds "
                f"{self._store.dim}-d vectors; encode the query with the index's model."
            )
        if not np.isfinite(vectors).all():
            raise InvalidInputError("query vectors hold NaN or infinity.")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        where = _check_where(where)
        # Follow other commits first, from the newest state: inside this search's read
        # transaction the refresh could only see that (possibly older) snapshot.
        self._refresh()
        with self._store.snapshot():
            if mode == "hybrid":
                scored = self.ranker.hybrid(vectors, str(query), k, where, exhaustive)
            else:
                scored = [
                    Scored(rowid, score, None, score)
                    for rowid, score in self.ranker.semantic(vectors, k, where, exhaustive)
                ]
            docs = self._store.documents([s.rowid for s in scored])
        return [_hit(docs[s.rowid], s) for s in scored if s.rowid in docs]

    def _keyword_search(self, query: str, k: int, where: Mapping[str, Any] | None) -> list[Hit]:
        """BM25 alone, from the full-text index; needs no encoder."""
        terms = fts_terms(query)
        if not terms:
            return []  # no word to look for (punctuation only)
        with self._store.snapshot():
            scored = self.ranker.keyword(terms, k, where)
            docs = self._store.documents([s.rowid for s in scored])
        return [_hit(docs[s.rowid], s) for s in scored if s.rowid in docs]

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
        return top(np.arange(len(clean), dtype=np.int64), scores, len(clean))

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
            "centroid_version": self._store.centroid_version(),
            "trained_on_tokens": int(meta.get("trained_on_tokens", "0")),
            "schema_version": int(meta.get("schema_version", "0")),
            "codec": self._store.codec(),
            "pool_factor": self.pool_factor,
        }

    def close(self) -> None:
        """Close the file: every thread's connection. Callable from any thread; a write in
        progress in another thread finishes first. Later calls raise
        :class:`~edge_colbert.errors.IndexClosedError`."""
        self.ranker.close()
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


@dataclass(frozen=True)
class _Prepared:
    """A batch ready to insert under one centroid version: each document's stored codes
    and its sorted unique nearest centroids (None before centroids exist)."""

    prefilter: Prefilter | None
    residual: ResidualCodec | None
    codes: Sequence[npt.NDArray[np.int8] | npt.NDArray[np.uint8]]
    unique: list[npt.NDArray[np.uint32]] | None


def _prepare(
    prefilter: Prefilter | None,
    residual: ResidualCodec | None,
    quantized: list[npt.NDArray[np.int8]],
) -> _Prepared:
    """Post the batch under ``prefilter`` (one assignment over all its tokens, from the
    int8 vectors, as retraining re-posts them) and, in a residual file with trained
    centroids, code every token against its nearest centroid. ``prefilter`` and
    ``residual`` come from the same commit (the write transaction re-prepares when they
    changed), so they hold the same centroids."""
    if prefilter is None or not quantized:
        return _Prepared(prefilter, residual, quantized, None)
    offsets = np.zeros(len(quantized) + 1, dtype=np.int64)
    np.cumsum([len(c) for c in quantized], out=offsets[1:])
    vectors = dequantize_int8(np.concatenate(quantized))
    labels = prefilter.assign(vectors)
    unique = unique_per_document(labels, offsets, prefilter.num_centroids)
    if residual is None:
        return _Prepared(prefilter, residual, quantized, unique)
    records = residual.encode(vectors, labels)
    codes = [records[offsets[i] : offsets[i + 1]] for i in range(len(quantized))]
    return _Prepared(prefilter, residual, codes, unique)


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
        languages=tuple(encoder.manifest.languages),
    )
