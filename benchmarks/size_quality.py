"""Size against quality on scifact-dev: codec x pool factor -> bytes per encoded token,
nDCG@10 on both halves (through the prefilter and exhaustive), Recall@100, search p50/p95,
indexing docs/s; what pooling costs next to encoding; and where a file's bytes go.

The SciFact abstracts are encoded once with the bundled model and cached (float16, outside
the repository). Every configuration is then made one of two ways (``--build``):

- ``add``: its own index built from those vectors through the public ``Index.add`` in
  calls of 1,000 documents (a stand-in encoder hands the cached vectors back, and the
  index pools them as it would an encoder's output), with the real texts, so the file holds
  what a real index holds (texts, full-text index, postings); a residual file's first
  training comes after the first call and a retraining re-codes every document later;
- ``compact``: a copy of ``--from-db`` (an int8, pool factor 1 SciFact index of the same
  vectors, e.g. the one ``benchmarks/hybrid.py --vectors`` builds) converted by
  ``edge-colbert compact --codec C --pool-factor N`` (one training, codes made once).

Queries: the 809 dev queries split in halves exactly as ``benchmarks/hybrid.py`` does (its
seeded shuffle), so every row, both builds and hybrid.py's figures share the same *tune*
and *held-out* queries. nDCG@10 through the prefilter is ``search_vectors(k=100)``;
exhaustive scores every document with the product's own MaxSim functions on the file's
decoded vectors (what ``search_vectors(..., exhaustive=True)`` computes, decoded once per
file instead of once per query). Bytes per token is the file size over the tokens *before*
pooling.

    python benchmarks/size_quality.py [--codecs int8 residual2] [--pool-factors 1 2 3]
        [--build add|compact --from-db FILE] [--cache /tmp/x.npz] [--parts FILE]
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `edge_colbert` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common
from benchmarks.eval_scifact import (
    SPLIT_SEED,
    Dataset,
    load_dataset,
    ndcg_at_k,
    query_halves,
    recall_at_k,
)
from benchmarks.prefilter_sweep import scifact_collection
from benchmarks.scaling import DEFAULT_CACHE, PrecomputedEncoder

Run = dict[str, dict[str, float]]


def halves(data: Dataset, per_half: int) -> tuple[list[str], list[str]]:
    """The tune and held-out query ids of the shared split (:func:`query_halves`)."""
    tune, held = query_halves(len(data.query_ids), per_half)
    return [data.query_ids[i] for i in tune], [data.query_ids[i] for i in held]


def mean_ndcg(run: Run, data: Dataset, qids: list[str]) -> float:
    """Mean nDCG@10 over the judged ``qids``."""
    judged = [q for q in qids if any(g > 0 for g in data.qrels.get(q, {}).values())]
    return float(np.mean([ndcg_at_k(run.get(q, {}), data.qrels[q], 10) for q in judged]))


def recall_at(run: Run, data: Dataset, qids: list[str], k: int = 100) -> float:
    """Mean Recall@k over the ``qids`` that have a relevant document."""
    judged = [q for q in qids if any(g > 0 for g in data.qrels.get(q, {}).values())]
    shares = [recall_at_k(run.get(q, {}), data.qrels[q], k) for q in judged]
    return float(np.mean(shares)) if shares else float("nan")


def build_add(
    codec: str, pool_factor: int, docs: list[np.ndarray], data: Dataset, path: Path
) -> float:
    """Index every document through ``Index.add`` (calls of 1,000); seconds taken."""
    from edge_colbert import Index

    encoder = PrecomputedEncoder()
    began = time.perf_counter()
    with Index(path, encoder=encoder, pool_factor=pool_factor, codec=codec) as index:  # type: ignore[arg-type]
        for start in range(0, len(docs), 1000):
            texts = data.doc_texts[start : start + 1000]
            encoder.give(texts, docs[start : start + 1000])
            index.add(texts, ids=data.doc_ids[start : start + 1000])
    return time.perf_counter() - began


def build_compact(codec: str, pool_factor: int, source: Path, path: Path) -> float:
    """Copy ``source`` to ``path`` and compact it to ``codec``/``pool_factor``; seconds."""
    from edge_colbert.compact import compact_index

    shutil.copyfile(source, path)
    began = time.perf_counter()
    compact_index(path, codec=codec, pool_factor=pool_factor)
    return time.perf_counter() - began


def search_both(
    path: Path, data: Dataset, queries: list[np.ndarray], wanted: list[str]
) -> dict[str, Any]:
    """Runs (k = 100) through the prefilter (timed) and exhaustive, for the ``wanted``."""
    from edge_colbert import Index
    from edge_colbert.maxsim import maxsim_float_packed, maxsim_int8_packed

    position = {q: i for i, q in enumerate(data.query_ids)}
    prefilter: Run = {}
    exhaustive: Run = {}
    times = []
    with Index(path, readonly=True) as index:
        info = index.info()
        index.search_vectors(queries[0], k=100)  # warm-up
        for qid in wanted:
            t = time.perf_counter()
            hits = index.search_vectors(queries[position[qid]], k=100)
            times.append(time.perf_counter() - t)
            prefilter[qid] = {str(h.id): h.score for h in hits}
        packs = list(index.store.iter_vectors(max_tokens=1 << 40))
    names = dict(sqlite3.connect(path).execute("SELECT rowid, id FROM documents").fetchall())
    pack = packs[0]
    ids = [names[int(r)] for r in pack.rowids]
    decoded = None if pack.codec is None else pack.floats()
    for qid in wanted:
        q = queries[position[qid]]
        if decoded is None:
            scores = maxsim_int8_packed(q, pack.codes, pack.offsets)
        else:
            scores = maxsim_float_packed(q, decoded, pack.offsets)
        top = np.argsort(-scores, kind="stable")[:100]
        exhaustive[qid] = {ids[j]: float(scores[j]) for j in top}
    return {
        "info": info,
        "prefilter": prefilter,
        "exhaustive": exhaustive,
        "latency": common.latency_ms(times),
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


def _table_bytes(path: Path) -> dict[str, int]:
    """Bytes on disk per table (dbstat)."""
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    finally:
        con.close()
    return {str(name): int(size) for name, size in rows}


def _zdict(texts: list[bytes], size: int = 32 << 10) -> bytes:
    """A zlib preset dictionary from a sample of texts: the most frequent words joined, the
    most frequent last (zlib finds the end of the dictionary at the shortest distances)."""
    counts: dict[bytes, int] = {}
    for raw in texts:
        for word in raw.split():
            if len(word) > 3:
                counts[word] = counts.get(word, 0) + 1
    ranked = sorted(counts, key=lambda w: (counts[w] * len(w), w))
    out = bytearray()
    for word in reversed(ranked):
        if len(out) + len(word) + 1 > size:
            break
        out[:0] = word + b" "
    return bytes(out)


def size_options(path: Path, raw_tokens: int, data: Dataset, *, per_half: int) -> None:
    """What three layout changes would save on ``path`` (a copy is changed, never it):
    per-document centroid lists derived from the residual codes (the table dropped),
    the stored texts compressed with a zlib preset dictionary, and FTS5 ``detail=column``
    (with its BM25 nDCG@10 beside ``detail=full``'s). No schema change: an experiment."""
    from edge_colbert import Index
    from edge_colbert.lexical import fts_query
    from edge_colbert.records import decode_text
    from edge_colbert.schema import fts_statement
    from edge_colbert.training import unique_per_document_flat

    before = _table_bytes(path)
    total = common.file_bytes(path)
    print(f"{path}: {total / raw_tokens:.2f} bytes per encoded token; by table:")
    for name, size in sorted(before.items(), key=lambda r: -r[1]):
        print(f"  {name:<28} {size / raw_tokens:6.2f}")

    # 1. Centroid lists from the codes: the same lists? what does deriving them cost?
    with Index(path, readonly=True) as index:
        store = index.store
        t = time.process_time()
        _rowids, lengths, flat = store.doc_centroids_flat(store.meta()["centroid_ids"])
        read_cpu = time.process_time() - t
        t = time.process_time()
        parts = []
        stored_tokens = 0
        for pack in store.iter_vectors():
            stored_tokens += int(pack.codes.shape[0])
            if pack.codec is None:
                print("  (not a residual file: centroid lists cannot come from the codes)")
                break
            labels = pack.codec.labels(pack.codes.view(np.uint8))
            parts.append(
                unique_per_document_flat(labels, pack.offsets, pack.codec.centroids.shape[0])
            )
        derive_cpu = time.process_time() - t
    if parts:
        same = np.array_equal(np.concatenate([p[1] for p in parts]), flat) and np.array_equal(
            np.concatenate([p[0] for p in parts]), lengths
        )
        widest = int(lengths.max()) if lengths.size else 0
        print(
            f"  centroid lists derived from the codes: identical to the stored ones: {same}; "
            f"saves {before.get('centroid_lists', 0) / raw_tokens:.2f} B/token; reading them "
            f"{read_cpu * 1000:.0f} ms CPU, deriving from the codes {derive_cpu * 1000:.0f} ms"
        )
        # The other way round: keep the lists, and give each token a 1-byte position in its
        # document's list instead of a 2-byte centroid id (documents of <= 256 centroids).
        print(
            f"  or a 1-byte position in the document's list instead of each token's 2-byte "
            f"id: saves {stored_tokens / raw_tokens:.2f} B/token of payload; documents "
            f"with more than 256 centroids: {int((lengths > 256).sum())} of {lengths.size} "
            f"(widest {widest})"
        )

    with tempfile.TemporaryDirectory() as folder:
        # 2. zlib preset dictionary for the texts, on a copy.
        copy = Path(folder) / "copy.db"
        shutil.copyfile(path, copy)
        con = sqlite3.connect(copy, isolation_level=None)
        rows = con.execute("SELECT rowid, text FROM documents").fetchall()
        texts = [decode_text(v).encode("utf-8") for _, v in rows]
        sample = random.Random(0).sample(texts, min(500, len(texts)))
        zdict = _zdict(sample)
        stored = 0
        new_rows = []
        for (rowid, _), raw in zip(rows, texts, strict=True):
            packer = zlib.compressobj(6, zdict=zdict)
            packed = packer.compress(raw) + packer.flush()
            inflater = zlib.decompressobj(zdict=zdict)
            if inflater.decompress(packed) != raw:
                raise SystemExit(f"row {rowid}: the preset-dictionary text does not round-trip")
            old = zlib.compress(raw, 6)
            stored += len(old) if len(old) < len(raw) else len(raw)
            new_rows.append((packed if len(packed) < len(raw) else raw.decode(), rowid))
        con.execute("BEGIN")
        con.executemany("UPDATE documents SET text = ? WHERE rowid = ?", new_rows)
        # The dictionary is stored once in the file (counted in the sizes below).
        con.execute("INSERT INTO meta(key, value) VALUES ('text_zdict', ?)", (zdict,))
        con.execute("COMMIT")
        # 3. FTS5 detail=column, on the same copy.
        statement = fts_statement(store_tokenizer(con))
        con.execute("VACUUM")
        full_fts = Path(folder) / "full.db"  # the dictionary alone, detail=full
        shutil.copyfile(copy, full_fts)
        con.execute("DROP TABLE documents_fts")
        con.execute(statement.replace("content=''", "content='', detail=column"))
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO documents_fts(rowid, text) VALUES (?, ?)",
            [(rowid, raw.decode()) for (rowid, _), raw in zip(rows, texts, strict=True)],
        )
        con.execute("COMMIT")
        con.execute("VACUUM")
        con.close()
        fts_runs = {}
        failed: dict[str, int] = {}
        for name, db in (("detail=full", full_fts), ("detail=column", copy)):
            c = sqlite3.connect(db)
            names = dict(c.execute("SELECT rowid, id FROM documents").fetchall())
            run: Run = {}
            failed[name] = 0
            for qid, text in zip(data.query_ids, data.query_texts, strict=True):
                match = fts_query(text)
                sql = (
                    "SELECT rowid, -bm25(documents_fts) FROM documents_fts "
                    "WHERE documents_fts MATCH ? ORDER BY rank LIMIT 100"
                )
                try:
                    found = [] if match is None else c.execute(sql, (match,)).fetchall()
                except sqlite3.OperationalError:
                    # detail=column has no positions: a quoted phrase, or a word the
                    # tokenizer splits ("CRF01_1b2k"), is refused. Retried word by word.
                    failed[name] += 1
                    found = c.execute(sql, (_single_tokens(text),)).fetchall()
                run[qid] = {names[r]: float(v) for r, v in found}
            c.close()
            fts_runs[name] = run
        after = _table_bytes(copy)
        tune, held = halves(data, per_half)
        text_before = before.get("documents", 0) + before.get("sqlite_autoindex_documents_1", 0)
        text_after = after.get("documents", 0) + after.get("sqlite_autoindex_documents_1", 0)
        fts_before = sum(v for k, v in before.items() if k.startswith("documents_fts"))
        fts_after = sum(v for k, v in after.items() if k.startswith("documents_fts"))
        print(
            f"  zlib preset dictionary ({len(zdict):,} bytes, from 500 texts): text payload "
            f"{stored:,} -> {sum(len(r[0]) for r in new_rows):,} bytes; documents table "
            f"{text_before / raw_tokens:.2f} -> {text_after / raw_tokens:.2f} B/token"
        )
        print(
            f"  FTS5 detail=column: full-text index {fts_before / raw_tokens:.2f} -> "
            f"{fts_after / raw_tokens:.2f} B/token; BM25 nDCG@10 tune / held-out: "
            + "; ".join(
                f"{n} {mean_ndcg(r, data, tune):.4f} / {mean_ndcg(r, data, held):.4f}"
                for n, r in fts_runs.items()
            )
            + f"; queries refused by detail=column (retried word by word): "
            f"{failed['detail=column']} of {len(data.query_ids)}"
        )
        saved = before.get("centroid_lists", 0) if parts else 0
        print(
            f"  file: {total / raw_tokens:.2f} B/token; lists from the codes + dictionary: "
            f"{(common.file_bytes(full_fts) - saved) / raw_tokens:.2f}; all three: "
            f"{(common.file_bytes(copy) - saved) / raw_tokens:.2f}"
        )


