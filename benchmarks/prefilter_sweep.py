"""Sweep the prefilter's nprobe / keep: overlap@10 with exhaustive MaxSim and time per query.

The collection is synthetic but shaped like ColBERT token vectors (64-d, unit length):
- a vocabulary of term vectors, themselves grouped in semantic families, used with Zipf
  frequencies, so frequent terms crowd some regions of the sphere;
- documents about one or two topics (each topic favours its own terms), each token a term
  vector plus contextual noise, plus the [CLS] and [D] marker tokens every document shares;
- 32-token queries: [CLS], [Q], ~10 terms drawn from one document's topic (half from the
  document itself), the rest query-expansion [MASK] tokens near the query's mean.

Exhaustive MaxSim over all documents' int8 vectors is the reference; the pipeline is
candidates(nprobe, limit) -> prune(keep) -> exact int8 MaxSim over the survivors.

Run (from the repository root, with the package importable, e.g. ``PYTHONPATH=.``):
``python benchmarks/prefilter_sweep.py [--docs 5000] [--queries 100]``; on real token
vectors (SciFact, the bundled model): ``--scifact /tmp/scifact-vectors.npz`` (encoded once,
then read from that cache).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np

from edge_colbert.kmeans import kmeans, num_centroids
from edge_colbert.maxsim import maxsim_int8_packed
from edge_colbert.prefilter import DEFAULT_CANDIDATES, Prefilter
from edge_colbert.quantize import quantize_int8

DIM = 64


def _unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True), dtype=np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, int], norm: float) -> np.ndarray:
    """Gaussian noise whose rows have about the given Euclidean norm."""
    return rng.standard_normal(shape) * float(norm / np.sqrt(shape[1]))


def make_collection(
    n_docs: int, n_queries: int, seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Build ``n_docs`` documents and ``n_queries`` queries of token vectors."""
    rng = np.random.default_rng(seed)
    n_families, n_terms, n_topics = 400, 20000, 300
    families = _unit(rng.standard_normal((n_families, DIM)))
    term_family = rng.integers(0, n_families, n_terms)
    terms = _unit(families[term_family] + _noise(rng, (n_terms, DIM), 1.0))
    zipf = 1.0 / np.arange(1, n_terms + 1) ** 1.0
    zipf /= zipf.sum()
    topic_terms = [rng.choice(n_terms, 400, replace=False) for _ in range(n_topics)]
    specials = _unit(rng.standard_normal((3, DIM)))  # [CLS], [D], [Q]

    def tokens_of(topic: int, count: int) -> np.ndarray:
        # 60% topic terms (Zipf inside the topic), 40% general vocabulary (global Zipf).
        own = rng.random(count) < 0.6
        ids = rng.choice(n_terms, count, p=zipf)
        local = topic_terms[topic][np.minimum(rng.zipf(1.3, count) - 1, 399)]
        return np.where(own, local, ids)

    docs: list[np.ndarray] = []
    doc_terms: list[np.ndarray] = []
    doc_topics = rng.integers(0, n_topics, (n_docs, 2))
    for i in range(n_docs):
        length = int(np.clip(rng.normal(180, 60), 30, 300))
        split = length if rng.random() < 0.6 else length // 2
        ids = np.concatenate(
            [tokens_of(doc_topics[i, 0], split), tokens_of(doc_topics[i, 1], length - split)]
        )
        ctx = 0.25 * _unit(rng.standard_normal(DIM))  # the document's own context shift
        noise = _noise(rng, (length, DIM), 0.5)
        vecs = _unit(terms[ids] + noise + ctx)
        cls = _unit(specials[0] + 0.3 * ctx)
        docs.append(np.vstack([cls[None], specials[1][None], vecs]).astype(np.float32))
        doc_terms.append(ids)

    queries: list[np.ndarray] = []
    for _ in range(n_queries):
        target = int(rng.integers(n_docs))
        n_real = int(rng.integers(5, 14))
        from_doc = rng.choice(doc_terms[target], n_real // 2)
        from_topic = tokens_of(doc_topics[target, 0], n_real - n_real // 2)
        ids = np.concatenate([from_doc, from_topic])
        real = _unit(terms[ids] + _noise(rng, (n_real, DIM), 0.5))
        mean = real.mean(axis=0)
        n_mask = 32 - 2 - n_real
        masks = _unit(mean + _noise(rng, (n_mask, DIM), 0.3 * float(np.linalg.norm(mean))))
        queries.append(np.vstack([specials[0][None], specials[2][None], real, masks]))
    return docs, queries


def scifact_collection(cache: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """SciFact's documents and dev queries as token vectors of the bundled model.

    Encoded once (minutes on two cores) and cached as float16 in ``cache``, outside the
    repository (SciFact is for evaluation only and is never copied into it).
    """
    if not cache.exists():
        from benchmarks.eval_scifact import load_dataset
        from edge_colbert.encoder import Encoder

        data = load_dataset()
        encoder = Encoder()
        queries = encoder.encode_queries(data.query_texts)
        docs = encoder.encode_documents(data.doc_texts)
        np.savez(
            cache,
            doc_vecs=np.concatenate(docs).astype(np.float16),
            doc_lens=np.array([len(d) for d in docs]),
            q_vecs=np.concatenate(queries).astype(np.float16),
            q_lens=np.array([len(q) for q in queries]),
        )
    stored = np.load(cache)

    def split(vecs: np.ndarray, lens: np.ndarray) -> list[np.ndarray]:
        return np.split(vecs.astype(np.float32), np.cumsum(lens)[:-1])

    return split(stored["doc_vecs"], stored["doc_lens"]), split(stored["q_vecs"], stored["q_lens"])


def exact_top10(db: Path, queries: list[np.ndarray], cache: Path) -> list[list[int]]:
    """Exhaustive top-10 rowids of each query over an index file, cached in ``cache``.

    All queries are scored in one pass over the stored vectors (one float32 matrix product
    per pack against every query's tokens at once): at a million documents 80 queries
    take minutes, where the index's own exhaustive search takes 13 CPU-s each. The scores
    are the same unit-vector MaxSim (checked: the same top-10 as ``exhaustive=True``).
    """
    import json

    from edge_colbert.store import Store

    if cache.exists():
        stored = json.loads(cache.read_text())
        if len(stored) >= len(queries):
            return [list(map(int, top)) for top in stored[: len(queries)]]
    tokens = np.concatenate(queries).astype(np.float32)
    starts = np.cumsum([0] + [len(q) for q in queries[:-1]])
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_r = np.zeros((len(queries), 0), dtype=np.int64)
    store = Store(db, model=None, readonly=True)
    try:
        for pack in store.iter_vectors(max_tokens=16384):
            token_max = np.maximum.reduceat(pack.floats() @ tokens.T, pack.offsets[:-1], axis=0)
            scores = np.add.reduceat(token_max, starts, axis=1).T  # [queries, docs]
            all_s = np.concatenate([best_s, scores], axis=1)
            all_r = np.concatenate([best_r, np.broadcast_to(pack.rowids, scores.shape)], axis=1)
            top = np.argsort(-all_s, axis=1, kind="stable")[:, :10]
            best_s = np.take_along_axis(all_s, top, axis=1)
            best_r = np.take_along_axis(all_r, top, axis=1)
    finally:
        store.close()
    found = [row.tolist() for row in best_r]
    cache.write_text(json.dumps(found))
    return found


def sweep_index(args: argparse.Namespace) -> None:
    """Sweep nprobe x limit x keep on an existing index file (``--index``), with the
    replicated SciFact queries of ``benchmarks/scaling.py``: overlap@10 with exhaustive
    MaxSim and CPU ms per stage (stage 1, pruning, reading + exact MaxSim), separately
    for the tuning queries (``--tune-from`` on) and the held-out first ones, which are
    the ones ``scaling.py`` reports."""
    from benchmarks.scaling import DEFAULT_CACHE, PrecomputedEncoder, Replicated
    from edge_colbert import Index

    queries = Replicated(DEFAULT_CACHE, max_tokens=32).queries(args.queries)
    reference = exact_top10(args.index, queries, args.reference)
    index = Index(args.index, encoder=PrecomputedEncoder(), readonly=True)  # type: ignore[arg-type]
    pre = index._mirror.prefilter
    assert pre is not None, "the index has no centroids"
    print(f"{args.index}: {pre.num_documents} documents, {pre.num_postings} postings")
    index.search_vectors(queries[0], k=10)  # the centroid view is built by the first search
    print(
        f"{'nprobe':>6} {'limit':>6} {'keep':>6} {'part':>5} {'overlap':>7} "
        f"{'stage1':>7} {'prune':>7} {'exact':>7} {'total':>7} {'p50':>7}  (CPU ms)"
    )
    grid = [(n, lim, kp) for n in args.nprobe for lim in args.limit for kp in args.keep]
    for nprobe, limit, keep in grid:
        rows: list[tuple[float, float, float, float]] = []
        for q, ref in zip(queries, reference, strict=True):
            a = time.process_time()
            cand = pre.candidates(q, nprobe=nprobe, limit=limit)
            b = time.process_time()
            kept = pre.prune(q, cand, keep=keep)
            c = time.process_time()
            top = {rowid for rowid, _ in index.ranker.score(q, kept, 10)}
            d = time.process_time()
            rows.append((len(top & set(ref)) / 10, b - a, c - b, d - c))
        for part, sel in (("tune", slice(args.tune_from, None)), ("held", slice(args.tune_from))):
            m = np.asarray(rows[sel])
            if not m.size:
                continue
            total = m[:, 1:].sum(axis=1) * 1000
            print(
                f"{nprobe:>6} {limit:>6} {keep:>6} {part:>5} {m[:, 0].mean():>7.3f} "
                f"{m[:, 1].mean() * 1000:>7.1f} {m[:, 2].mean() * 1000:>7.1f} "
                f"{m[:, 3].mean() * 1000:>7.1f} {total.mean():>7.1f} {np.median(total):>7.1f}",
                flush=True,
            )
    index.close()


def main() -> None:
    """Build the collection, train centroids, post documents and sweep nprobe x limit x keep."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument(
        "--scifact",
        type=Path,
        default=None,
        help="use SciFact encoded by the bundled model, cached in this .npz (made if absent)",
    )
    parser.add_argument("--sample", type=int, default=200_000, help="k-means sample tokens")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument(
        "--limit", type=int, nargs="+", default=[DEFAULT_CANDIDATES], help="stage-1 candidates"
    )
    parser.add_argument(
        "--centroid-factor",
        type=float,
        default=1.0,
        help="multiply num_centroids() by this (power of two kept)",
    )
    parser.add_argument("--keep", type=int, nargs="+", default=[64, 128, 256, 512, 0])
    parser.add_argument(
        "--index", type=Path, help="sweep on this index file (benchmarks/scaling.py's) instead"
    )
    parser.add_argument(
        "--reference", type=Path, help="with --index: JSON cache of the exhaustive top-10s"
    )
    parser.add_argument(
        "--tune-from", type=int, default=30, help="with --index: queries before this are held out"
    )
    args = parser.parse_args()
    if args.index is not None:
        sweep_index(args)
        return

    t0 = time.perf_counter()
    if args.scifact is not None:
        docs, queries = scifact_collection(args.scifact)
        queries = queries[: args.queries]
    else:
        docs, queries = make_collection(args.docs, args.queries)
    packed = np.concatenate(docs)
    codes = quantize_int8(packed)
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([d.shape[0] for d in docs])
    print(
        f"collection: {len(docs)} docs, {packed.shape[0]} tokens ({time.perf_counter() - t0:.1f}s)"
    )

    t0 = time.perf_counter()
    k = int(num_centroids(packed.shape[0]) * args.centroid_factor)
    rng = np.random.default_rng(1)
    sample = packed[rng.choice(packed.shape[0], min(args.sample, packed.shape[0]), replace=False)]
    centroids = kmeans(sample, k, iterations=10, seed=0)
    pre = Prefilter(centroids)
    labels = pre.assign(packed)
    rowids = np.arange(len(docs), dtype=np.int64)
    pre.set_postings(rowids, [np.unique(labels[a:b]) for a, b in itertools.pairwise(offsets)])
    print(
        f"centroids: {k} trained on {sample.shape[0]} tokens, {pre.num_postings} postings "
        f"({pre.num_postings / len(docs):.0f}/doc) ({time.perf_counter() - t0:.1f}s)"
    )

    t0 = time.perf_counter()
    exact_top = []
    for q in queries:
        s = maxsim_int8_packed(q, codes, offsets)
        exact_top.append(set(np.argsort(-s, kind="stable")[:10].tolist()))
    exhaustive_ms = (time.perf_counter() - t0) / len(queries) * 1000
    print(f"exhaustive int8 MaxSim: {exhaustive_ms:.1f} ms/query\n")

    print(
        f"{'nprobe':>6} {'limit':>6} {'keep':>6} {'union':>6} {'cands':>6} {'overlap@10':>10} "
        f"{'min':>5} {'cand ms':>8} {'prune ms':>8} {'exact ms':>8} {'total ms':>8}"
    )
    grid = [(n, lim, kp) for n in args.nprobe for lim in args.limit for kp in args.keep]
    for nprobe, limit, keep in grid:
        overlaps, n_cand, n_union, t_c, t_p, t_e = [], [], [], 0.0, 0.0, 0.0
        for q, ref in zip(queries, exact_top, strict=True):
            a = time.perf_counter()
            cand = pre.candidates(q, nprobe=nprobe, limit=limit)
            b = time.perf_counter()
            kept = pre.prune(q, cand, keep=keep) if keep else cand
            c = time.perf_counter()
            sub_off = np.concatenate([[0], np.cumsum(offsets[kept + 1] - offsets[kept])])
            idx = np.concatenate([np.arange(offsets[r], offsets[r + 1]) for r in kept])
            # Gathering rows stands in for the store's read; it is not timed.
            sub_codes = codes[idx]
            c2 = time.perf_counter()
            s = maxsim_int8_packed(q, sub_codes, sub_off)
            top = set(kept[np.argsort(-s, kind="stable")[:10]].tolist())
            d = time.perf_counter()
            probes = np.unique(pre.probe(q, nprobe))
            n_union.append(np.unique(np.concatenate([pre.postings(int(p)) for p in probes])).size)
            overlaps.append(len(top & ref) / 10)
            n_cand.append(len(cand))
            t_c, t_p, t_e = t_c + b - a, t_p + c - b, t_e + d - c2
        n = len(queries)
        print(
            f"{nprobe:>6} {limit:>6} {keep or 'all':>6} {np.mean(n_union):>6.0f} "
            f"{np.mean(n_cand):>6.0f} {np.mean(overlaps):>10.3f} {min(overlaps):>5.1f} "
            f"{t_c / n * 1000:>8.2f} {t_p / n * 1000:>8.2f} {t_e / n * 1000:>8.2f} "
            f"{(t_c + t_p + t_e) / n * 1000:>8.2f}"
        )


if __name__ == "__main__":
    main()
