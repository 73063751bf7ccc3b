"""Beyond one machine: the index in Qdrant, and encoding with Ray, against one process.

Two parts, each printing its figures beside the one-machine reference from the same run:

``qdrant``: push a SciFact index (built with the bundled model when ``--db`` does not exist
yet; that takes a while) into Qdrant's local mode (qdrant-client, in process) and compare, for
100 dev queries drawn with a fixed seed, Qdrant's MaxSim top-10 with edge-colbert's
exhaustive top-10 (overlap), and the time per query of both. With ``qdrant-edge-py``
installed, the same vectors also go into an embedded Qdrant engine with int8 scalar
quantization, which local mode does not apply: top-10 overlap of int8 scoring alone, and
with Qdrant's float32 rescoring.

``ray``: encode N documents (SciFact abstracts, cycled when N exceeds the corpus) with
``edge_colbert.ray.encode`` in 2 actors (1 onnxruntime thread each) and with one
``Encoder(threads=2)`` in this process; docs/s of each and the cosine of the Ray vectors
against the single-process ones.

    python benchmarks/scale_out.py qdrant --db /tmp/scifact.db
    python benchmarks/scale_out.py ray --docs 10000
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Stopwatch, latency_ms, machine_description
from benchmarks.eval_scifact import DEFAULT_SCIFACT, load_dataset
from edge_colbert import Encoder, Index

logger = logging.getLogger("scale_out")


def _overlap(a: list[str], b: list[str]) -> float:
    return len(set(a) & set(b)) / max(len(b), 1)


def _build(db: Path, texts: list[str], ids: list[str], encoder: Encoder) -> None:
    with Index(db, encoder=encoder) as index:
        have = set(index)
        todo = [(i, t) for i, t in zip(ids, texts, strict=True) if i not in have]
        for start in range(0, len(todo), 256):
            part = todo[start : start + 256]
            index.add([t for _, t in part], ids=[i for i, _ in part])
            logger.info("built %d of %d", start + len(part), len(todo))


def _edge_shard(index: Index, dim: int, folder: str) -> Any:
    """An embedded Qdrant (qdrant-edge) shard with int8 scalar quantization over the index."""
    import qdrant_edge as qe

    config = qe.EdgeConfig(
        vectors={
            "colbert": qe.EdgeVectorParams(
                size=dim,
                distance=qe.Distance.Dot,
                multivector_config=qe.MultiVectorConfig(comparator=qe.MultiVectorComparator.MaxSim),
                quantization_config=qe.ScalarQuantizationConfig(
                    type=qe.ScalarType.Int8, quantile=1.0, always_ram=True
                ),
            )
        },
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1, default_segment_number=1),
        # No HNSW graph: every query scans the int8 copies (building a multi-vector graph took
        # minutes for 300 abstracts here), which is what makes the quantization measurable.
        hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),
    )
    shard = qe.EdgeShard.create(folder, config)
    ids = index.store.rowids().tolist()
    for start in range(0, len(ids), 256):
        chunk = ids[start : start + 256]
        pack = index.store.vectors(chunk)
        points = [
            qe.Point(
                id=int(rowid),
                vector={"colbert": pack.document(i).tolist()},  # any codec, decoded
                payload={},
            )
            for i, rowid in enumerate(pack.rowids.tolist())
        ]
        shard.update(qe.UpdateOperation.upsert_points(points))
    shard.optimize()
    return shard


def run_qdrant(args: argparse.Namespace) -> None:
    from qdrant_client import QdrantClient

    from edge_colbert.qdrant import VECTOR_NAME, push

    data = load_dataset(args.scifact)
    encoder = Encoder(threads=args.threads)
    if not args.db.exists() or args.build:
        _build(args.db, data.doc_texts, data.doc_ids, encoder)
    index = Index(args.db, encoder=encoder, readonly=True)
    judged = [q for q in data.query_ids if q in data.qrels]
    chosen = sorted(random.Random(args.seed).sample(range(len(judged)), args.queries))
    text_of = dict(zip(data.query_ids, data.query_texts, strict=True))
    queries = [text_of[judged[i]] for i in chosen]

    client = QdrantClient(":memory:")
    watch = Stopwatch()
    report = push(index, client, "scifact")
    push_wall, push_cpu = watch.stop()
    watch = Stopwatch()
    again = push(index, client, "scifact")
    again_wall, _ = watch.stop()

    overlaps: list[float] = []
    prefilter_overlaps: list[float] = []
    t_exhaustive: list[float] = []
    t_prefilter: list[float] = []
    t_qdrant: list[float] = []
    vectors_of: list[np.ndarray[Any, Any]] = []
    exact_top: list[list[str]] = []
    for query in queries:
        vectors = encoder.encode_queries([query])[0]
        vectors_of.append(vectors)
        start = time.perf_counter()
        want = [h.id for h in index.search_vectors(vectors, 10, exhaustive=True)]
        t_exhaustive.append(time.perf_counter() - start)
        start = time.perf_counter()
        fast = [h.id for h in index.search_vectors(vectors, 10)]
        t_prefilter.append(time.perf_counter() - start)
        start = time.perf_counter()
        response = client.query_points(
            "scifact", query=vectors.tolist(), using=VECTOR_NAME, limit=10, with_payload=["id"]
        )
        t_qdrant.append(time.perf_counter() - start)
        got = [str((p.payload or {})["id"]) for p in response.points]
        overlaps.append(_overlap(got, want))
        prefilter_overlaps.append(_overlap(fast, want))
        exact_top.append(want)

    info = index.info()
    print(f"machine: {machine_description(args.threads)}")
    print(
        f"index: {info['documents']} documents, {info['tokens']} tokens, "
        f"{info['size_bytes'] / 1e6:.1f} MB; {len(queries)} dev queries (seed {args.seed})"
    )
    print(
        f"push (qdrant-client local mode, float32): {report.upserted} points in "
        f"{push_wall:.1f} s wall / {push_cpu:.1f} s CPU "
        f"({report.upserted / push_wall:.0f} docs/s); second push with nothing changed: "
        f"{again.upserted} sent, {again.unchanged} unchanged in {again_wall:.2f} s"
    )
    rows = [
        ("edge-colbert exhaustive MaxSim", 1.0, latency_ms(t_exhaustive)),
        (
            "edge-colbert prefilter (default)",
            float(np.mean(prefilter_overlaps)),
            latency_ms(t_prefilter),
        ),
        ("Qdrant local mode, float32", float(np.mean(overlaps)), latency_ms(t_qdrant)),
    ]
    if args.edge:
        try:
            import qdrant_edge as qe
        except ImportError:
            logger.warning("qdrant-edge-py is not installed: pip install qdrant-edge-py")
        else:
            id_of = {
                d.rowid: d.id for d in index.store.documents(index.store.rowids().tolist()).values()
            }
            with tempfile.TemporaryDirectory() as folder:
                watch = Stopwatch()
                shard = _edge_shard(index, info["dim"], folder)
                edge_wall, _ = watch.stop()
                print(f"qdrant-edge shard with int8 scalar quantization built in {edge_wall:.1f} s")
                settings = [
                    ("qdrant-edge float32, exact", qe.SearchParams(exact=True)),
                    (
                        "qdrant-edge int8 scan only (no rescore)",
                        qe.SearchParams(quantization=qe.QuantizationSearchParams(rescore=False)),
                    ),
                    (
                        "qdrant-edge int8 scan + float32 rescore",
                        qe.SearchParams(quantization=qe.QuantizationSearchParams(rescore=True)),
                    ),
                ]
                for name, params in settings:
                    found: list[float] = []
                    times: list[float] = []
                    for vectors, want in zip(vectors_of, exact_top, strict=True):
                        request = qe.QueryRequest(
                            limit=10,
                            query=qe.Query.Nearest(vectors.tolist(), using="colbert"),
                            params=params,
                            with_payload=False,
                        )
                        start = time.perf_counter()
                        points = shard.query(request)
                        times.append(time.perf_counter() - start)
                        found.append(_overlap([id_of[int(p.id)] for p in points], want))
                    rows.append((name, float(np.mean(found)), latency_ms(times)))
                shard.close()
    print()
    print("| search (query already encoded) | top-10 overlap with exhaustive | p50 ms | p95 ms |")
    print("|---|---|---|---|")
    for name, overlap, ms in rows:
        print(f"| {name} | {overlap:.3f} | {ms['p50']:.1f} | {ms['p95']:.1f} |")


def _lowest_cosine(a: list[np.ndarray[Any, Any]], b: list[np.ndarray[Any, Any]]) -> float:
    """The lowest cosine between matching token vectors of two encodings (NaN: shapes differ)."""
    worst = 1.0
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape:
            return float("nan")
        cosines = np.sum(x * y, axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
        worst = min(worst, float(cosines.min()))
    return worst


def run_ray(args: argparse.Namespace) -> None:
    import ray

    from edge_colbert.ray import encode, row_vectors

    load_before = os.getloadavg()
    data = load_dataset(args.scifact)
    texts = [data.doc_texts[i % len(data.doc_texts)] for i in range(args.docs)]
    rows = [{"doc": i, "text": t} for i, t in enumerate(texts)]

    # The bundled graph quantizes activations per batch (dynamic int8), so a text's vectors
    # depend on the texts that share its batch: both paths get the same batches of --batch
    # texts (Ray: one block per batch), and the mixed-batch difference is shown apart.
    batch = args.batch
    encoder = Encoder(threads=2)
    watch = Stopwatch()
    single: list[np.ndarray[Any, Any]] = []
    for start in range(0, len(texts), batch):
        single.extend(encoder.encode_documents(texts[start : start + batch]))
    single_wall, single_cpu = watch.stop()
    regrouped = encoder.encode_documents(texts[: 4 * batch])  # the encoder's own batching

    watch = Stopwatch()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    init_wall, _ = watch.stop()
    watch = Stopwatch()
    encoded = encode(
        ray.data.from_items(rows, override_num_blocks=-(-len(rows) // batch)),
        encoder.model_dir,
        concurrency=2,
        threads=1,
        batch_size=batch,
        vectors="float32",
    )
    got = {int(row["doc"]): row_vectors(row) for row in encoded.iter_rows()}
    ray_wall, _ = watch.stop()
    ray.shutdown()

    worst = _lowest_cosine([got[i] for i in range(len(single))], single)
    mixed = _lowest_cosine(regrouped, single[: len(regrouped)])
    print(f"machine: {machine_description(2)}")
    print(f"load average at the start: {[round(x, 2) for x in load_before]} (end: in machine)")
    print(f"{args.docs} SciFact abstracts (cycled), bundled model, 2 cores")
    print()
    print("| path | wall s | docs/s | ratio |")
    print("|---|---|---|---|")
    print(
        f"| one process, Encoder(threads=2) | {single_wall:.1f} (CPU {single_cpu:.1f}) | "
        f"{args.docs / single_wall:.1f} | 1.00 |"
    )
    print(
        f"| Ray Data, 2 actors x 1 thread (ray.init {init_wall:.1f} s not counted) | "
        f"{ray_wall:.1f} | {args.docs / ray_wall:.1f} | {single_wall / ray_wall:.2f} |"
    )
    print(f"\nlowest token cosine, Ray vs one process (same batches of {batch}): {worst:.6f}")
    print(
        f"lowest token cosine, one process, batches of {batch} vs the encoder's own batching "
        f"of {len(regrouped)} texts: {mixed:.6f}"
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scifact", type=Path, default=DEFAULT_SCIFACT)
    parts = parser.add_subparsers(dest="part", required=True)
    qdrant = parts.add_parser("qdrant")
    qdrant.add_argument("--db", type=Path, default=Path(tempfile.gettempdir()) / "scifact.db")
    qdrant.add_argument("--build", action="store_true", help="add missing documents to --db")
    qdrant.add_argument("--queries", type=int, default=100)
    qdrant.add_argument("--seed", type=int, default=13)
    qdrant.add_argument("--threads", type=int, default=2)
    qdrant.add_argument("--no-edge", dest="edge", action="store_false")
    ray_part = parts.add_parser("ray")
    ray_part.add_argument("--docs", type=int, default=10_000)
    ray_part.add_argument("--batch", type=int, default=50, help="texts per encoder call")
    args = parser.parse_args()
    if args.part == "qdrant":
        run_qdrant(args)
    else:
        run_ray(args)


if __name__ == "__main__":
    main()