def _single_tokens(text: str) -> str:
    """``text``'s letters-and-digits runs, each quoted, OR-ed: what unicode61 keeps whole,
    so no phrase (quoted words, "CRF01_1b2k") reaches a table without positions."""
    words = dict.fromkeys(re.findall(r"[^\W_]+", text))
    return " OR ".join(f'"{w}"' for w in words) or '""'


def store_tokenizer(con: sqlite3.Connection) -> str:
    """The FTS5 tokenizer a file records."""
    row = con.execute("SELECT value FROM meta WHERE key = 'fts_tokenizer'").fetchone()
    return str(row[0])


def main(argv: list[str] | None = None) -> int:
    """Build one index per codec x pool factor, evaluate both halves, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool-factors", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--codecs", nargs="+", default=["int8", "residual4", "residual2"], help="stored codecs"
    )
    parser.add_argument("--build", choices=["add", "compact"], default="add")
    parser.add_argument("--from-db", type=Path, help="--build compact: the int8 file to copy")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--cost-docs", type=int, default=200, help="documents timed for cost")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument(
        "--queries-per-half", type=int, default=0, help="evaluate this many of each half (0: all)"
    )
    parser.add_argument("--reuse", action="store_true", help="reuse work/BUILD-CODEC-poolN.db")
    parser.add_argument(
        "--parts",
        type=Path,
        nargs="*",
        default=[],
        help="instead: break these files down by table and measure three layout changes",
    )
    args = parser.parse_args(argv)
    if args.build == "compact" and args.from_db is None:
        parser.error("--build compact needs --from-db (an int8, pool factor 1 index)")
    docs, queries = scifact_collection(args.cache)
    raw_tokens = sum(d.shape[0] for d in docs)
    if args.parts:
        data = load_dataset()
        for path in args.parts:
            size_options(path, raw_tokens, data, per_half=args.queries_per_half)
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="edge-colbert-size-"))
    work.mkdir(parents=True, exist_ok=True)
    data = load_dataset()
    tune, held = halves(data, args.queries_per_half)
    print(
        f"{len(docs)} documents, {raw_tokens:,} tokens; {len(tune)} tune + {len(held)} "
        f"held-out queries (hybrid.py's split, seed {SPLIT_SEED}); build: {args.build}"
    )
    print(
        "| codec | pool factor | stored tokens | centroids | bytes / encoded token "
        "| nDCG@10 prefilter tune / held-out | nDCG@10 exhaustive tune / held-out "
        "| Recall@100 held-out | search p50 / p95 (ms) | build s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for codec in args.codecs:
        for factor in args.pool_factors:
            path = work / f"{args.build}-{codec}-pool{factor}.db"
            seconds = float("nan")
            if not (args.reuse and path.exists()):
                path.unlink(missing_ok=True)
                if args.build == "add":
                    seconds = build_add(codec, factor, docs, data, path)
                else:
                    seconds = build_compact(codec, factor, args.from_db, path)
            r = search_both(path, data, queries, tune + held)
            info, pre, exh = r["info"], r["prefilter"], r["exhaustive"]
            share = info["tokens"] / raw_tokens
            print(
                f"| {codec} | {factor} | {info['tokens']:,} ({share:.0%}) "
                f"| {info.get('centroids', '-')} "
                f"| {common.file_bytes(path) / raw_tokens:.1f} "
                f"| {mean_ndcg(pre, data, tune):.4f} / {mean_ndcg(pre, data, held):.4f} "
                f"| {mean_ndcg(exh, data, tune):.4f} / {mean_ndcg(exh, data, held):.4f} "
                f"| {recall_at(pre, data, held):.4f} "
                f"| {r['latency']['p50']:.1f} / {r['latency']['p95']:.1f} "
                f"| {seconds:.0f} |",
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
