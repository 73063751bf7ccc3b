"""How many stage-1 candidates a semantic (or hybrid) search prunes on scifact-dev: quality
and time per count, on both halves of the queries, in one process.

For each count the library's ``search_settings`` is patched to hand that many stage-1
candidates to pruning (everything else as shipped) and every query of both halves is
searched with ``search_vectors`` (k=10, no query encoding): nDCG@10, the top-10 overlap with
the exhaustive search of the same mode, and the wall p50. The counts are measured in turn,
twice, so that the machine's drift falls on each. Run from the repository root:

    OPENBLAS_NUM_THREADS=1 python benchmarks/stage1_candidates.py --db SCIFACT.db \\
        --vectors scifact.npz [--counts 2048 1024 512] [--mode semantic]

``--vectors`` holds the bundled model's query vectors (``q_vecs``/``q_lens``, query file
order); the index is one the bundled model wrote over scifact-dev's corpus.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edge_colbert.ranking as ranking
from benchmarks.eval_scifact import (
    DEFAULT_SCIFACT,
    encoded_queries,
    load_dataset,
    ndcg_at_k,
    query_halves,
)
from edge_colbert.index import Index
from edge_colbert.prefilter import SearchSettings, search_settings


def main(argv: list[str] | None = None) -> int:
    """Print, per stage-1 count and half: nDCG@10, overlap with exhaustive, wall p50."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--vectors", type=Path, required=True, help="pre-encoded queries")
    parser.add_argument("--data", type=Path, default=DEFAULT_SCIFACT)
    parser.add_argument("--counts", type=int, nargs="+", default=[2048, 1024, 512])
    parser.add_argument("--mode", choices=("semantic", "hybrid"), default="semantic")
    args = parser.parse_args(argv)

    data = load_dataset(args.data)
    queries = encoded_queries(args.vectors)
    halves = dict(zip(("tune", "held-out"), query_halves(len(queries)), strict=True))
    hybrid = args.mode == "hybrid"
    index = Index(args.db, readonly=True)

    def search(i: int, exhaustive: bool = False) -> list[str]:
        text = data.query_texts[i]
        hits = index.search_vectors(
            queries[i], 10, query=text, mode=args.mode, exhaustive=exhaustive
        )
        return [hit.id for hit in hits]

    exact = {i: set(search(i, exhaustive=True)) for part in halves.values() for i in part}
    # The search path's own binding of search_settings is the one to patch.
    module = vars(ranking)
    shipped: Callable[[int, int], SearchSettings] = module["search_settings"]
    print(f"{args.db}: {args.mode} search, k=10, shipped: {search_settings(len(index), 10)}")
    for round_ in range(2):
        for count in args.counts:

            def patched(documents: int, k: int, count: int = count) -> SearchSettings:
                settings = shipped(documents, k)
                field = "hybrid_candidates" if hybrid else "candidates"
                return dataclasses.replace(settings, **{field: count})

            module["search_settings"] = patched
            for name, part in halves.items():
                walls, ndcgs, overlaps = [], [], []
                for i in part:
                    began = time.perf_counter()
                    found = search(i)
                    walls.append(time.perf_counter() - began)
                    overlaps.append(len(set(found) & exact[i]) / 10)
                    judged = data.qrels.get(data.query_ids[i], {})
                    if any(grade > 0 for grade in judged.values()):
                        ranked = {doc: 1.0 / (rank + 1) for rank, doc in enumerate(found)}
                        ndcgs.append(ndcg_at_k(ranked, judged, 10))
                print(
                    f"round {round_ + 1}  {count:>5} candidates  {name:<8}  nDCG@10 "
                    f"{np.mean(ndcgs):.4f}  overlap {np.mean(overlaps):.3f}  wall p50 "
                    f"{np.median(walls) * 1000:5.1f} ms",
                    flush=True,
                )
            module["search_settings"] = shipped
    index.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
