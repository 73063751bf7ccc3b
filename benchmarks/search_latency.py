"""Search latency without query encoding, this tree against another checkout, in one run.

Each round runs one worker process per tree, alternately (this tree first on odd rounds,
the other first on even ones), so that a shared machine's drift falls on both alike. A worker
opens the index read-only, warms up on 30 queries, then times every query of the chosen set
in each mode: wall time and CPU time (every thread of the process) per search. Printed:
p50/p95 per tree and mode over all rounds, and the ratio of the p50s.

Run from the repository root (SciFact at ../shared/data/scifact-dev):

    git worktree add /tmp/previous <rev>
    OPENBLAS_NUM_THREADS=1 python benchmarks/search_latency.py --db /tmp/scifact.db \\
        --against /tmp/previous --vectors /tmp/scifact.npz

``--vectors`` takes the bundled model's query vectors encoded beforehand (``q_vecs``,
``q_lens`` in query file order); without it the queries are encoded once per worker.
The index file must be one both trees read (the same schema version), or give the other
tree its own copy of the collection with ``--against-db`` (e.g. before a schema change).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if "--worker" in sys.argv:
    # A worker measures the edge_colbert of the tree it is given: import that package before
    # anything below imports edge_colbert from this tree.
    sys.path.insert(0, sys.argv[sys.argv.index("--worker") + 1])
    import edge_colbert  # noqa: F401

    sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import latency_ms
from benchmarks.eval_scifact import DEFAULT_SCIFACT, encoded_queries, load_dataset, query_halves

MODES = ("hybrid", "semantic", "keyword")
WARMUP = 30


def worker(tree: Path, db: Path, data_dir: Path, vectors: Path | None, held: bool) -> None:
    """Time every query in every mode with the ``edge_colbert`` of ``tree`` (imported at
    start-up); print JSON."""
    import edge_colbert
    from edge_colbert.index import Index

    if Path(edge_colbert.__file__).resolve().parents[1] != tree.resolve():
        raise SystemExit(f"measuring {edge_colbert.__file__}, not the tree {tree}")

    data = load_dataset(data_dir)
    count = len(data.query_ids)
    positions = query_halves(count)[1] if held else list(range(count))
    index = Index(db, readonly=True)
    if vectors is not None:
        queries = encoded_queries(vectors)
    else:
        queries = index.encoder.encode_queries(data.query_texts)
    for i in positions[:WARMUP]:
        index.search_vectors(queries[i], 10, query=data.query_texts[i])
    times: dict[str, dict[str, list[float]]] = {}
    for mode in MODES:
        wall: list[float] = []
        cpu: list[float] = []
        for i in positions:
            began, began_cpu = time.perf_counter(), time.process_time()
            index.search_vectors(queries[i], 10, query=data.query_texts[i], mode=mode)
            wall.append(time.perf_counter() - began)
            cpu.append(time.process_time() - began_cpu)
        times[mode] = {"wall": wall, "cpu": cpu}
    index.close()
    print(json.dumps(times))


def run_worker(tree: Path, db: Path, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """One worker process for ``tree`` searching ``db``; its timings."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        str(tree),
        "--db",
        str(db),
        "--data",
        str(args.data),
    ]
    if args.vectors:
        command += ["--vectors", str(args.vectors)]
    if args.all_queries:
        command.append("--all-queries")
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    timings: dict[str, dict[str, list[float]]] = json.loads(done.stdout.strip().splitlines()[-1])
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument(
        "--against-db",
        type=Path,
        help="the index file the other checkout searches (default: --db), e.g. the same "
        "collection in the older schema that checkout reads",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_SCIFACT)
    parser.add_argument("--vectors", type=Path, help="pre-encoded query vectors (.npz)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--all-queries", action="store_true", help="all 809 queries, not the held-out half"
    )
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker(args.worker, args.db, args.data, args.vectors, not args.all_queries)
        return 0

    trees = {"this tree": Path(__file__).resolve().parents[1]}
    dbs = {"this tree": args.db}
    if args.against is not None:
        trees["against"] = args.against.resolve()
        dbs["against"] = args.against_db or args.db
    pooled: dict[str, dict[str, dict[str, list[float]]]] = {name: {} for name in trees}
    for round_ in range(args.rounds):
        names = list(trees) if round_ % 2 == 0 else list(reversed(trees))
        for name in names:
            for mode, figures in run_worker(trees[name], dbs[name], args).items():
                for kind, samples in figures.items():
                    pooled[name].setdefault(mode, {}).setdefault(kind, []).extend(samples)
    print(
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
        f"{args.rounds} rounds, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    result: dict[str, Any] = {}
    for mode in MODES:
        row = []
        for name, tree in trees.items():
            wall = latency_ms(pooled[name][mode]["wall"])
            cpu = latency_ms(pooled[name][mode]["cpu"])
            result.setdefault(name, {"tree": str(tree)})[mode] = {"wall": wall, "cpu": cpu}
            row.append(
                f"{name}: wall p50 {wall['p50']:6.2f} p95 {wall['p95']:6.2f}, "
                f"CPU p50 {cpu['p50']:6.2f} ms"
            )
        ratio = ""
        if "against" in result:
            here = result["this tree"][mode]["wall"]["p50"]
            ratio = f"  (wall p50 ratio {here / result['against'][mode]['wall']['p50']:.2f})"
        print(f"{mode:<8} " + " | ".join(row) + ratio, flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
