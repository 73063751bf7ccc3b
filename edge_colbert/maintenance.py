"""Check, repair and back up an index file (``edge-colbert check``, ``repair``, ``backup``).

* :func:`check_index` reads everything and changes nothing: the schema check of
  :mod:`edge_colbert.filecheck`, SQLite's ``integrity_check``, FTS5's ``integrity-check``,
  every document row decoded, every vector blob's length and crc32, orphans, centroids.
* :func:`repair_index` salvages every readable, intact document into a new file beside
  the index (same schema, full-text index rebuilt, counts recomputed, centroids retrained
  and every document reposted), checks it, and only then swaps it in with one atomic
  rename; the old file stays beside it as ``DB.before-repair``. Killed at any point, the
  index is either the old file or the repaired one, never half of each.
* :func:`backup_index` copies a consistent snapshot with SQLite's online backup API into
  one self-contained file (no ``-wal``), safe to copy or sync. Copying only the ``.db`` of
  a WAL database is not: committed pages may still be in its ``-wal``.

Not thread-safe: each function opens its own connections; run repair while nothing else
has the index open.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_colbert import centroid_lists, filecheck, schema
from edge_colbert.codec import RESIDUAL_BITS, ResidualCodec
from edge_colbert.errors import IndexFileError
from edge_colbert.records import decode_text

__all__ = ["CheckReport", "RepairReport", "backup_index", "check_index", "repair_index"]

logger = logging.getLogger(__name__)

# Rows read per step while checking or salvaging: memory stays bounded on any file size.
PAGE_ROWS = 512
# Problems listed by name in a report; the rest are counted.
LISTED = 10


@dataclass
class CheckReport:
    """What :func:`check_index` found: ``passed`` checks by name, and ``problems``."""

    path: Path
    passed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems


@dataclass
class RepairReport:
    """What :func:`repair_index` did."""

    path: Path
    kept: int = 0
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (id or rowid, why)
    retrained: bool = False
    previous: Path | None = None
    notes: list[str] = field(default_factory=list)


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    conn = sqlite3.connect(schema.sqlite_uri(path, mode), uri=True, isolation_level=None)
    filecheck.harden(conn)
    return conn


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")]


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:LISTED])
    return shown + (f" and {len(items) - LISTED} more" if len(items) > LISTED else "")


def _rowids(conn: sqlite3.Connection) -> list[int]:
    """Every document rowid, from the table, or from the id index when the table's pages
    are damaged."""
    try:
        return [int(r[0]) for r in conn.execute("SELECT rowid FROM documents ORDER BY rowid")]
    except sqlite3.DatabaseError:
        rows = conn.execute(
            "SELECT rowid FROM documents INDEXED BY sqlite_autoindex_documents_1"
        ).fetchall()
        return sorted(int(r[0]) for r in rows)


def _document_problem(row: tuple[Any, ...]) -> str | None:
    """Why a documents row (text, metadata, n_tokens) cannot be used, or None."""
    try:
        decode_text(row[0])
        metadata = json.loads(row[1])
        if not isinstance(metadata, dict):
            return f"metadata is a JSON {type(metadata).__name__}"
        if isinstance(row[2], bool) or not isinstance(row[2], int) or row[2] < 0:
            return f"token count {row[2]!r}"
    except (ValueError, TypeError, RecursionError, zlib.error) as error:
        return str(error)
    return None


def _residual(conn: sqlite3.Connection, meta: dict[str, str]) -> ResidualCodec | None:
    """The residual codec the file's vector blobs are coded with (None: int8 codes).

    Raises:
        IndexFileError: a residual file's trained centroids or buckets cannot be read.
    """
    nbits = RESIDUAL_BITS.get(meta.get(schema.META_CODEC, "int8"))
    if nbits is None:
        return None
    row = conn.execute("SELECT version, vectors, buckets FROM centroids WHERE id = 0").fetchone()
    if row is None:
        return None
    return ResidualCodec.from_stored(
        row[1], row[2], dim=int(meta[schema.META_DIM]), nbits=nbits, version=int(row[0])
    )


def _token_bytes(meta: dict[str, str], residual: ResidualCodec | None) -> int:
    return int(meta[schema.META_DIM]) if residual is None else residual.record_bytes


def _vector_problem(
    codes: Any, crc: Any, width: int, checked: bool, residual: ResidualCodec | None = None
) -> str | None:
    """Why a vector blob cannot be used (length, checksum, residual centroid ids), or
    None."""
    if not isinstance(codes, bytes) or len(codes) % width:
        size = len(codes) if isinstance(codes, bytes) else type(codes).__name__
        return f"vector blob of {size} bytes, not a whole number of {width}-byte tokens"
    if residual is not None and codes:
        highest = int(residual.labels(np.frombuffer(codes, np.uint8).reshape(-1, width)).max())
        centroids = residual.centroids.shape[0]
        if highest >= centroids:
            return f"a residual code names centroid {highest} of {centroids}"
    if checked and crc != zlib.crc32(codes):
        return "vector blob does not match its crc32 checksum"
    return None


def _documents(conn: sqlite3.Connection) -> Iterator[tuple[int, Any, str | None]]:
    """(rowid, id, problem) of every document, read in pages; a page that SQLite cannot
    read is read row by row, and a row it cannot read is a problem of its own."""
    rowids = _rowids(conn)
    for start in range(0, len(rowids), PAGE_ROWS):
        chunk = rowids[start : start + PAGE_ROWS]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT rowid, id, text, metadata, n_tokens FROM documents WHERE rowid IN ({marks})"
        try:
            rows = conn.execute(sql, chunk).fetchall()
        except sqlite3.DatabaseError:
            rows = []
            for rowid in chunk:
                try:
                    rows.extend(
                        conn.execute(
                            "SELECT rowid, id, text, metadata, n_tokens FROM documents "
                            "WHERE rowid = ?",
                            (rowid,),
                        ).fetchall()
                    )
                except sqlite3.DatabaseError as error:
                    yield rowid, None, f"row unreadable ({error})"
        for row in rows:
            yield int(row[0]), row[1], _document_problem(row[2:])


def check_index(path: str | Path) -> CheckReport:
    """Check an index file from end to end without changing it (see the module doc).

    Raises:
        IndexFileError: the path does not exist or is not a file.
    """
    path = Path(path)
    report = CheckReport(path)
    if not path.is_file():
        raise IndexFileError(f"{path} does not exist or is not a file; pass an index file.")
    try:
        filecheck.check_file(path)
    except IndexFileError as error:
        report.problems.append(f"schema: {error}")
        return report
    report.passed.append("schema is the one edge-colbert writes (no triggers, views, extras)")
    conn = _connect(path, "ro")
    try:
        _check_integrity(conn, report)
        _check_fts(path, conn, report)
        meta = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        dim = int(meta[schema.META_DIM])
        try:
            residual = _residual(conn, meta)
        except IndexFileError as error:
            report.problems.append(f"residual codes cannot be decoded: {error}")
            residual = None
        _check_rows(conn, report, _token_bytes(meta, residual), residual)
        _check_orphans(conn, report)
        _check_centroids(conn, report, dim)
    except sqlite3.DatabaseError as error:
        report.problems.append(f"the file cannot be read to the end ({error})")
    finally:
        conn.close()
    return report


def _check_integrity(conn: sqlite3.Connection, report: CheckReport) -> None:
    found = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(20)")]
    if found == ["ok"]:
        report.passed.append("SQLite integrity_check")
    else:
        report.problems.append(f"SQLite integrity_check: {'; '.join(found)}")


def _check_fts(path: Path, conn: sqlite3.Connection, report: CheckReport) -> None:
    if "documents_fts" not in _tables(conn):
        return
    try:
        # FTS5's check is an INSERT that changes nothing; it is rolled back all the same.
        writer = _connect(path, "rw")
    except sqlite3.Error:
        report.passed.append("full-text index (not checked: the file is read-only here)")
        return
    try:
        writer.execute("BEGIN")
        writer.execute("INSERT INTO documents_fts(documents_fts) VALUES ('integrity-check')")
        report.passed.append("full-text index integrity-check")
    except sqlite3.DatabaseError as error:
        if "readonly" in str(error).lower():
            report.passed.append("full-text index (not checked: the file is read-only here)")
        else:
            report.problems.append(f"full-text index: {error}")
    finally:
        if writer.in_transaction:
            writer.execute("ROLLBACK")
        writer.close()


def _check_rows(
    conn: sqlite3.Connection, report: CheckReport, width: int, residual: ResidualCodec | None
) -> None:
    bad = [
        f"{doc_id!r} (row {rowid}: {problem})"
        for rowid, doc_id, problem in _documents(conn)
        if problem is not None
    ]
    if bad:
        report.problems.append(f"{len(bad)} documents cannot be decoded: {_listed(bad)}")
    else:
        report.passed.append("every document's text and metadata decode")
    checked = "crc" in _columns(conn, "vectors")
    wrong: list[str] = []
    last = -1
    while True:
        select = "SELECT doc, codes" + (", crc" if checked else ", NULL")
        rows = conn.execute(
            f"{select} FROM vectors WHERE doc > ? ORDER BY doc LIMIT {PAGE_ROWS}", (last,)
        ).fetchall()
        if not rows:
            break
        for doc, codes, crc in rows:
            problem = _vector_problem(codes, crc, width, checked, residual)
            if problem is not None:
                wrong.append(f"row {doc} ({problem})")
        last = int(rows[-1][0])
    if wrong:
        report.problems.append(f"{len(wrong)} vector blobs are damaged: {_listed(wrong)}")
    else:
        what = "lengths and crc32 checksums" if checked else "lengths (no checksums: schema < 3)"
        report.passed.append(f"every vector blob's {what}")


def _check_orphans(conn: sqlite3.Connection, report: CheckReport) -> None:
    queries = {
        "vectors without a document": "SELECT count(*) FROM vectors "
        "WHERE doc NOT IN (SELECT rowid FROM documents)",
        "documents without vectors": "SELECT count(*) FROM documents "
        "WHERE rowid NOT IN (SELECT doc FROM vectors)",
    }
    if "doc_centroids" in _tables(conn):
        queries["centroid lists without a document"] = (
            "SELECT count(*) FROM doc_centroids WHERE doc NOT IN (SELECT rowid FROM documents)"
        )
    counts = {what: int(conn.execute(sql).fetchone()[0]) for what, sql in queries.items()}
    if centroid_lists.TABLE in _tables(conn):  # schema 5: rowids inside the chunks
        try:
            counts["centroid lists without a document"] = centroid_lists.count_unlisted(conn)
        except ValueError as error:
            report.problems.append(f"centroid lists: {error}")
    found = False
    for what, count in counts.items():
        if count:
            found = True
            report.problems.append(f"{count} {what}")
    if not found:
        report.passed.append("no orphan rows")


def _check_centroids(conn: sqlite3.Connection, report: CheckReport, dim: int) -> None:
    row = conn.execute("SELECT vectors FROM centroids WHERE id = 0").fetchone()
    if row is None:
        report.passed.append("centroids (none trained yet)")
        return
    blob = row[0]
    if not isinstance(blob, bytes) or not blob or len(blob) % (4 * dim):
        report.problems.append("the centroids blob has the wrong length")
    elif not np.isfinite(np.frombuffer(blob, dtype=np.float32)).all():
        report.problems.append("the centroids hold NaN or infinity")
    else:
        report.passed.append(f"{len(blob) // (4 * dim)} centroids, all finite")


# ------------------------------------------------------------------------ backup


def backup_index(path: str | Path, out: str | Path) -> Path:
    """Write a consistent copy of the index ``path`` to ``out``: one file, no ``-wal``.

    Uses SQLite's online backup API on a read-only connection, so writers may go on; the
    copy is written beside ``out`` and renamed into place when complete.

    Raises:
        IndexFileError: ``path`` is not an index this version reads, or ``out`` exists.
    """
    path, out = Path(path), Path(out)
    if not path.is_file():
        raise IndexFileError(f"{path} does not exist or is not a file; pass an index file.")
    if out.exists():
        raise IndexFileError(f"{out} already exists; pick a new path for the backup.")
    if not out.parent.is_dir():
        raise filecheck.missing_folder(out)
    filecheck.check_file(path)
    partial = out.with_name(out.name + ".partial")
    filecheck.remove_new_file(partial)
    source = _connect(path, "ro")
    target = sqlite3.connect(partial, isolation_level=None)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        found = target.execute("PRAGMA integrity_check(1)").fetchone()[0]
        if found != "ok":
            raise IndexFileError(
                f"the copy of {path} fails SQLite's integrity check ({found}); run "
                f"`edge-colbert check {path}`."
            )
    except BaseException:
        target.close()
        filecheck.remove_new_file(partial)
        raise
    finally:
        source.close()
    target.close()
    _fsync(partial)
    partial.replace(out)
    _fsync(out.parent)
    return out


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk, where the platform allows it."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


# ------------------------------------------------------------------------ repair


def repair_index(path: str | Path) -> RepairReport:
    """Salvage what is intact into a new file and swap it in (see the module doc).

    Documents whose row cannot be read or decoded, or whose vectors fail their length or
    checksum, are dropped and listed (add them again); orphan rows are dropped; the
    full-text index, the counts and the centroids are rebuilt; the file is compacted.

    Raises:
        IndexFileError: the schema is not edge-colbert's (repair fixes rows, not a crafted
            schema), or the file changed during the repair (nothing was swapped).
    """
    path = Path(path)
    if not path.is_file():
        raise IndexFileError(f"{path} does not exist or is not a file; pass an index file.")
    filecheck.check_file(path)
    report = RepairReport(path)
    source = _connect(path, "ro")
    try:
        meta = {str(k): str(v) for k, v in source.execute("SELECT key, value FROM meta")}
    finally:
        source.close()
    if meta.get(schema.META_SCHEMA_VERSION) != str(schema.SCHEMA_VERSION):
        # An older schema: migrate it first (one transaction on a writable open), so the
        # salvage copies into the current schema; a newer one is refused by the open.
        from edge_colbert.index import Index

        Index(path).close()
        report.notes.append(f"migrated from schema {meta.get(schema.META_SCHEMA_VERSION)}")
        source = _connect(path, "ro")
        try:
            meta = {str(k): str(v) for k, v in source.execute("SELECT key, value FROM meta")}
        finally:
            source.close()
    fresh = path.with_name(path.name + ".repair")
    filecheck.remove_new_file(fresh)
    try:
        try:
            _salvage(path, fresh, meta, report)
        except sqlite3.DatabaseError as error:
            raise IndexFileError(
                f"{path} is too damaged to salvage ({error}): even the list of its documents "
                "cannot be read. The index was left as it was; restore it from a backup "
                "(edge-colbert backup) or re-index your documents into a new file."
            ) from error
        report.retrained = _retrain(fresh, report)
        check = check_index(fresh)
        if not check.ok:
            raise IndexFileError(
                f"the repaired copy of {path} still fails its check ({check.problems[0]}); "
                "the index was left as it was. Re-index your documents into a new file."
            )
        _swap(path, fresh, report)
    except BaseException:
        filecheck.remove_new_file(fresh)
        raise
    return report


def _salvage(path: Path, fresh: Path, meta: dict[str, str], report: RepairReport) -> None:
    """Copy every intact document of ``path`` into the new file ``fresh`` (and, in a
    residual file, the centroids its codes need, which the retraining then replaces)."""
    target = sqlite3.connect(fresh, isolation_level=None)
    source = _connect(path, "ro")
    try:
        try:
            residual = _residual(source, meta)
        except IndexFileError as error:
            raise IndexFileError(
                f"{path} holds residual codes whose centroids cannot be read ({error}); "
                "without them no document's vectors can be decoded. Restore the file from a "
                "backup (edge-colbert backup) or re-index your documents into a new file."
            ) from None
        width = _token_bytes(meta, residual)
        target.execute("PRAGMA page_size = 512")
        target.execute("PRAGMA journal_mode = WAL")
        target.execute("BEGIN")
        for statement in schema.SCHEMA_STATEMENTS:
            target.execute(statement)
        fts = _fts_statement(meta)
        if fts is not None:
            target.execute(fts)
        doc_columns = [
            c for c in _columns(target, "documents") if c in _columns(source, "documents")
        ]
        vec_columns = [c for c in _columns(target, "vectors") if c in _columns(source, "vectors")]
        checked = "crc" in vec_columns
        kept_tokens = 0
        high = 0
        for rowid, doc_id, problem in _documents(source):
            name = str(doc_id) if doc_id is not None else f"row {rowid}"
            if problem is not None:
                report.dropped.append((name, problem))
                continue
            try:
                row = source.execute(
                    f"SELECT {', '.join(doc_columns)} FROM documents WHERE rowid = ?", (rowid,)
                ).fetchone()
                vectors = source.execute(
                    f"SELECT {', '.join(vec_columns)} FROM vectors WHERE doc = ?", (rowid,)
                ).fetchone()
            except sqlite3.DatabaseError as error:
                report.dropped.append((name, f"row unreadable ({error})"))
                continue
            if vectors is None:
                report.dropped.append((name, "no vectors stored"))
                continue
            values = dict(zip(vec_columns, vectors, strict=True))
            vector_problem = _vector_problem(
                values["codes"], values.get("crc"), width, checked, residual
            )
            if vector_problem is not None:
                report.dropped.append((name, vector_problem))
                continue
            document = dict(zip(doc_columns, row, strict=True))
            _insert(target, "documents", document)
            _insert(target, "vectors", values)
            if fts is not None:
                target.execute(
                    "INSERT INTO documents_fts(rowid, text) VALUES (?, ?)",
                    (rowid, decode_text(document["text"])),
                )
            kept_tokens += int(document["n_tokens"])
            high = max(high, rowid)
            report.kept += 1
        if residual is not None:
            target.execute(
                "INSERT INTO centroids(id, version, vectors, buckets) VALUES (0, ?, ?, ?)",
                (
                    residual.version,
                    residual.centroids.astype("<f4").tobytes(),
                    residual.buckets_bytes(),
                ),
            )
        _copy_meta(target, meta, high=high, tokens=kept_tokens)
        target.execute("COMMIT")
        target.execute("VACUUM")
        target.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        source.close()
        target.close()


def _insert(conn: sqlite3.Connection, table: str, values: dict[str, Any]) -> None:
    names = list(values)
    conn.execute(
        f"INSERT INTO {table}({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
        [values[n] for n in names],
    )


def _fts_statement(meta: dict[str, str]) -> str | None:
    """The full-text table of the current schema, with the file's tokenizer, or None."""
    statement = getattr(schema, "fts_statement", None)
    if statement is None:
        return None
    tokenizer = meta.get(getattr(schema, "META_FTS_TOKENIZER", "fts_tokenizer"))
    try:
        return str(statement(tokenizer))
    except IndexFileError:
        return str(statement(schema.fts_tokenizer(())))


