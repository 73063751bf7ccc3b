"""Hybrid retrieval on scifact-dev: BM25 alone, MaxSim alone, and the two fused, through the
product's own index (FTS5 + centroid prefilter + exact int8 MaxSim).

The 809 dev queries are split in two halves by a seeded shuffle (seed 0): every weight is
chosen on the *tune* half and reported on the *held-out* half. Printed, side by side from
one run: nDCG@10 and Recall@100 of each mode and fusion on both halves, the whole weight
curve, search latency without query encoding (p50/p95), the prefilter's top-10 overlap with
exhaustive hybrid scoring, bytes per stored token, the full-text layouts compared (bytes and
insert time), the FTS share of indexing time, and the 2 -> 3 migration time per 10k docs.

Run from the repository root (SciFact at ../shared/data/scifact-dev, the bundled model):

    nice -n 10 python benchmarks/hybrid.py --db /tmp/scifact-v3.db

The index is built on the first run and reused (``--rebuild`` to start over); query
vectors are encoded once per run. On a busy machine, ``--vectors FILE.npz`` takes the
bundled model's token vectors encoded beforehand (``doc_vecs``/``doc_lens``,
``q_vecs``/``q_lens``, in corpus and query file order, as float16) instead of encoding:
the index is still written by ``Index.add`` (quantized, posted, stored the product's way).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import latency_ms
from benchmarks.eval_scifact import (
    DEFAULT_SCIFACT,
    Dataset,
    load_dataset,
    ndcg_at_k,
    query_halves,
    recall_at_k,
)
from edge_colbert import centroid_lists
from edge_colbert.encoder import Encoder
from edge_colbert.index import Index
from edge_colbert.lexical import (
    Fusion,
    fts_match,
    fts_terms,
    fuse,
    is_stopword,
    query_words,
)
from edge_colbert.prefilter import default_keep
from edge_colbert.schema import FTS_ENGLISH

# BM25's weight in the convex combination (weight 0 is MaxSim alone, 1 BM25 alone).
WEIGHTS = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
DEPTH = 100
# --idf: exponents of the IDF weight and the weight of special tokens tried on the tune half.
IDF_POWERS = [0.5, 1.0, 1.5, 2.0]
IDF_SPECIALS = [1.0, 0.0]

Run = dict[str, dict[str, float]]
CPU_TIMES: dict[str, list[float]] = {}


def scores(run: Run, data: Dataset, qids: Sequence[str]) -> tuple[float, float]:
    """Mean nDCG@10 and Recall@100 over ``qids`` (judged queries only)."""
    judged = [q for q in qids if any(g > 0 for g in data.qrels.get(q, {}).values())]
    ndcg = float(np.mean([ndcg_at_k(run.get(q, {}), data.qrels[q], 10) for q in judged]))
    recall = float(np.mean([recall_at_k(run.get(q, {}), data.qrels[q]) for q in judged]))
    return ndcg, recall


class CachedEncoder:
    """The bundled encoder, answering ``encode_documents`` / ``encode_queries`` from vectors
    it encoded earlier (looked up by text); everything else is the real encoder's."""

    def __init__(self, encoder: Encoder, data: Dataset, cache: Path) -> None:
        self._encoder = encoder
        arrays = np.load(cache)
        self._docs = dict(
            zip(data.doc_texts, _split(arrays["doc_vecs"], arrays["doc_lens"]), strict=True)
        )
        self._queries = dict(
            zip(data.query_texts, _split(arrays["q_vecs"], arrays["q_lens"]), strict=True)
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def encode_documents(self, texts: Sequence[str]) -> list[npt.NDArray[np.float32]]:
        return [self._docs[t] for t in texts]

    def encode_queries(self, texts: Sequence[str]) -> list[npt.NDArray[np.float32]]:
        return [self._queries[t] for t in texts]


def _split(flat: npt.NDArray[Any], lengths: npt.NDArray[Any]) -> list[npt.NDArray[np.float32]]:
    ends = np.cumsum(lengths)
    return [flat[e - n : e].astype(np.float32) for e, n in zip(ends, lengths, strict=True)]


def query_word_dfs(index: Index, encoder: Any, texts: Sequence[str]) -> list[list[int | None]]:
    """For each query, per row of its vectors: the FTS5 document frequency of the word the
    token belongs to (a word's WordPiece pieces share it), -1 for punctuation, None for
    special tokens ([CLS], [SEP], markers, [MASK] expansions)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(real(encoder).model_dir) / "tokenizer.json"))
    con = sqlite3.connect(f"file:{index.path}?mode=ro", uri=True)
    cache: dict[str, int] = {}

    def df(word: str) -> int:
        if word not in cache:
            # The FTS5 tokenizer (Porter stemming) sees the word as it sees documents.
            cache[word] = con.execute(
                "SELECT count(*) FROM documents_fts WHERE documents_fts MATCH ?", (f'"{word}"',)
            ).fetchone()[0]
        return cache[word]

    out: list[list[int | None]] = []
    for model_input in real(encoder).model_inputs(texts, kind="query"):
        pieces = [tokenizer.id_to_token(int(t)) or "" for t in model_input.input_ids]
        words: list[str] = []
        word_of: list[int | None] = []
        for piece in pieces:
            if piece.startswith("[") or not piece:
                word_of.append(None)
            elif piece.startswith("##") and words:
                words[-1] += piece[2:]
                word_of.append(len(words) - 1)
            else:
                words.append(piece)
                word_of.append(len(words) - 1)
        out.append(
            [
                None if w is None else (df(words[w]) if any(c.isalnum() for c in words[w]) else -1)
                for w in word_of
            ]
        )
    con.close()
    return out


def idf_row_weights(
    dfs: Sequence[int | None], total: int, *, power: float, special: float
) -> npt.NDArray[np.float32]:
    """Weights of a query's rows: ``idf(word) ** power`` divided by the mean over its words
    (BM25's IDF), 0 for punctuation, ``special`` for special tokens."""
    raw = [
        None
        if d is None
        else 0.0
        if d < 0
        else math.log(1 + (total - d + 0.5) / (d + 0.5)) ** power
        for d in dfs
    ]
    words = [r for r in raw if r is not None]
    mean = float(np.mean(words)) if words and float(np.mean(words)) > 0 else 1.0
    return np.array([special if r is None else r / mean for r in raw], dtype=np.float32)


TokenPool = tuple[
    str,
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
    npt.NDArray[np.float64],
    npt.NDArray[np.int64],
]


def collect_per_token(
    index: Index, data: Dataset, vectors: list[npt.NDArray[np.float32]], positions: Sequence[int]
) -> list[TokenPool]:
    """As :func:`collect` (the prefilter's candidates from the unweighted query, k=100,
    joined with the FTS top 100), but each candidate's MaxSim kept per query token
    (``[candidates, query tokens]``, from the stored int8 codes) so that any weighting of the
    query's tokens is one matrix-vector product over the same pool."""
    from edge_colbert.quantize import dequantize_int8

    pools: list[TokenPool] = []
    store = index.store
    for i in positions:
        with store.snapshot():
            match = product_match(index, data.query_texts[i])
            lex_ids, lex_scores = (
                store.fts_search(match, 100) if match else (np.zeros(0, np.int64), np.zeros(0))
            )
            candidates = index.ranker.candidates(vectors[i], 100, None, False, hybrid=True)
            if candidates is None:
                raise SystemExit("--idf needs an index with centroids (no exhaustive scan)")
            pack = store.vectors(np.union1d(candidates, lex_ids).tolist())
        similarity = dequantize_int8(pack.codes) @ vectors[i].T
        per_token = np.maximum.reduceat(similarity, pack.offsets[:-1], axis=0)
        lexical = np.full(pack.rowids.size, np.nan)
        lexical[np.searchsorted(pack.rowids, lex_ids)] = lex_scores
        pools.append((data.query_ids[i], pack.rowids, per_token, lexical, candidates))
    return pools


def weighted_pools(
    pools: list[TokenPool], weights: dict[str, npt.NDArray[np.float32]]
) -> list[Pool]:
    """:func:`collect`'s pools with each query's MaxSim summed under its row weights."""
    return [
        (qid, ids, (per_token @ weights[qid]).astype(np.float32), lexical, candidates)
        for qid, ids, per_token, lexical, candidates in pools
    ]


def measure_idf(
    index: Index,
    encoder: Any,
    data: Dataset,
    vectors: list[npt.NDArray[np.float32]],
    ids_of: dict[int, str],
    base: Run,
    halves: tuple[Sequence[str], Sequence[str]],
    record: Callable[[str, Run], None],
) -> dict[str, Any]:
    """IDF query-token weights through the product's pools: MaxSim alone and every fusion
    weight, for each IDF power and special-token weight; the combination best on the tune
    half, and its held-out nDCG@10 minus ``base``'s (no weights) with a paired bootstrap
    interval."""
    tune_ids, held_ids = halves
    token_pools = collect_per_token(index, data, vectors, range(len(data.query_ids)))
    dfs = dict(zip(data.query_ids, query_word_dfs(index, encoder, data.query_texts), strict=True))
    rows = {qid: per_token.shape[1] for qid, _, per_token, _, _ in token_pools}
    if any(len(dfs[q]) != n for q, n in rows.items()):
        raise SystemExit("query rows and tokens disagree; --idf needs a model without expansion")
    total = len(index)
    best: tuple[float, str, Run] | None = None
    for power in IDF_POWERS:
        for special in IDF_SPECIALS:
            weights = {
                q: idf_row_weights(d, total, power=power, special=special) for q, d in dfs.items()
            }
            pools = weighted_pools(token_pools, weights)
            label = f"IDF^{power} specials {special}"
            record(f"MaxSim + {label}", fused_run(pools, ids_of, semantic_only=True))
            for weight in WEIGHTS:
                run = fused_run(pools, ids_of, weight=weight)
                record(f"hybrid + {label} w={weight}", run)
                tune_ndcg = scores(run, data, tune_ids)[0]
                if best is None or tune_ndcg > best[0]:
                    best = (tune_ndcg, f"hybrid + {label} w={weight}", run)
    if best is None:
        return {}
    _, name, chosen = best
    mean, low, high = paired_bootstrap(
        per_query_ndcg(chosen, data, held_ids), per_query_ndcg(base, data, held_ids)
    )
    print(
        f"chosen on the tune half: {name}; held-out nDCG@10 minus no weights: {mean:+.4f} "
        f"(paired bootstrap 95% interval {low:+.4f} to {high:+.4f})",
        flush=True,
    )
    return {"chosen": name, "held_minus_no_idf": {"mean": mean, "low": low, "high": high}}


def product_match(index: Index, text: str) -> str | None:
    """The FTS5 query a hybrid search of ``text`` sends (inside a snapshot): its terms
    without those of BM25 weight 0."""
    return _match(index, fts_terms(text))


def terms_without_stopwords(text: str) -> list[str]:
    """:func:`fts_terms` of ``text``'s words that are not stopwords (all of them when every
    word is one): the alternative ``--stopwords`` measures."""
    kept = [w for w in query_words(text) if not is_stopword(w)]
    return fts_terms(" ".join(kept) if kept else text)


def match_without_stopwords(index: Index, text: str) -> str | None:
    """:func:`product_match` of :func:`terms_without_stopwords`."""
    return _match(index, terms_without_stopwords(text))


def _match(index: Index, terms: list[str]) -> str | None:
    """The product's FTS5 query for these terms (None for none)."""
    return fts_match(index.ranker.informative(terms)) if terms else None


def keyword_run(pools: list[Pool], ids_of: dict[int, str]) -> Run:
    """BM25 alone from pooled queries: the FTS top 100 in BM25 order."""
    run: Run = {}
    for qid, ids, _, lexical, _ in pools:
        hits = np.flatnonzero(~np.isnan(lexical))
        order = hits[np.lexsort((ids[hits], -lexical[hits]))][:100]
        run[qid] = {ids_of[int(ids[j])]: float(lexical[j]) for j in order}
    return run


def measure_stopwords(
    index: Index,
    data: Dataset,
    vectors: list[npt.NDArray[np.float32]],
    ids_of: dict[int, str],
    pools: list[Pool],
    best_weight: float,
    halves: tuple[Sequence[str], Sequence[str]],
    record: Callable[[str, Run], None],
) -> dict[str, Any]:
    """Stopwords dropped from the FTS5 query (``fts_query_without_stopwords``) against the
    product's query: BM25 alone and the weight curve on pools collected both ways, the
    weight chosen on the tune half, the held-out difference from the product (weight
    ``best_weight``) with a paired bootstrap interval, and the CPU time of whole hybrid
    searches both ways (interleaved rounds over the held-out queries, k=10)."""
    import edge_colbert.index as index_module

    tune_ids, held_ids = halves
    positions = range(len(data.query_ids))
    dropped = collect(
        index, data, vectors, positions, exhaustive=False, match_of=match_without_stopwords
    )
    record("BM25, product query (from pools)", keyword_run(pools, ids_of))
    record("BM25, stopwords dropped", keyword_run(dropped, ids_of))
    best: tuple[float, float, Run] | None = None
    for weight in WEIGHTS:
        run = fused_run(dropped, ids_of, weight=weight)
        record(f"hybrid, stopwords dropped w={weight}", run)
        tune_ndcg = scores(run, data, tune_ids)[0]
        if best is None or tune_ndcg > best[0]:
            best = (tune_ndcg, weight, run)
    if best is None:
        return {}
    _, weight, chosen = best
    base = fused_run(pools, ids_of, weight=best_weight)
    mean, low, high = paired_bootstrap(
        per_query_ndcg(chosen, data, held_ids), per_query_ndcg(base, data, held_ids)
    )
    print(
        f"stopwords dropped (w={weight}, chosen on tune) minus the product (w={best_weight}), "
        f"held-out nDCG@10: {mean:+.4f} (paired bootstrap 95% interval {low:+.4f} to "
        f"{high:+.4f})",
        flush=True,
    )
    held = [data.query_ids.index(q) for q in held_ids]
    cpu: dict[str, list[float]] = {"product query": [], "stopwords dropped": []}
    makers = {"product query": product_match, "stopwords dropped": match_without_stopwords}
    term_makers = {"product query": fts_terms, "stopwords dropped": terms_without_stopwords}
    index.ranker.lexical_weight = best_weight
    try:
        for round_ in range(2):
            for name in sorted(cpu, reverse=round_ == 1):
                # The product's search, its FTS5 query swapped for this measurement only.
                index_module.fts_terms = term_makers[name]  # type: ignore[attr-defined,assignment]
                for i in held:
                    began = time.process_time()
                    index.search_vectors(vectors[i], 10, query=data.query_texts[i], mode="hybrid")
                    cpu[name].append(time.process_time() - began)
    finally:
        index_module.fts_terms = fts_terms  # type: ignore[attr-defined]
    latency = {name: latency_ms(times) for name, times in cpu.items()}
    # The FTS5 top 100 alone (what a hybrid search asks of SQLite), same queries.
    fts_cpu: dict[str, list[float]] = {name: [] for name in makers}
    for name, make in makers.items():
        for i in held:
            began = time.process_time()
            with index.store.snapshot():
                match = make(index, data.query_texts[i])
                if match is not None:
                    index.store.fts_search(match, 100)
            fts_cpu[name].append(time.process_time() - began)
    fts_latency = {name: latency_ms(times) for name, times in fts_cpu.items()}
    for name, figures in latency.items():
        print(
            f"hybrid search, {name:<17} CPU p50 {figures['p50']:.2f} ms  p95 "
            f"{figures['p95']:.2f} ms ({len(cpu[name])} searches, k=10); FTS5 top 100 alone "
            f"p50 {fts_latency[name]['p50']:.2f} ms",
            flush=True,
        )
    return {
        "chosen_weight": weight,
        "held_minus_product": {"mean": mean, "low": low, "high": high},
        "cpu_ms": latency,
        "fts_cpu_ms": fts_latency,
    }


def per_query_ndcg(run: Run, data: Dataset, qids: Sequence[str]) -> npt.NDArray[np.float64]:
    """nDCG@10 of each judged query of ``qids``, in order."""
    judged = [q for q in qids if any(g > 0 for g in data.qrels.get(q, {}).values())]
    return np.array([ndcg_at_k(run.get(q, {}), data.qrels[q], 10) for q in judged])


def paired_bootstrap(
    a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], *, rounds: int = 10_000
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired queries and its 95% bootstrap interval (seeded)."""
    diff = a - b
    draws = np.random.default_rng(0).integers(0, diff.size, size=(rounds, diff.size))
    means = diff[draws].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def real(encoder: Any) -> Encoder:
    """The bundled encoder under a :class:`CachedEncoder`."""
    found: Encoder = encoder._encoder if isinstance(encoder, CachedEncoder) else encoder
    return found


def build(db: Path, data: Dataset, encoder: Encoder) -> dict[str, float]:
    """Index the corpus; seconds spent and documents per second."""
    began = time.perf_counter()
    with Index(db, encoder=encoder) as index:
        for start in range(0, len(data.doc_ids), 512):
            index.add(data.doc_texts[start : start + 512], ids=data.doc_ids[start : start + 512])
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "docs_per_s": len(data.doc_ids) / seconds}


def _knob_setting(
    index: Index,
    data: Dataset,
    vectors: list[npt.NDArray[np.float32]],
    weight: float,
    record: Callable[[str, Run], None],
    name: str,
    timed: tuple[str, Callable[[int], object]],
) -> dict[str, float]:
    """One setting of a knob: ``timed[1](i)`` timed for every query (CPU), then the product's
    hybrid search (k=10) recorded as ``name``; the CPU figures of what was timed."""
    what, step = timed
    cpu: list[float] = []
    for i in range(len(data.query_ids)):
        began = time.process_time()
        step(i)
        cpu.append(time.process_time() - began)
    record(name, run_mode(index, data, vectors, mode="hybrid", weight=weight, k=10))
    figures = latency_ms(cpu)
    print(f"  {what} CPU p50 {figures['p50']:.2f} ms", flush=True)
    return figures


def measure_knobs(
    index: Index,
    data: Dataset,
    vectors: list[npt.NDArray[np.float32]],
    weight: float,
    record: Callable[[str, Run], None],
) -> dict[str, Any]:
    """The product's hybrid search (k=10, every query) at other settings of three speed
    knobs, one at a time: the share of the documents that makes a keyword term
    uninformative (``TermFrequencies``; 0.5 is lossless), the candidates kept after pruning,
    and the share of stage 1's candidates that hybrid search prunes. Printed:
    nDCG@10 on both halves and CPU p50 of the FTS5 query and of the whole search."""
    figures: dict[str, Any] = {}
    lossless = index.ranker.informative

    def keyword_query(i: int) -> None:
        with index.store.snapshot():
            match = product_match(index, data.query_texts[i])
            if match is not None:
                index.store.fts_search(match, 100)

    def hybrid_search(i: int) -> None:
        index.search_vectors(vectors[i], 10, query=data.query_texts[i], mode="hybrid")

    for share in (0.5, 0.25, 0.1, 0.05):

        def informative(terms: list[str], share: float = share) -> list[str]:
            return lossless(terms, share)

        index.ranker.informative = informative  # type: ignore[method-assign]
        figures[f"share {share}"] = _knob_setting(
            index,
            data,
            vectors,
            weight,
            record,
            f"hybrid, term share {share}",
            ("FTS5 top 100", keyword_query),
        )
    index.ranker.informative = lossless  # type: ignore[method-assign]
    keep_at_10 = default_keep(10)
    for keep in (keep_at_10 // 4, keep_at_10 // 2, keep_at_10):
        index.ranker.keep = keep
        figures[f"keep {keep}"] = _knob_setting(
            index,
            data,
            vectors,
            weight,
            record,
            f"hybrid, keep {keep}",
            ("hybrid search", hybrid_search),
        )
    index.ranker.keep = None
    import edge_colbert.prefilter as prefilter_module

    chosen = prefilter_module.HYBRID_CANDIDATE_SHARE
    for share in (1, 4, 8, 16):  # stage-1 candidates: 2,048 / share at SciFact's size
        prefilter_module.HYBRID_CANDIDATE_SHARE = share
        figures[f"stage-1 candidates / {share}"] = _knob_setting(
            index,
            data,
            vectors,
            weight,
            record,
            f"hybrid, stage-1 candidates / {share}",
            ("hybrid search", hybrid_search),
        )
    prefilter_module.HYBRID_CANDIDATE_SHARE = chosen
    return figures


def run_mode(
    index: Index,
    data: Dataset,
    vectors: list[npt.NDArray[np.float32]],
    *,
    mode: str,
    weight: float = 0.4,
    fusion: Fusion = "convex",
    exhaustive: bool = False,
    only: Sequence[int] | None = None,
    timings: list[float] | None = None,
    k: int = 100,
) -> Run:
    """The top ``k`` of every query (or of the query positions ``only``)."""
    index.ranker.lexical_weight, index.ranker.fusion = weight, fusion
    run: Run = {}
    for i in only if only is not None else range(len(data.query_ids)):
        began, began_cpu = time.perf_counter(), time.process_time()
        hits = index.search_vectors(
            vectors[i], k, query=data.query_texts[i], mode=mode, exhaustive=exhaustive
        )
        if timings is not None:
            timings.append(time.perf_counter() - began)
            # CPU time too: on a machine shared by many jobs, wall time mostly measures the
            # queue for a core.
            CPU_TIMES.setdefault(mode, []).append(time.process_time() - began_cpu)
        run[data.query_ids[i]] = {h.id: h.score for h in hits}
    return run


Pool = tuple[
    str,
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
    npt.NDArray[np.float64],
    npt.NDArray[np.int64],
]


def collect(
    index: Index,
    data: Dataset,
    vectors: list[npt.NDArray[np.float32]],
    positions: Sequence[int],
    *,
    exhaustive: bool,
    match_of: Callable[[Index, str], str | None] = product_match,
) -> list[Pool]:
    """Per query what a hybrid search scores: (query id, candidate rowids, their exact
    MaxSim, their BM25 or NaN, the prefilter's own candidates), through the Index's own
    steps (as Ranker.hybrid takes them, k=100); ``match_of`` makes the FTS5 query."""
    pools: list[Pool] = []
    store = index.store
    for i in positions:
        with store.snapshot():
            match = match_of(index, data.query_texts[i])
            lex_ids, lex_scores = (
                store.fts_search(match, 100) if match else (np.zeros(0, np.int64), np.zeros(0))
            )
            candidates = index.ranker.candidates(vectors[i], 100, None, exhaustive, hybrid=True)
            if candidates is None:
                sem_ids, sem_scores = index.ranker.scores_all(vectors[i])
                candidates = sem_ids
            else:
                sem_ids, sem_scores = index.ranker.scores(
                    vectors[i], np.union1d(candidates, lex_ids)
                )
        lexical = np.full(sem_ids.size, np.nan)
        where = np.searchsorted(sem_ids, lex_ids)
        lexical[where] = lex_scores
        pools.append((data.query_ids[i], sem_ids, sem_scores, lexical, candidates))
    return pools


def fused_run(
    pools: list[Pool],
    ids_of: dict[int, str],
    *,
    weight: float = 0.4,
    method: Fusion = "convex",
    semantic_only: bool = False,
) -> Run:
    """The top 100 of every pooled query: MaxSim over the prefilter's candidates alone, or
    the product's fusion over all pooled candidates."""
    run: Run = {}
    for qid, sem_ids, sem_scores, lexical, candidates in pools:
        if semantic_only:
            keep = np.isin(sem_ids, candidates)
            ids, ranked = sem_ids[keep], sem_scores[keep].astype(np.float64)
        else:
            ids, ranked = sem_ids, fuse(sem_scores, lexical, weight=weight, method=method)
        order = np.lexsort((ids, -ranked))[:100]
        run[qid] = {ids_of[int(ids[j])]: float(ranked[j]) for j in order}
    return run


def _top10(ranked: dict[str, float]) -> list[str]:
    return [d for d, _ in sorted(ranked.items(), key=lambda x: (-x[1], x[0]))[:10]]


def fts_layouts(texts: Sequence[str], tokens: int) -> dict[str, dict[str, float]]:
    """Bytes per stored token and insert time of the FTS5 layouts that SQLite 3.37 allows
    with compressed document text: contentless (chosen) and a table holding its own copy."""
    layouts = {
        "contentless": "content=''",
        "own copy of the text": "",
    }
    out: dict[str, dict[str, float]] = {}
    for name, option in layouts.items():
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "fts.db"
            con = sqlite3.connect(path, isolation_level=None)
            con.execute("PRAGMA page_size = 512")
            options = ", ".join(o for o in (option, f"tokenize='{FTS_ENGLISH}'") if o)
            con.execute(f"CREATE VIRTUAL TABLE f USING fts5(text, {options})")
            began = time.perf_counter()
            con.execute("BEGIN")
            con.executemany("INSERT INTO f(rowid, text) VALUES (?, ?)", enumerate(texts, 1))
            con.execute("COMMIT")
            seconds = time.perf_counter() - began
            con.execute("VACUUM")
            con.close()
            size = path.stat().st_size
        out[name] = {"bytes_per_token": size / tokens, "insert_s": seconds}
    return out


def dbstat_bytes(db: Path) -> dict[str, int]:
    """Bytes on disk per table (with its indexes), from SQLite's dbstat."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()
    return {str(name): int(size) for name, size in rows}


def as_version_2(path: Path) -> None:
    """Rewrite a current file into version 2's layout (as tests/test_migration.py does)."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("BEGIN")
    con.execute(
        "CREATE TABLE vectors_v2 (doc INTEGER PRIMARY KEY REFERENCES documents(rowid) "
        "ON DELETE CASCADE, codes BLOB NOT NULL, centroids BLOB)"
    )
    # Schema 4 added the centroids' buckets, schema 5 the chunked lists: undo both.
    con.execute(
        "CREATE TABLE centroids_v3 (id INTEGER PRIMARY KEY CHECK (id = 0), "
        "version INTEGER NOT NULL, vectors BLOB NOT NULL)"
    )
    con.execute("INSERT INTO centroids_v3 SELECT id, version, vectors FROM centroids")
    con.execute("DROP TABLE centroids")
    con.execute("ALTER TABLE centroids_v3 RENAME TO centroids")
    con.execute("CREATE TEMP TABLE doc_centroids (doc INTEGER PRIMARY KEY, ids BLOB)")
    con.executemany("INSERT INTO doc_centroids VALUES (?, ?)", centroid_lists.rows(con))
    con.execute(
        "INSERT INTO vectors_v2 SELECT v.doc, v.codes, c.ids FROM vectors v "
        "LEFT JOIN doc_centroids c ON c.doc = v.doc"
    )
    for table in ("vectors", "centroid_lists", "documents_fts"):
        con.execute(f"DROP TABLE {table}")
    con.execute("ALTER TABLE vectors_v2 RENAME TO vectors")
    con.execute("DELETE FROM meta WHERE key IN ('tokens', 'codec', 'pool_factor', 'fts_tokenizer')")
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.execute("COMMIT")
    con.execute("VACUUM")
    con.close()


def timed(action: Callable[[], Any]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=Path("/tmp/scifact-v3.db"))
    parser.add_argument("--data", type=Path, default=DEFAULT_SCIFACT)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--vectors", type=Path, help="pre-encoded token vectors (.npz)")
    parser.add_argument(
        "--parts",
        default="search,storage",
        help="comma-separated: search (quality, latency, overlap), storage (bytes, layouts, "
        "indexing cost, migration, CLI keyword time)",
    )
    parser.add_argument(
        "--exhaustive-queries",
        type=int,
        default=100,
        help="held-out queries scored exhaustively for the overlap figure (default 100)",
    )
    parser.add_argument(
        "--weight",
        type=float,
        help="skip the tuning passes and measure the product at this BM25 weight",
    )
    parser.add_argument(
        "--stopwords",
        action="store_true",
        help="also measure stopwords dropped from the FTS5 query (one more pass; weight tuned "
        "on the tune half, held-out difference with a paired bootstrap interval, hybrid CPU "
        "time both ways)",
    )
    parser.add_argument(
        "--knobs",
        action="store_true",
        help="also measure the keyword-term share and the kept candidates (hybrid search at "
        "each setting, both halves, CPU p50)",
    )
    parser.add_argument(
        "--idf",
        action="store_true",
        help="also measure IDF query-token weights (one more pass over the queries; tuned on "
        "the tune half, held-out difference with a paired bootstrap interval)",
    )
    args = parser.parse_args(argv)

    data = load_dataset(args.data)
    encoder: Any = Encoder()
    if args.vectors:
        encoder = CachedEncoder(encoder, data, args.vectors)
    result: dict[str, Any] = {"sqlite": sqlite3.sqlite_version}
    if args.rebuild and args.db.exists():
        args.db.unlink()
    if not args.db.exists():
        result["build"] = build(args.db, data, encoder)
        print(f"built {args.db}: {result['build']}", flush=True)

    tune, held = query_halves(len(data.query_ids))
    tune_ids = [data.query_ids[i] for i in tune]
    held_ids = [data.query_ids[i] for i in held]
    began = time.perf_counter()
    vectors = encoder.encode_queries(data.query_texts)
    print(f"encoded {len(vectors)} queries in {time.perf_counter() - began:.1f} s", flush=True)

    index = Index(args.db, encoder=encoder, readonly=True)
    info = index.info()
    result["index"] = info
    rows: dict[str, dict[str, float]] = {}

    def record(name: str, run: Run) -> None:
        # Runs of the held-out half alone (the slow exhaustive ones) have no tune figure.
        covers_tune = all(q in run for q in tune_ids)
        t_ndcg, t_rec = scores(run, data, tune_ids) if covers_tune else (math.nan, math.nan)
        held_here = [q for q in held_ids if q in run]  # a subset for the exhaustive runs
        h_ndcg, h_rec = scores(run, data, held_here)
        if len(held_here) < len(held_ids):
            name = f"{name} ({len(held_here)} held-out queries)"
        rows[name] = {
            "tune_ndcg": t_ndcg,
            "held_ndcg": h_ndcg,
            "tune_r100": t_rec,
            "held_r100": h_rec,
        }
        print(
            f"{name:<34} tune {t_ndcg:.4f}  held-out {h_ndcg:.4f}  "
            f"R@100 tune {t_rec:.4f} held-out {h_rec:.4f}",
            flush=True,
        )

    if "search" in args.parts:
        timings: dict[str, list[float]] = {"keyword": [], "semantic": [], "hybrid": []}
        if args.weight is None:
            record("BM25 (keyword)", run_mode(index, data, vectors, mode="keyword"))
        ids_of = dict(
            sqlite3.connect(args.db).execute("SELECT rowid, id FROM documents").fetchall()
        )
        pools: list[Pool] | None = None
        best_weight = args.weight
        if best_weight is None:
            # One pass per query collects what a hybrid search scores (the FTS top 100 and the
            # prefilter's candidates, all by exact MaxSim); every fusion and weight is then ranked
            # from it with the product's own `fuse`. A check below runs the real search_vectors at
            # the chosen weight and compares its top 10.
            pools = collect(index, data, vectors, range(len(data.query_ids)), exhaustive=False)
            record("MaxSim (semantic, prefilter)", fused_run(pools, ids_of, semantic_only=True))
            for weight in WEIGHTS:
                record(f"hybrid convex w={weight}", fused_run(pools, ids_of, weight=weight))
            record("hybrid RRF k=60", fused_run(pools, ids_of, method="rrf"))
            convex = {n: r for n, r in rows.items() if n.startswith("hybrid convex")}
            best_name = max(convex, key=lambda n: convex[n]["tune_ndcg"])
            best_weight = float(best_name.rsplit("=", 1)[1])
            result["rows"], result["best_weight"] = rows, best_weight
            print(f"weight chosen on the tune half: {best_weight}", flush=True)

            if args.stopwords:
                result["stopwords"] = measure_stopwords(
                    index, data, vectors, ids_of, pools, best_weight, (tune_ids, held_ids), record
                )
            if args.knobs:
                result["knobs"] = measure_knobs(index, data, vectors, best_weight, record)
            if args.idf:
                base = fused_run(pools, ids_of, weight=best_weight)
                result["idf"] = measure_idf(
                    index, encoder, data, vectors, ids_of, base, (tune_ids, held_ids), record
                )

        # The product itself at the chosen weight, k=10, on the held-out half: latency, and the
        # same top 10 as the offline fusion above.
        hybrid_run = run_mode(
            index,
            data,
            vectors,
            mode="hybrid",
            weight=best_weight,
            only=held,
            timings=timings["hybrid"],
            k=10,  # what a person asks for; the prefilter keeps fewer candidates than for 100
        )
        record(f"hybrid w={best_weight}, search_vectors k=10", hybrid_run)
        if pools is not None:
            offline = fused_run(pools, ids_of, weight=best_weight)
            same = np.mean([_top10(hybrid_run[q]) == _top10(offline[q]) for q in held_ids])
            result["product_matches_offline_top10"] = float(same)
            print(
                f"search_vectors(k=10) top 10 == offline fusion (k=100 pools) top 10 on "
                f"{100 * same:.1f}% of held-out queries (k=100 keeps more candidates than k=10; "
                "a difference is a document only one of them scored)",
                flush=True,
            )
        for mode in ("keyword", "semantic"):  # latency at k=10 beside hybrid's, same queries
            run_mode(index, data, vectors, mode=mode, only=held, timings=timings[mode], k=10)
        # Exhaustive scoring reads every token of the collection per query: on a subset of the
        # held-out half (the first --exhaustive-queries of its seeded order).
        subset = query_halves(len(data.query_ids), args.exhaustive_queries)[1]
        subset_ids = [data.query_ids[i] for i in subset]
        exhaustive_pools = collect(index, data, vectors, subset, exhaustive=True)
        record(
            "MaxSim (semantic, exhaustive)", fused_run(exhaustive_pools, ids_of, semantic_only=True)
        )
        exhaustive_run = fused_run(exhaustive_pools, ids_of, weight=best_weight)
        record(f"hybrid exhaustive w={best_weight}", exhaustive_run)
        overlap = [
            len(set(_top10(hybrid_run[q])) & set(_top10(exhaustive_run[q]))) / 10
            for q in subset_ids
        ]
        result["overlap_queries"] = len(subset_ids)
        result["overlap_at_10"] = float(np.mean(overlap))
        result["latency_ms"] = {name: latency_ms(t) for name, t in timings.items()}
        result["cpu_ms"] = {name: latency_ms(t) for name, t in CPU_TIMES.items()}
        print(
            "top-10 overlap, prefilter vs exhaustive hybrid (held-out): "
            f"{result['overlap_at_10']:.4f}",
            flush=True,
        )
        for name, figures in result["latency_ms"].items():
            cpu = result["cpu_ms"].get(name, {"p50": math.nan, "p95": math.nan})
            print(
                f"search {name:<8} k=10 wall p50 {figures['p50']:.2f} ms  "
                f"p95 {figures['p95']:.2f} ms; CPU p50 {cpu['p50']:.2f} ms  "
                f"p95 {cpu['p95']:.2f} ms (no query encoding)",
                flush=True,
            )
    index.close()

    if "storage" in args.parts:
        tokens = int(info["tokens"])
        tables = dbstat_bytes(args.db)
        fts = sum(v for k, v in tables.items() if k.startswith("documents_fts"))
        result["bytes_per_token"] = {
            "file": args.db.stat().st_size / tokens,
            "fts": fts / tokens,
            "without_fts": (args.db.stat().st_size - fts) / tokens,
        }
        print(
            "bytes per stored token: "
            + ", ".join(f"{k} {v:.2f}" for k, v in result["bytes_per_token"].items()),
            flush=True,
        )
        result["fts_layouts"] = fts_layouts(data.doc_texts, tokens)
        for name, figures in result["fts_layouts"].items():
            print(
                f"FTS layout {name:<22} {figures['bytes_per_token']:.2f} bytes/token, "
                f"insert {figures['insert_s']:.2f} s for {len(data.doc_texts)} docs",
                flush=True,
            )

        # Indexing cost of the full-text index: the FTS5 inserts of 512 documents, against the
        # whole write of the same documents by Index.add (quantize, post, store, FTS) and
        # against encoding them (the bulk of indexing), each timed alone in this run.
        sample_texts = data.doc_texts[:512]
        real_encoder = encoder._encoder if isinstance(encoder, CachedEncoder) else encoder
        with tempfile.TemporaryDirectory() as folder:
            cached = CachedEncoder(real_encoder, data, args.vectors) if args.vectors else None
            write_s = (
                # CachedEncoder answers what Index asks of an Encoder.
                timed(
                    lambda: Index(Path(folder) / "s.db", encoder=cast(Encoder, cached)).add(
                        sample_texts
                    )
                )
                if cached is not None
                else float("nan")
            )
            encode_s = timed(lambda: real_encoder.encode_documents(sample_texts[:128])) * 4
            con = sqlite3.connect(Path(folder) / "f.db", isolation_level=None)
            con.execute(
                f"CREATE VIRTUAL TABLE f USING fts5(text, content='', tokenize='{FTS_ENGLISH}')"
            )
            fts_s = timed(
                lambda: con.executemany(
                    "INSERT INTO f(text) VALUES (?)", [(t,) for t in sample_texts]
                )
            )
            con.close()
        result["indexing"] = {
            "fts_512_s": fts_s,
            "write_512_s": write_s,
            "encode_512_s": encode_s,
            "fts_share_of_indexing": fts_s / (encode_s + write_s),
        }
        print(
            f"indexing 512 docs: encoding {encode_s:.1f} s (128 timed, x4), Index.add's write "
            f"{write_s:.2f} s, of which the FTS5 inserts {fts_s:.3f} s = "
            f"{100 * fts_s / (encode_s + write_s):.2f}% of indexing time",
            flush=True,
        )

        # The same documents as schema 2 (before) and 3 (after), both vacuumed: bytes per
        # token; and the 2 -> 3 migration timed on that schema 2 copy.
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / "v2.db"
            shutil.copyfile(args.db, copy)
            as_version_2(copy)
            v2_bytes = copy.stat().st_size
            seconds = timed(lambda: Index(copy).close())
            v3_copy = Path(folder) / "v3.db"
            shutil.copyfile(args.db, v3_copy)
            con = sqlite3.connect(v3_copy)
            con.execute("VACUUM")
            con.close()
            v3_bytes = v3_copy.stat().st_size
        per_10k = seconds * 10_000 / len(data.doc_ids)
        result["migration"] = {"seconds": seconds, "per_10k_docs_s": per_10k}
        result["bytes_per_token_vacuumed"] = {
            "schema_2": v2_bytes / tokens,
            "schema_3": v3_bytes / tokens,
        }
        print(
            f"bytes per token, vacuumed: schema 2 {v2_bytes / tokens:.2f}, schema 3 "
            f"{v3_bytes / tokens:.2f}",
            flush=True,
        )
        print(
            f"migration 2 -> 3 of {len(data.doc_ids)} docs: {seconds:.2f} s "
            f"({per_10k:.2f} s per 10,000 documents)",
            flush=True,
        )

        query = data.query_texts[0]
        cli = [
            sys.executable,
            "-m",
            "edge_colbert",
            "search",
            str(args.db),
            query,
            "--mode",
            "keyword",
            "-q",
        ]
        cli_s = [
            timed(lambda: subprocess.run(cli, check=True, capture_output=True)) for _ in range(5)
        ]
        result["cli_keyword_s"] = float(np.median(cli_s))
        print(
            f"edge-colbert search --mode keyword, end to end: median "
            f"{result['cli_keyword_s']:.3f} s of 5",
            flush=True,
        )
    result["rows"] = rows
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
