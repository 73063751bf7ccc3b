"""Size against quality on scifact-dev: pool factor (x codec) -> bytes per token, nDCG@10,
Recall@100, search p50/p95, indexing docs/s; and what pooling costs next to encoding.

The SciFact abstracts are encoded once with the bundled model and cached (float16, outside
the repository); every configuration then builds its own index from those vectors through
the public ``Index.add`` (a stand-in encoder hands the cached vectors back, and the index
pools them as it would an encoder's output), with the real texts, so the file holds what a
real index holds (texts, full-text index, postings). Bytes per token is the file size over
the tokens *before* pooling. Queries are split in two halves with a fixed seed: the default
pool factor is chosen on the ``tune`` half, the table reports the ``report`` half.

    python benchmarks/size_quality.py [--pool-factors 1 2 3] [--cache /tmp/x.npz]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `edge_colbert` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common
from benchmarks.eval_scifact import evaluate, load_dataset
from benchmarks.prefilter_sweep import scifact_collection
from benchmarks.scaling import DEFAULT_CACHE, PrecomputedEncoder

SPLIT_SEED = 20241


def recall_at(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]], k: int) -> float:
    """Mean share of each judged query's relevant documents found in its top ``k``."""
    shares = []
    for qid, judged in qrels.items():
        relevant = {d for d, grade in judged.items() if grade > 0}
        if not relevant:
            continue
        ranked = sorted(run.get(qid, {}).items(), key=lambda item: -item[1])[:k]
        shares.append(len(relevant & {d for d, _ in ranked}) / len(relevant))
    return float(np.mean(shares)) if shares else float("nan")


def build_and_search(
    codec: str,
    pool_factor: int,
    docs: list[np.ndarray],
    queries: list[np.ndarray],
    work: Path,
    *,
    wanted: set[str],
    reuse: bool = False,
) -> dict[str, Any]:
    """Index every document with ``codec`` at ``pool_factor`` (or reuse
    ``work/{codec}-pool{N}.db``) and run the ``wanted`` queries (k = 100, semantic mode:
    MaxSim through the prefilter)."""
    from edge_colbert import Index

    data = load_dataset()
    encoder = PrecomputedEncoder()
    path = work / f"{codec}-pool{pool_factor}.db"
    seconds = float("nan")
    if not (reuse and path.exists()):
        path.unlink(missing_ok=True)
        began = time.perf_counter()
        with Index(path, encoder=encoder, pool_factor=pool_factor, codec=codec) as index:  # type: ignore[arg-type]
            for start in range(0, len(docs), 1000):
                texts = data.doc_texts[start : start + 1000]
                encoder.give(texts, docs[start : start + 1000])
                index.add(texts, ids=data.doc_ids[start : start + 1000])
            seconds = time.perf_counter() - began
    with Index(path, readonly=True) as index:
        info = index.info()
    raw_tokens = sum(d.shape[0] for d in docs)
    run: dict[str, dict[str, float]] = {}
    times = []
    with Index(path, readonly=True) as index:
        index.search_vectors(queries[0], k=100)  # warm-up
        for qid, q in zip(data.query_ids, queries, strict=True):
            if qid not in wanted:
                continue
            t = time.perf_counter()
            hits = index.search_vectors(q, k=100)
            times.append(time.perf_counter() - t)
            run[qid] = {h.id: h.score for h in hits}
    size = common.file_bytes(path)
    return {
        "codec": codec,
        "pool_factor": pool_factor,
        "stored_tokens": info["tokens"],
        "raw_tokens": raw_tokens,
        "bytes_per_token": size / raw_tokens,
        "file_bytes": size,
        "docs_per_s": len(docs) / seconds,
        "latency": common.latency_ms(times),
        "run": run,
    }


