"""The search path of an :class:`~edge_colbert.index.Index`: ranking one query's documents.

Keyword search asks the full-text index (FTS5's BM25); semantic search narrows the
collection with the :class:`~edge_colbert.prefilter.Prefilter` (candidates, then pruning by
centroid interaction) and ranks the survivors by exact MaxSim over their stored vectors;
hybrid search does both and fuses the two scores (:func:`~edge_colbert.lexical.fuse`).
:class:`Ranker` holds the knobs and the helper thread; the caller holds the read
transaction (``Store.snapshot``) every method here runs in, and turns rowids into hits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from edge_colbert.lexical import (
    DEFAULT_LEXICAL_WEIGHT,
    LOSSLESS_SHARE,
    Fusion,
    TermFrequencies,
    fts_match,
    fts_terms,
    fuse,
)
from edge_colbert.maxsim import maxsim_float_packed, maxsim_int8_packed
from edge_colbert.mirror import PrefilterMirror
from edge_colbert.prefilter import Prefilter, SearchSettings, search_settings
from edge_colbert.store import PackedVectors, Store

__all__ = ["FTS_CANDIDATES", "Ranker", "Scored", "top"]

# A filter that leaves this many tokens or fewer is scored exactly: cheaper than probing.
EXACT_FILTER_TOKENS = 65536
# Documents read from SQLite per exact-scoring step, so memory stays bounded.
SCORE_DOCS = 1024
# Keyword hits joined to the prefilter's candidates in a hybrid search.
FTS_CANDIDATES = 100


@dataclass(frozen=True)
class Scored:
    """A ranked rowid with its ranking score and the two signals (None: not computed)."""

    rowid: int
    score: float
    lexical: float | None
    semantic: float | None


# Rowids (sorted) and their MaxSim scores.
_RowScores = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]


def _joined(ids: list[npt.NDArray[np.int64]], scores: list[npt.NDArray[np.float32]]) -> _RowScores:
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    return np.concatenate(ids), np.concatenate(scores).astype(np.float32, copy=False)


def top(
    rowids: npt.NDArray[np.int64], scores: npt.NDArray[np.float32], k: int
) -> list[tuple[int, float]]:
    """The best ``k`` (rowid, score), by score then rowid (deterministic ties)."""
    order = np.lexsort((rowids, -scores.astype(np.float64)))[:k]
    return [(int(rowids[i]), float(scores[i])) for i in order]


_Result = TypeVar("_Result")


class _Beside(Protocol):
    """Runs memory-only work beside the calling thread (see :meth:`Ranker.beside`)."""

    def __call__(self, work: Callable[[], _Result]) -> Future[_Result]: ...


def _done_here(work: Callable[[], _Result]) -> Future[_Result]:
    """``work`` run at once on this thread, as a finished future."""
    future: Future[_Result] = Future()
    try:
        future.set_result(work())
    except Exception as error:  # noqa: BLE001 - handed to whoever asks the future
        future.set_exception(error)
    return future


class Ranker:
    """Ranks documents of one index for a query: keyword, semantic and hybrid.

    Thread-safe: searches from many threads share it, each in its own thread's read
    transaction of ``store``; the shared prefilter is read under the mirror's lock. It owns
    one helper thread, started on first use, that runs memory-only work (the prefilter,
    exact scoring of vectors already read) beside a search's own SQLite reads, when no
    other search is using it; :meth:`close` stops it.

    The knobs are plain attributes, read once per search: ``nprobe`` and ``keep`` override
    :func:`~edge_colbert.prefilter.search_settings` (None: by the collection's size);
    ``lexical_weight`` and ``fusion`` fuse hybrid scores; ``fts_candidates`` keyword hits
    join a hybrid search's candidates.
    """

    def __init__(
        self, store: Store, mirror: PrefilterMirror, *, nprobe: int | None, keep: int | None
    ) -> None:
        self._store = store
        self._mirror = mirror
        self.nprobe = nprobe
        self.keep = keep
        # Hybrid search's knobs (chosen on one half of scifact-dev, see docs/hybrid.md).
        self.lexical_weight: float = DEFAULT_LEXICAL_WEIGHT
        self.fusion: Fusion = "convex"
        self.fts_candidates: int = FTS_CANDIDATES
        self._term_frequencies = TermFrequencies()
        self._helper: ThreadPoolExecutor | None = None
        self._helper_lock = threading.Lock()
        self._helper_free = threading.Lock()

    def close(self) -> None:
        """Stop the helper thread (after the work it was given); a search that still asks
        for it does the work itself."""
        with self._helper_lock:
            helper, self._helper = self._helper, None
        if helper is not None:
            helper.shutdown(wait=True)

    def keyword(self, terms: list[str], k: int, where: Mapping[str, Any] | None) -> list[Scored]:
        """BM25 alone, from the full-text index (in the caller's snapshot): the best ``k``
        of the documents holding any of ``terms``."""
        kept = self.informative(terms)
        rowids, scores = self._store.fts_search(fts_match(kept), k, where=where)
        if rowids.size < k and len(kept) < len(terms):
            # Too few hits: the documents that hold only the common terms fill the list,
            # in FTS5's order (their scores are millionths).
            rowids, scores = self._store.fts_search(fts_match(terms), k, where=where)
        return [
            Scored(int(r), float(s), float(s), None) for r, s in zip(rowids, scores, strict=True)
        ]

    def hybrid(
        self,
        query: npt.NDArray[np.float32],
        text: str,
        k: int,
        where: Mapping[str, Any] | None,
        exhaustive: bool,
    ) -> list[Scored]:
        """The FTS top hits and the semantic candidates, all scored by exact MaxSim, fused:
        the best ``k``, in the caller's snapshot."""
        terms = fts_terms(text)

        def keyword_hits() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
            if not terms:
                return np.zeros(0, dtype=np.int64), np.zeros(0)
            # Documents that hold only terms of BM25 weight 0 are not keyword candidates
            # (TermFrequencies): fusion counts their millionths as no match.
            return self._store.fts_search(
                fts_match(self.informative(terms)), max(self.fts_candidates, k), where=where
            )

        prefilter = self._mirror.prefilter
        allowed, final = self._allowed(where, exhaustive, prefilter)
        if final or prefilter is None:
            lex_ids, lex_scores = keyword_hits()
            if allowed is None:
                sem_ids, sem_scores = self.scores_all(query)
            else:
                sem_ids, sem_scores = self.scores(query, np.union1d(allowed, lex_ids))
        else:
            # The prefilter (memory only) runs on the helper thread while this thread asks
            # FTS5 and reads the keyword hits' vectors (SQLite stays on this thread, in its
            # snapshot); then the helper scores those while this one reads and scores the
            # other candidates.
            with self.beside() as beside:
                narrowing = beside(lambda: self.narrow(prefilter, query, k, allowed, hybrid=True))
                lex_ids, lex_scores = keyword_hits()
                keyword_packs = self._read(lex_ids)
                candidates = self._settled(narrowing.result(), k, allowed)
                if candidates is None:
                    sem_ids, sem_scores = self.scores_all(query)
                else:
                    scoring = beside(lambda: self._score_packs(query, keyword_packs))
                    rest = np.setdiff1d(candidates, lex_ids, assume_unique=True)
                    rest_ids, rest_scores = self._score_packs(query, self._read(rest))
                    hit_ids, hit_scores = scoring.result()
                    sem_ids, sem_scores = _joined([hit_ids, rest_ids], [hit_scores, rest_scores])
                    order = np.argsort(sem_ids, kind="stable")
                    sem_ids, sem_scores = sem_ids[order], sem_scores[order]
        if sem_ids.size == 0:
            return []
        lexical = np.full(sem_ids.size, np.nan)
        position = np.searchsorted(sem_ids, lex_ids)
        found = position < sem_ids.size
        found[found] = sem_ids[position[found]] == lex_ids[found]
        lexical[position[found]] = lex_scores[found]
        fused = fuse(sem_scores, lexical, weight=self.lexical_weight, method=self.fusion)
        order = np.lexsort((sem_ids, -fused))[:k]
        return [
            Scored(
                int(sem_ids[i]),
                float(fused[i]),
                None if np.isnan(lexical[i]) else float(lexical[i]),
                float(sem_scores[i]),
            )
            for i in order
        ]

    def informative(self, terms: list[str], share: float = LOSSLESS_SHARE) -> list[str]:
        """``terms`` without those held by ``share`` of the documents (inside a snapshot;
        see :class:`~edge_colbert.lexical.TermFrequencies`)."""
        store = self._store
        return self._term_frequencies.informative(
            terms,
            share=share,
            state=store.collection_state(),
            documents=store.count,
            holding=store.fts_holding,
        )

    def semantic(
        self,
        query: npt.NDArray[np.float32],
        k: int,
        where: Mapping[str, Any] | None,
        exhaustive: bool,
    ) -> list[tuple[int, float]]:
        """MaxSim alone: the best ``k`` (rowid, score), in the caller's snapshot."""
        candidates = self.candidates(query, k, where, exhaustive)
        if candidates is None:
            return self._score_all(query, k)
        return self.score(query, candidates, k) if candidates.size else []

    def candidates(
        self,
        query: npt.NDArray[np.float32],
        k: int,
        where: Mapping[str, Any] | None,
        exhaustive: bool,
        *,
        hybrid: bool = False,
    ) -> npt.NDArray[np.int64] | None:
        """The rowids to score exactly (None: every document), pruned as for a hybrid
        search or a semantic one (:meth:`_keep`)."""
        prefilter = self._mirror.prefilter
        allowed, final = self._allowed(where, exhaustive, prefilter)
        if final or prefilter is None:
            return allowed
        with self.beside() as beside:  # pruning scores half its candidates there
            narrowed = self.narrow(prefilter, query, k, allowed, hybrid=hybrid, beside=beside)
        return self._settled(narrowed, k, allowed)

    def _allowed(
        self, where: Mapping[str, Any] | None, exhaustive: bool, prefilter: Prefilter | None
    ) -> tuple[npt.NDArray[np.int64] | None, bool]:
        """The rowids that ``where`` allows (None: no filter), and whether they are the
        candidates already (no prefilter, an exhaustive search, or a small filtered set)."""
        if where is None:
            return None, exhaustive or prefilter is None
        allowed, tokens = self._store.filter(where)
        final = exhaustive or prefilter is None or tokens <= EXACT_FILTER_TOKENS
        return allowed, final or allowed.size == 0

    def narrow(
        self,
        prefilter: Prefilter,
        query: npt.NDArray[np.float32],
        k: int,
        allowed: npt.NDArray[np.int64] | None,
        *,
        hybrid: bool,
        beside: _Beside | None = None,
    ) -> tuple[npt.NDArray[np.int64], bool]:
        """The prefilter's candidates among ``allowed``, pruned (:meth:`_keep`) when they
        can fill ``k`` (then the second item is True); ``beside`` (see :meth:`beside`)
        scores half the candidates' centroid interaction. Memory only, no SQLite: it may run on
        the search helper thread (see :meth:`beside`)."""
        with self._mirror.lock:  # another thread may be posting into it
            # The knobs grow with the collection (prefilter.search_settings).
            settings = search_settings(prefilter.num_documents, min(k, 1 << 20))
            nprobe = settings.nprobe if self.nprobe is None else self.nprobe
            limit = settings.hybrid_candidates if hybrid else settings.candidates
            candidates = prefilter.candidates(query, nprobe=nprobe, limit=limit)
            if allowed is not None:
                candidates = np.intersect1d(candidates, allowed, assume_unique=True)
            if candidates.size < k:
                return candidates, False
            keep = self._keep(settings, hybrid=hybrid)
            if beside is None or candidates.size <= keep:
                return prefilter.prune(query, candidates, keep=keep), True
            # Prefilter.prune with its centroid interaction (the gather that dominates a
            # SciFact-scale semantic search) computed in two halves side by side.
            half = candidates.size // 2
            first = beside(lambda: prefilter.centroid_scores(query, candidates[:half]))
            second = prefilter.centroid_scores(query, candidates[half:])
            scores = np.concatenate([first.result(), second])
            return prefilter.best_scored(candidates, scores, keep=keep), True

    def _settled(
        self,
        narrowed: tuple[npt.NDArray[np.int64], bool],
        k: int,
        allowed: npt.NDArray[np.int64] | None,
    ) -> npt.NDArray[np.int64] | None:
        """The candidates of :meth:`narrow`, or every allowed document (None: all) when
        they cannot fill ``k``: the exact answer is then cheap and complete."""
        candidates, pruned = narrowed
        # The collection's size only matters when the candidates cannot fill k; counting
        # the rows costs 49 ms CPU at a million documents, so it is not done otherwise.
        if not pruned and candidates.size < (
            allowed.size if allowed is not None else self._store.count()
        ):
            return allowed
        return candidates

    @contextmanager
    def beside(self) -> Iterator[_Beside]:
        """A way to run memory-only work (no SQLite) on the index's helper thread while
        this thread goes on: ``beside(work)`` returns its future. When another search holds
        the helper, ``beside`` runs the work at once, here: a search never waits for
        another's work. On leaving, the helper has finished everything given to it."""
        if not self._helper_free.acquire(blocking=False):
            yield _done_here
            return
        given: list[Future[Any]] = []
        try:
            with self._helper_lock:
                if self._helper is None:
                    self._helper = ThreadPoolExecutor(1, thread_name_prefix="edge-colbert-search")
                helper = self._helper

            def beside(work: Callable[[], _Result]) -> Future[_Result]:
                try:
                    future = helper.submit(work)
                except RuntimeError:  # close() stopped the helper: the search's next read
                    return _done_here(work)  # raises IndexClosedError, as without one
                given.append(future)
                return future

            yield beside
        finally:
            wait(given)  # the helper is idle before another search may take it
            self._helper_free.release()

    def _keep(self, settings: SearchSettings, *, hybrid: bool) -> int:
        """Candidates that survive pruning: ``keep`` when given, else the settings' (see
        :func:`~edge_colbert.prefilter.search_settings`), fewer in hybrid search, where the
        keyword hits are candidates too."""
        if self.keep is not None:
            return self.keep
        return settings.hybrid_keep if hybrid else settings.keep

    def _score_pack(self, query: npt.NDArray[np.float32], pack: PackedVectors) -> Any:
        if pack.codec is None:
            return maxsim_int8_packed(query, pack.codes, pack.offsets)
        return maxsim_float_packed(query, pack.floats(), pack.offsets)

    def scores(self, query: npt.NDArray[np.float32], rowids: npt.NDArray[np.int64]) -> _RowScores:
        """Exact MaxSim of the given documents (rowids sorted), read in bounded chunks."""
        return self._score_packs(query, self._read(rowids))

    def _read(self, rowids: npt.NDArray[np.int64]) -> list[PackedVectors]:
        """The stored vectors of these documents, in packs of at most SCORE_DOCS."""
        ordered = np.sort(rowids)
        return [
            self._store.vectors(ordered[start : start + SCORE_DOCS].tolist())
            for start in range(0, ordered.size, SCORE_DOCS)
        ]

    def _score_packs(
        self, query: npt.NDArray[np.float32], packs: list[PackedVectors]
    ) -> _RowScores:
        """Exact MaxSim of the documents in ``packs`` (memory only), rowids sorted."""
        return _joined(
            [pack.rowids for pack in packs], [self._score_pack(query, pack) for pack in packs]
        )

    def scores_all(self, query: npt.NDArray[np.float32]) -> _RowScores:
        """Exact MaxSim of every document (rowids sorted)."""
        found_ids: list[npt.NDArray[np.int64]] = []
        found_scores: list[npt.NDArray[np.float32]] = []
        for pack in self._store.iter_vectors():
            found_ids.append(pack.rowids)
            found_scores.append(self._score_pack(query, pack))
        return _joined(found_ids, found_scores)

    def score(
        self, query: npt.NDArray[np.float32], rowids: npt.NDArray[np.int64], k: int
    ) -> list[tuple[int, float]]:
        """The best ``k`` of the given documents (rowid, score) by exact MaxSim."""
        ids, scores = self.scores(query, rowids)
        return top(ids, scores, k) if ids.size else []

    def _score_all(self, query: npt.NDArray[np.float32], k: int) -> list[tuple[int, float]]:
        """The best ``k`` of every document by exact MaxSim."""
        ids, scores = self.scores_all(query)
        return top(ids, scores, k) if ids.size else []
