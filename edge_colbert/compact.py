"""``compact``: rewrite an index file with another codec or pool factor, swapped in whole.

A file keeps the codec and pool factor it was created with (every document of one file is
coded and pooled alike). :func:`compact_index` converts one in place:

1. it takes the file's write lock (other writers wait; readers go on) and copies every
   document into a new file beside it, ``DB.compact``: rows, rowids and stored texts as
   they are, the full-text index rebuilt, each document's vectors decoded, pooled further
   when asked, and stored as int8 codes;
2. it trains centroids on the new file, which codes every document with the new codec in
   the swap transaction (:mod:`edge_colbert.training`), then ``VACUUM`` packs it and
   :func:`~edge_colbert.maintenance.check_index` must pass;
3. it releases the lock, checks that nobody wrote meanwhile, and puts the new file in place
   with one rename (fsynced before and after).

Killed at any point, ``DB`` is the old file or the new one, never a mix; a leftover
``DB.compact`` is removed by the next run. Like ``repair``, it refuses to swap while another
program has the file open (its write-ahead log cannot be emptied). Needs free space for a
second copy of the file. Not thread-safe with other writers of the same file in this
process: run it on its own.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_colbert import filecheck, schema
from edge_colbert.codec import check_codec, stored_codec
from edge_colbert.errors import (
    IndexFileError,
    InvalidInputError,
    ReadOnlyIndexError,
    StorageFullError,
)
from edge_colbert.maintenance import (
    RepairReport,
    _connect,
    _fsync,
    _residual,
    _swap,
    _token_bytes,
    check_index,
)
from edge_colbert.pooling import check_pool_factor, pool_documents, stored_pool_factor
from edge_colbert.quantize import dequantize_int8, quantize_int8
from edge_colbert.records import decode_text
from edge_colbert.training import TRAIN_TOKENS

__all__ = ["CompactReport", "compact_index"]

logger = logging.getLogger(__name__)

# Documents copied per step: bounds the decoded vectors held at once.
_STEP_DOCS = 512


@dataclass
class CompactReport:
    """What :func:`compact_index` did: the settings and file size before and after."""

    path: Path
    documents: int
    codec_before: str
    codec_after: str
    pool_factor_before: int
    pool_factor_after: int
    bytes_before: int
    bytes_after: int
    tokens_before: int
    tokens_after: int


def _file_bytes(path: Path) -> int:
    """The file and its write-ahead log: what the index takes on disk."""
    wal = Path(str(path) + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def _fingerprint(conn: sqlite3.Connection) -> tuple[object, ...]:
    """What changes with every write: the rowid mark, token count, documents and centroids."""
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    count = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
    version = conn.execute("SELECT coalesce(max(version), 0) FROM centroids").fetchone()[0]
    return (meta.get(schema.META_ROWID_HIGH), meta.get(schema.META_TOKENS), count, version)


def compact_index(
    path: str | Path, *, codec: str | None = None, pool_factor: int | None = None
) -> CompactReport:
    """Rewrite ``path`` with ``codec`` and ``pool_factor`` (None: keep the file's), in place.

    Pooling only goes further: the new factor must be a multiple of the file's (tokens
    merged cannot be split again; re-index to pool less).

    Raises:
        InvalidInputError: an unknown codec or a bad pool factor.
        ReadOnlyIndexError: the file or its folder cannot be written.
        StorageFullError: no room for the new copy (the file is left as it was).
        IndexFileError: not an index this version reads, or it changed or was in use
            during the compaction (nothing was swapped).
    """
    path = Path(path)
    if codec is not None:
        check_codec(codec)
    if pool_factor is not None:
        check_pool_factor(pool_factor)
    if not path.is_file():
        raise IndexFileError(f"{path} does not exist or is not a file; pass an index file.")
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise ReadOnlyIndexError(
            f"{path} (or its folder) is read-only; compact writes a new copy beside it and "
            "swaps it in. Copy the index somewhere writable and compact the copy."
        )
    filecheck.check_file(path)
    _migrate_first(path)
    bytes_before = _file_bytes(path)
    fresh = path.with_name(path.name + ".compact")
    filecheck.remove_new_file(fresh)
    with _removed_on_error(path, fresh):
        source = _connect(path, "rw")
        try:
            source.execute("BEGIN IMMEDIATE")  # writers wait until the copy is done
            meta = {str(k): str(v) for k, v in source.execute("SELECT key, value FROM meta")}
            dim = int(meta[schema.META_DIM])
            old_codec = stored_codec(meta, path)
            old_factor = stored_pool_factor(meta, path)
            new_codec = check_codec(codec or old_codec, dim)
            new_factor = old_factor if pool_factor is None else pool_factor
            if new_factor % old_factor:
                raise InvalidInputError(
                    f"{path} is pooled by {old_factor}; compact can pool further by a "
                    f"multiple of it (e.g. {2 * old_factor}), not to {new_factor}. Re-index "
                    "from the texts to pool less."
                )
            documents, tokens_before, tokens_after = _copy(
                source, fresh, meta, new_codec, new_factor // old_factor, new_factor
            )
            trained = source.execute("SELECT count(*) FROM centroids").fetchone()[0] > 0
            seen = _fingerprint(source)
            source.execute("COMMIT")
        finally:
            if source.in_transaction:
                source.execute("ROLLBACK")
            source.close()
        _train_and_pack(fresh, tokens_after, trained)
        check = check_index(fresh)
        if not check.ok:
            raise IndexFileError(
                f"the compacted copy of {path} fails its check ({check.problems[0]}); the "
                "index was left as it was."
            )
        _swap_if_unchanged(path, fresh, seen)
    report = CompactReport(
        path=path,
        documents=documents,
        codec_before=old_codec,
        codec_after=new_codec,
        pool_factor_before=old_factor,
        pool_factor_after=new_factor,
        bytes_before=bytes_before,
        bytes_after=_file_bytes(path),
        tokens_before=tokens_before,
        tokens_after=tokens_after,
    )
    logger.info("compacted %s: %s", path, report)
    return report


@contextmanager
def _removed_on_error(path: Path, fresh: Path) -> Iterator[None]:
    """On any failure remove the half-made copy ``fresh`` (the index itself is untouched
    until the final rename), and turn SQLite's errors into the project's."""
    try:
        yield
    except sqlite3.Error as error:
        filecheck.remove_new_file(fresh)
        raise _write_error(path, error) from error
    except BaseException:
        filecheck.remove_new_file(fresh)
        raise


def _migrate_first(path: Path) -> None:
    """An older schema is migrated (one transaction), so the copy has the current one."""
    conn = _connect(path, "ro")
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    finally:
        conn.close()
    if row is not None and str(row[0]) != str(schema.SCHEMA_VERSION):
        from edge_colbert.index import Index

        Index(path).close()


def _copy(
    source: sqlite3.Connection,
    fresh: Path,
    meta: dict[str, str],
    codec: str,
    further: int,
    factor: int,
) -> tuple[int, int, int]:
    """Copy every document into the new file ``fresh`` (int8 codes, pooled by ``further``
    more); returns (documents, stored tokens before, stored tokens after)."""
    residual = _residual(source, meta)
    width = _token_bytes(meta, residual)
    dim = int(meta[schema.META_DIM])
    target = sqlite3.connect(fresh, isolation_level=None)
    try:
        target.execute("PRAGMA page_size = 512")
        target.execute("PRAGMA journal_mode = WAL")
        target.execute("BEGIN")
        for statement in schema.SCHEMA_STATEMENTS:
            target.execute(statement)
        target.execute(schema.fts_statement(meta[schema.META_FTS_TOKENIZER]))
        documents = tokens_before = tokens_after = 0
        last = -1
        while True:
            rows = source.execute(
                "SELECT d.rowid, d.id, d.text, d.metadata, v.codes, v.crc FROM documents d "
                "JOIN vectors v ON v.doc = d.rowid WHERE d.rowid > ? ORDER BY d.rowid LIMIT ?",
                (last, _STEP_DOCS),
            ).fetchall()
            if not rows:
                break
            last = int(rows[-1][0])
            vectors = []
            for rowid, _, _, _, codes, crc in rows:
                if zlib.crc32(codes) != crc or len(codes) % width:
                    raise IndexFileError(
                        f"document row {rowid} of the index has damaged vectors; run "
                        "`edge-colbert repair` first, then compact."
                    )
                stored = np.frombuffer(codes, dtype=np.uint8).reshape(-1, width)
                vectors.append(
                    dequantize_int8(stored.view(np.int8))
                    if residual is None
                    else residual.decode(stored)
                )
            tokens_before += sum(v.shape[0] for v in vectors)
            pooled = pool_documents(vectors, further) if further > 1 else vectors
            for (rowid, doc_id, text, metadata, _, _), doc in zip(rows, pooled, strict=True):
                blob = quantize_int8(doc).tobytes()
                target.execute(
                    "INSERT INTO documents(rowid, id, text, metadata, n_tokens) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (rowid, doc_id, text, metadata, doc.shape[0]),
                )
                target.execute(
                    "INSERT INTO vectors(doc, codes, crc) VALUES (?, ?, ?)",
                    (rowid, blob, zlib.crc32(blob)),
                )
                documents += 1
                tokens_after += doc.shape[0]
        cursor = source.execute("SELECT rowid, text FROM documents ORDER BY rowid")
        while batch := cursor.fetchmany(1024):
            target.executemany(
                "INSERT INTO documents_fts(rowid, text) VALUES (?, ?)",
                [(rowid, decode_text(text)) for rowid, text in batch],
            )
        values = dict(meta)
        values.update(
            {
                schema.META_CODEC: codec,
                schema.META_POOL_FACTOR: str(factor),
                schema.META_TOKENS: str(tokens_after),
                schema.META_TRAINED_ON_TOKENS: "0",
                schema.META_DIM: str(dim),
            }
        )
        values.pop(schema.META_CENTROID_IDS, None)
        target.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", list(values.items()))
        target.execute("COMMIT")
    finally:
        target.close()
    return documents, tokens_before, tokens_after


def _train_and_pack(fresh: Path, tokens: int, trained: bool) -> None:
    """Train centroids (which codes every document with the file's codec) when the old
    file had them or the new one is large enough to, then pack the file."""
    from edge_colbert.index import Index
    from edge_colbert.training import retrain

    if tokens and (trained or tokens >= TRAIN_TOKENS):
        with Index(fresh) as index:
            retrain(index.store, seen_version=0)
    conn = sqlite3.connect(fresh, isolation_level=None)
    try:
        conn.execute("VACUUM")  # the int8 blobs the residual codes replaced leave free pages
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _swap_if_unchanged(path: Path, fresh: Path, seen: tuple[object, ...]) -> None:
    """Rename ``fresh`` over ``path`` unless ``path`` was written after the copy."""
    conn = _connect(path, "ro")
    try:
        now = _fingerprint(conn)
    finally:
        conn.close()
    if now != seen:
        raise IndexFileError(
            f"{path} was written while compact ran (another program added or deleted "
            "documents); nothing was swapped. Run compact again when it is idle."
        )
    report = RepairReport(path)
    _swap(path, fresh, report, keep=False)
    _fsync(path.parent)


def _write_error(path: Path, error: sqlite3.Error) -> Exception:
    text = str(error).lower()
    if "full" in text or "no space" in text:
        return StorageFullError(
            f"no room to write the compacted copy of {path} ({error}); it needs about the "
            "size of the index free beside it. The index was left as it was."
        )
    if "locked" in text or "busy" in text:
        return IndexFileError(
            f"{path} is being written by another program ({error}); run compact when it is "
            "idle. Nothing was changed."
        )
    return IndexFileError(f"compact of {path} failed ({error}); the index was left as it was.")