def pooling_cost(docs: list[np.ndarray], count: int) -> dict[str, float]:
    """Seconds per document: encoding (bundled model) and pooling by 2, in this process."""
    from edge_colbert.encoder import Encoder
    from edge_colbert.pooling import pool_documents

    data = load_dataset()
    encoder = Encoder()
    texts = data.doc_texts[:count]
    encoder.encode_documents(texts[:8])  # warm-up
    t = time.perf_counter()
    encoder.encode_documents(texts)
    encode = (time.perf_counter() - t) / count
    t = time.perf_counter()
    pool_documents(docs[:count], 2)
    pool = (time.perf_counter() - t) / count
    out = {"encode_ms_per_doc": encode * 1000, "pool2_ms_per_doc": pool * 1000}
    try:
        from scipy.cluster.hierarchy import fcluster, linkage
    except ImportError:
        return out
    t = time.perf_counter()
    for d in docs[:count]:
        rest = d[1:].astype(np.float64)
        if rest.shape[0] > 2:
            fcluster(linkage(rest, "ward"), -(-rest.shape[0] // 2), "maxclust")
    out["scipy_ward_ms_per_doc"] = (time.perf_counter() - t) / count * 1000
    return out


def main(argv: list[str] | None = None) -> int:
    """Build one index per pool factor, evaluate, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool-factors", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--codecs", nargs="+", default=["int8", "residual4", "residual2"], help="stored codecs"
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--cost-docs", type=int, default=200, help="documents timed for cost")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument(
        "--queries-per-half", type=int, default=0, help="evaluate this many of each half (0: all)"
    )
    parser.add_argument("--reuse", action="store_true", help="reuse work/CODEC-poolN.db if present")
    args = parser.parse_args(argv)
    docs, queries = scifact_collection(args.cache)
    work = args.work or Path(tempfile.mkdtemp(prefix="edge-colbert-size-"))
    work.mkdir(parents=True, exist_ok=True)
    data = load_dataset()
    judged = sorted(data.qrels)
    rng = np.random.default_rng(SPLIT_SEED)
    tune = set(rng.choice(judged, size=len(judged) // 2, replace=False).tolist())
    limit = args.queries_per_half or len(judged)
    halves = {
        "tune": {q: data.qrels[q] for q in [q for q in judged if q in tune][:limit]},
        "report": {q: data.qrels[q] for q in [q for q in judged if q not in tune][:limit]},
    }
    wanted = set(halves["tune"]) | set(halves["report"])
    print(
        f"{len(docs)} documents, {len(judged)} judged queries (split seed {SPLIT_SEED}), "
        f"{len(halves['tune'])} + {len(halves['report'])} evaluated"
    )
    every = {q: data.qrels[q] for q in judged if q in wanted}
    print(
        "| codec | pool factor | stored tokens | bytes / token | nDCG@10 (report half) "
        "| Recall@100 (report) | nDCG@10 (tune half) | nDCG@10 (all) "
        "| search p50 / p95 (ms) | docs/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for codec in args.codecs:
        for factor in args.pool_factors:
            r = build_and_search(
                codec, factor, docs, queries, work, wanted=wanted, reuse=args.reuse
            )
            share = r["stored_tokens"] / r["raw_tokens"]
            print(
                f"| {codec} | {factor} | {r['stored_tokens']:,} ({share:.0%}) "
                f"| {r['bytes_per_token']:.1f} | {evaluate(r['run'], halves['report']):.4f} "
                f"| {recall_at(r['run'], halves['report'], 100):.4f} "
                f"| {evaluate(r['run'], halves['tune']):.4f} "
                f"| {evaluate(r['run'], every):.4f} "
                f"| {r['latency']['p50']:.1f} / {r['latency']['p95']:.1f} "
                f"| {r['docs_per_s']:.0f} |",
                flush=True,
            )
    if args.cost_docs <= 0:
        return 0
    cost = pooling_cost(docs, args.cost_docs)
    print(
        "pooling cost per document (same process): "
        + ", ".join(f"{k} {v:.2f}" for k, v in cost.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
