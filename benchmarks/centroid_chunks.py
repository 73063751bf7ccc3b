"""How many documents one ``centroid_lists`` chunk should hold (schema 5).

Reads every document's centroid ids from an index file (schema 5, read-only), writes them
into fresh scratch files of 512-byte pages (as an index uses) in chunks of each size asked
for, and prints side by side, per chunk size: the CPU time of reading every list (what the
open does; best of three, warm), the CPU time and the bytes written to the WAL by a
one-document add into a half-full tail chunk (the average add) and by deleting one
document from a full chunk, and the table's bytes. The first row is schema 4's layout, one
row per document (``doc_centroids``), read the way schema 4's open read it.

    python benchmarks/centroid_chunks.py INDEX [--chunks 64 256 1024 4096] [--work DIR]
"""

from __future__ import annotations

import argparse
import functools
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

if __package__ in (None, ""):  # run as a script: make `edge_colbert` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_colbert import centroid_lists, schema

ADDS = 20  # one-document adds timed per chunk size (each its own transaction)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA page_size = 512")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA mmap_size = 268435456")
    return conn


def _best_cpu(action: Callable[[], object], rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        action()
        best = min(best, time.process_time() - start)
    return best


def _write(conn: sqlite3.Connection, action: Callable[[], object], wal: Path) -> tuple[float, int]:
    """CPU seconds of one write transaction running ``action``, and the WAL bytes it wrote
    (the WAL is not checkpointed meanwhile)."""
    before = wal.stat().st_size if wal.exists() else 0
    start = time.process_time()
    conn.execute("BEGIN IMMEDIATE")
    action()
    conn.execute("COMMIT")
    return time.process_time() - start, wal.stat().st_size - before


def _table_bytes(conn: sqlite3.Connection, table: str) -> int:
    pages = conn.execute("SELECT count(*) FROM dbstat WHERE name = ?", (table,)).fetchone()[0]
    return int(pages) * 512


def _per_row(
    work: Path, rowids: npt.NDArray[np.int64], blobs: list[bytes], extra: bytes
) -> tuple[float, float, int, float, int, int]:
    """Schema 4's layout: read CPU, add CPU and WAL bytes, delete CPU and bytes, size."""
    path = work / "rows.db"
    conn = _connect(path)
    conn.execute("CREATE TABLE doc_centroids (doc INTEGER PRIMARY KEY, ids BLOB NOT NULL)")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO doc_centroids VALUES (?, ?)", zip(rowids.tolist(), blobs, strict=True)
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA wal_autocheckpoint = 0")

    def read() -> None:
        conn.execute(
            "SELECT count(*), group_concat(doc), group_concat(length(ids)), "
            "CAST(group_concat(ids, '') AS BLOB) FROM doc_centroids"
        ).fetchone()

    read_cpu = _best_cpu(read)
    wal = Path(str(path) + "-wal")
    high = int(rowids[-1])
    add_cpu = add_bytes = 0.0
    for i in range(ADDS):
        cpu, written = _write(
            conn,
            functools.partial(
                conn.execute, "INSERT INTO doc_centroids VALUES (?, ?)", (high + 1 + i, extra)
            ),
            wal,
        )
        add_cpu += cpu / ADDS
        add_bytes += written / ADDS
    middle = int(rowids[rowids.size // 2])
    delete_cpu, delete_bytes = _write(
        conn, lambda: conn.execute("DELETE FROM doc_centroids WHERE doc = ?", (middle,)), wal
    )
    size = _table_bytes(conn, "doc_centroids")
    conn.close()
    path.unlink()
    Path(str(path) + "-wal").unlink(missing_ok=True)
    Path(str(path) + "-shm").unlink(missing_ok=True)
    return read_cpu, add_cpu, int(add_bytes), delete_cpu, delete_bytes, size


def _chunked(
    work: Path,
    chunk: int,
    rowids: npt.NDArray[np.int64],
    sizes: npt.NDArray[np.int64],
    data: bytes,
    id_dtype: str,
    extra: bytes,
) -> tuple[float, float, int, float, int, int]:
    """Schema 5's layout at ``chunk`` documents a chunk, the tail chunk half full."""
    path = work / f"chunks{chunk}.db"
    conn = _connect(path)
    conn.execute(next(s for s in schema.SCHEMA_STATEMENTS if centroid_lists.TABLE in s))
    # Leave the tail chunk half full: the average state a one-document add meets.
    count = (rowids.size // chunk - 1) * chunk + chunk // 2
    ends = np.cumsum(sizes)
    conn.execute("BEGIN")
    centroid_lists.write_all(
        conn, rowids[:count], sizes[:count], data[: int(ends[count - 1])], chunk_docs=chunk
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    read_cpu = _best_cpu(lambda: centroid_lists.read(conn, id_dtype))
    wal = Path(str(path) + "-wal")
    high = int(rowids[count - 1])
    add_cpu = add_bytes = 0.0
    for i in range(ADDS):
        cpu, written = _write(
            conn,
            functools.partial(
                centroid_lists.append, conn, np.array([high + 1 + i]), [extra], chunk_docs=chunk
            ),
            wal,
        )
        add_cpu += cpu / ADDS
        add_bytes += written / ADDS
    middle = int(rowids[count // 2])
    delete_cpu, delete_bytes = _write(conn, lambda: centroid_lists.remove(conn, [middle]), wal)
    size = _table_bytes(conn, centroid_lists.TABLE)
    conn.close()
    path.unlink()
    Path(str(path) + "-wal").unlink(missing_ok=True)
    Path(str(path) + "-shm").unlink(missing_ok=True)
    return read_cpu, add_cpu, int(add_bytes), delete_cpu, delete_bytes, size


def main(argv: list[str] | None = None) -> None:
    """Print the chunk-size table for the lists of one index file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path, help="a schema 5 index file (opened read-only)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder")
    args = parser.parse_args(argv)
    source = sqlite3.connect(schema.sqlite_uri(args.index, "ro"), uri=True)
    id_dtype = dict(source.execute("SELECT key, value FROM meta")).get("centroid_ids", "uint32")
    rowids, lengths, flat = centroid_lists.read(source, id_dtype)
    source.close()
    width = np.dtype(id_dtype).itemsize
    sizes = lengths * width
    data = flat.tobytes()
    ends = np.cumsum(sizes).tolist()
    blobs = [data[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    extra = blobs[len(blobs) // 2]  # a typical document's list
    print(
        f"{rowids.size:,} documents, {len(data) / rowids.size / width:.1f} {id_dtype} ids each "
        f"on average; one-document add into a half-full tail, {ADDS} adds averaged"
    )
    print(
        "| layout | read all CPU ms | add CPU ms | add WAL KiB | delete CPU ms | "
        "delete WAL KiB | table MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=args.work) as folder:
        work = Path(folder)
        layouts: list[tuple[str, Callable[[], tuple[float, float, int, float, int, int]]]] = [
            ("one row a document (schema 4)", lambda: _per_row(work, rowids, blobs, extra))
        ]
        for chunk in args.chunks:
            layouts.append(
                (
                    f"chunks of {chunk:,}",
                    functools.partial(_chunked, work, chunk, rowids, sizes, data, id_dtype, extra),
                )
            )
        for name, run in layouts:
            read, add, add_b, delete, delete_b, size = run()
            print(
                f"| {name} | {read * 1000:.0f} | {add * 1000:.2f} | {add_b / 1024:.1f} | "
                f"{delete * 1000:.2f} | {delete_b / 1024:.1f} | {size / 2**20:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