def _copy_meta(conn: sqlite3.Connection, meta: dict[str, str], *, high: int, tokens: int) -> None:
    """The old meta, with the marks recomputed from what was kept and training reset."""
    values = dict(meta)
    old_high = values.get(schema.META_ROWID_HIGH, "0")
    values[schema.META_ROWID_HIGH] = str(max(high, int(old_high) if old_high.isdigit() else 0))
    values[schema.META_TRAINED_ON_TOKENS] = "0"
    tokens_key = getattr(schema, "META_TOKENS", None)
    if tokens_key is not None and tokens_key in values:
        values[tokens_key] = str(tokens)
    if schema.META_CENTROID_VERSION in values:
        values[schema.META_CENTROID_VERSION] = "0"
    conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", list(values.items()))


def _retrain(fresh: Path, report: RepairReport) -> bool:
    """Train centroids on the repaired file and post every document; False when there is
    nothing to train on (the next ``add`` trains when enough tokens are stored)."""
    from edge_colbert.index import Index
    from edge_colbert.training import retrain

    with Index(fresh) as index:
        if len(index) == 0:
            return False
        store = index.store
        done = retrain(store, seen_version=store.centroid_version())
        if done is None:
            report.notes.append("centroids not trained; the next add trains them")
            return False
    return True


def _swap(path: Path, fresh: Path, report: RepairReport, *, keep: bool = True) -> None:
    """Put ``fresh`` in place of ``path`` with one rename; with ``keep`` the old file stays
    beside it (``DB.before-repair``)."""
    conn = sqlite3.connect(schema.sqlite_uri(path, "rw"), uri=True, isolation_level=None)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    wal = Path(str(path) + "-wal")
    if busy or (wal.exists() and wal.stat().st_size):
        raise IndexFileError(
            f"{path} is in use by another process (its write-ahead log could not be "
            "emptied); close every program using it and run repair again. Nothing was changed."
        )
    if keep:
        previous = path.with_name(path.name + ".before-repair")
        filecheck.remove_new_file(previous)
        try:
            os.link(path, previous)
            report.previous = previous
        except OSError as error:
            report.notes.append(f"the damaged file was not kept ({error})")
    _fsync(fresh)
    fresh.replace(path)
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    _fsync(path.parent)
