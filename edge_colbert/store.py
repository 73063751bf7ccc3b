"""The one-file SQLite index: connection, transactions and the rows it holds.

One file holds everything (see docs/internals.md, "Storage"). This module knows SQL and
bytes; it knows nothing about encoders or MaxSim. What a valid file is (schema, meta keys,
migrations, the probe that refuses a file before anything writes to it) lives in
:mod:`edge_colbert.schema`; the metadata filter's SQL in :mod:`edge_colbert.filters`.

Every write goes through :meth:`Store.transaction`: one ``BEGIN IMMEDIATE`` ... ``COMMIT``, so
a crash loses at most the batch in flight, and SQLite's errors come back as the project's
error classes (lock timeout -> :class:`IndexBusyError`, full disk -> :class:`StorageFullError`,
a write to a read-only index -> :class:`ReadOnlyIndexError`).

Threads. A :class:`Store` may be shared by threads: each thread reads through a connection
of its own (opened on its first use, closed when the thread ends or by :meth:`Store.close`
from any thread), so readers run side by side; writes are serialized within the process by
a lock held around the write transaction, and across processes by SQLite's own lock.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import weakref
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edge_colbert import centroid_lists, filecheck, readguard, schema
from edge_colbert.codec import RESIDUAL_BITS, ResidualCodec, stored_codec
from edge_colbert.errors import (
    IndexBusyError,
    IndexClosedError,
    IndexFileError,
    ReadOnlyIndexError,
    StorageFullError,
)
from edge_colbert.filters import where_clause
from edge_colbert.readguard import READ_ERRORS, BadRowError, guard_reads
from edge_colbert.records import (
    NewDocument,
    PackedVectors,
    StoredDocument,
    decode_text,
    encode_text,
)
from edge_colbert.schema import APP, MIGRATIONS, SCHEMA_VERSION, ModelInfo

if TYPE_CHECKING:
    import sqlite_utils

# Re-exported: callers and tests import these from here, as before the split.
__all__ = [
    "APP",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ModelInfo",
    "NewDocument",
    "PackedVectors",
    "Store",
    "StoredDocument",
    "decode_text",
    "encode_text",
    "where_clause",
]

logger = logging.getLogger(__name__)

# Stay under SQLITE_MAX_VARIABLE_NUMBER's historic default (999) whatever the build.
MAX_VARIABLES = 900
# Rows per short read of ids() and metadata() (see Store._pages).
PAGE_ROWS = 1000
PAGE_SIZE = 512
MMAP_BYTES = 256 << 20
# A WAL keeps the size of its largest transaction until the last connection closes; a
# long-lived writer that once added a big batch would carry it on disk. Checkpoints truncate
# it back to this size.
WAL_LIMIT_BYTES = 8 << 20


def _chunks(items: Sequence[Any], size: int = MAX_VARIABLES) -> Iterator[Sequence[Any]]:
    """``items`` in slices of at most ``size``, for ``IN (?, ...)`` lists."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Slot:
    """One thread's connection to the file, closed when the thread ends (its thread-local
    slot is dropped) or by :meth:`Store.close`, whichever comes first."""

    __slots__ = ("__weakref__", "close", "conn", "data_version")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        # data_version as this connection last saw it; None: not looked yet.
        self.data_version: int | None = None
        self.close = weakref.finalize(self, conn.close)


@guard_reads  # every stored-data error is an IndexFileError naming the file and row
class Store:
    """An edge-colbert index file, opened for one model.

    Thread-safe: one Store may be shared by threads. Each thread gets its own read
    connection on first use; writes (:meth:`transaction`) are serialized by a lock within
    the process and by SQLite's write lock across processes; :meth:`close` may be called
    from any thread and closes every thread's connection.

    Args:
        path: the SQLite file; created (with its parent folder) when absent, unless
            ``readonly``.
        model: the model that writes or reads it (identity, name, dimension); a new file
            records it, an existing one must have been written by it.
            ``None`` opens an existing file without checking (for ``info``, ``get``,
            ``delete``); call :meth:`check_model` before encoding anything for it.
        readonly: open with ``mode=ro``; every write raises :class:`ReadOnlyIndexError`.
        timeout: seconds to wait for another writer's lock before :class:`IndexBusyError`.
        mmap: read the file through a memory map of up to :data:`MMAP_BYTES`.

    Raises:
        IndexFileError: not SQLite, another program's database, a newer schema, or a
            read-only open of a file that does not exist.
        ModelMismatchError: the file was written by another model or dimension.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        model: ModelInfo | None,
        readonly: bool = False,
        timeout: float = 30.0,
        mmap: bool = True,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.timeout = float(timeout)
        self.mmap = bool(mmap)
        exists = self.path.exists()
        if exists and not self.path.is_file():
            raise IndexFileError(f"{self.path} is a folder, not an index file; pass a file path.")
        if not exists and readonly:
            raise IndexFileError(
                f"{self.path} does not exist, so there is nothing to open read-only; create it "
                "first with a writable Index."
            )
        if exists:
            schema.probe_file(self.path, self.timeout)
        elif not self.path.parent.is_dir():
            raise filecheck.missing_folder(self.path)
        self._local = threading.local()
        self._slots: weakref.WeakSet[_Slot] = weakref.WeakSet()
        self._slots_lock = threading.Lock()
        # Re-entrant: close() from inside a transaction of the same thread must not hang.
        self._write_lock = threading.RLock()
        self._closed = False
        # The residual codec of the last centroid version read (an immutable object,
        # replaced whole: safe to share between threads).
        self._residual: ResidualCodec | None = None
        try:
            self._open(model)
            meta = self.meta()
        except BaseException:
            self.close()
            if not exists:  # a failed creation (full disk) leaves no empty file behind
                filecheck.remove_new_file(self.path)
            raise
        self.dim = int(meta[schema.META_DIM])
        self.model_identity = meta.get(schema.META_MODEL_IDENTITY, "")
        self.model_name = meta.get(schema.META_MODEL_NAME, "")
        self.changed_elsewhere()  # this thread's baseline

    # ------------------------------------------------------------- connections

    def _slot(self) -> _Slot:
        """The calling thread's connection slot, opened on its first use."""
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is not None and slot.close.alive:
            return slot
        with self._slots_lock:
            if self._closed:
                raise self._closed_error()
            slot = _Slot(self._connect())
            self._slots.add(slot)
        self._local.slot = slot
        return slot

    @property
    def _conn(self) -> sqlite3.Connection:
        """The calling thread's connection."""
        return self._slot().conn

    @property
    def db(self) -> sqlite_utils.Database:
        """A ``sqlite_utils.Database`` over the calling thread's connection (for tools).

        Imported here, not with the module: sqlite_utils imports pandas when it is
        installed, which took 2.8 s of a 3.4 s ``search --mode keyword``."""
        import sqlite_utils

        return sqlite_utils.Database(self._conn)

    def _closed_error(self) -> IndexClosedError:
        return IndexClosedError(
            f"{self.path} was closed (Index.close()); open a new Index on it to go on."
        )

    # ----------------------------------------------------------------- opening

    def _connect(self) -> sqlite3.Connection:
        mode = "ro" if self.readonly else "rwc"
        try:
            # check_same_thread=False only so that close() may close it from another
            # thread; each connection is otherwise used by the one thread that opened it.
            conn = sqlite3.connect(
                schema.sqlite_uri(self.path, mode),
                uri=True,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as error:
            opened = filecheck.open_error(self.path, error, readonly=self.readonly)
            raise opened or IndexFileError(f"cannot open {self.path}: {error}.") from error
        filecheck.harden(conn)
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
        # Memory-mapped reads halve the cost of walking a blob's chain of small pages; the
        # mapped pages count in the process's RSS (shared with other readers, reclaimable).
        conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES if self.mmap else 0}")
        return conn

    def _open(self, model: ModelInfo | None) -> None:
        tables = {
            str(row[0])
            for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if not tables:
            if self.readonly:
                raise IndexFileError(
                    f"{self.path} is an empty database; open it writable once to create the index."
                )
            if model is None:
                raise IndexFileError(
                    f"{self.path} is a new index; creating one needs an encoder to record "
                    "its model."
                )
            self._create(model)
            return
        meta = self.meta()
        version = schema.schema_version(self.path, meta)
        if model is not None:
            self.check_model(model, meta)
        if not self.readonly:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
        if version < SCHEMA_VERSION:
            self._migrate(version, model)

    def check_model(self, model: ModelInfo, meta: Mapping[str, str] | None = None) -> None:
        """Raise :class:`ModelMismatchError` unless ``model`` wrote this file."""
        schema.check_model(self.path, model, self.meta() if meta is None else meta)

    def _create(self, model: ModelInfo) -> None:
        # Small pages: a document's vectors overflow into full pages and its remainder sits
        # on a leaf page, where 4 KiB pages left ~7 bytes per token unused (1 KiB: ~2,
        # 512 B: ~1). Reading 256 candidates' codes takes under a millisecond at any size.
        self._conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        with self.transaction() as conn:
            for statement in schema.SCHEMA_STATEMENTS:
                conn.execute(statement)
            meta = schema.initial_meta(model)
            conn.execute(schema.fts_statement(meta[schema.META_FTS_TOKENIZER]))
            self._set_meta(conn, meta)
        logger.info("created index %s for %s", self.path, model.identity)

    def _migrate(self, version: int, model: ModelInfo | None) -> None:
        if self.readonly:
            raise ReadOnlyIndexError(
                f"{self.path} has schema version {version} and needs an upgrade to "
                f"{SCHEMA_VERSION}; open it once without readonly=True to migrate it."
            )
        with self.transaction() as conn:
            for step in range(version, SCHEMA_VERSION):
                if step not in MIGRATIONS:
                    raise IndexFileError(
                        f"{self.path} has schema version {version}, which this edge-colbert "
                        "cannot migrate; re-index into a new file."
                    )
                MIGRATIONS[step](conn)
                logger.info("migrated %s from schema %d to %d", self.path, step, step + 1)
            if version < 3:
                # Without the model (info, delete) the bundled English model is assumed.
                tokenizer = schema.fts_tokenizer(model.languages if model else ())
                conn.execute(schema.fts_statement(tokenizer))
                self._fill_fts(conn)
                self._set_meta(conn, {schema.META_FTS_TOKENIZER: tokenizer})
            self._set_meta(conn, {schema.META_SCHEMA_VERSION: str(SCHEMA_VERSION)})

    @staticmethod
    def _fill_fts(conn: sqlite3.Connection) -> None:
        """Index every stored text in the full-text table, inside a transaction."""
        cursor = conn.execute("SELECT rowid, text FROM documents ORDER BY rowid")
        while rows := cursor.fetchmany(1024):
            conn.executemany(
                "INSERT INTO documents_fts(rowid, text) VALUES (?, ?)",
                [(rowid, decode_text(text)) for rowid, text in rows],
            )

    # ------------------------------------------------------------ transactions

    def _error(self, error: sqlite3.Error) -> Exception:
        """The project error for a SQLite error, or the error itself."""
        if self._closed:
            return self._closed_error()
        text = str(error).lower()
        if readguard.damaged(error):
            return readguard.stored_data_error(self.path, "writing", error)
        if (
            "disk i/o" in text
            or "unable to open" in text
            or (not self.readonly and ("readonly" in text or "read-only" in text))
        ):
            # The file itself cannot be read or written: media, permissions, disk.
            return filecheck.open_error(self.path, error, readonly=self.readonly) or error
        if "database or disk is full" in text:
            return StorageFullError(
                f"{self.path}: the disk (or the database's page limit) is full; the batch was "
                "rolled back and nothing of it was stored. Free disk space and add it again."
            )
        if "locked" in text or "busy" in text:
            return IndexBusyError(
                f"{self.path} is locked by another writer; waited {self.timeout:g} s. Let the "
                "other process finish (or close it) and try again; from Python, "
                "Index(path, timeout=SECONDS) waits longer."
            )
        if self.readonly and ("readonly" in text or "read-only" in text):
            return ReadOnlyIndexError(
                f"{self.path} was opened with readonly=True, so it cannot be changed; open it "
                "without readonly=True (one writer at a time) to add or delete."
            )
        if "readonly" in text or "read-only" in text:
            return IndexFileError(
                f"{self.path} is open read-only (or the file is not writable); open it with "
                "readonly=False to change it."
            )
        return error

    def check_writable(self) -> None:
        """Raise :class:`ReadOnlyIndexError` when the index was opened read-only."""
        if self.readonly:
            raise ReadOnlyIndexError(
                f"{self.path} was opened with readonly=True, so it cannot be changed; open it "
                "without readonly=True (one writer at a time) to add or delete."
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``): all of it commits, or none of it.

        Thread-safe: the process's writers take turns on a lock (waiting at most
        ``timeout`` seconds, then :class:`IndexBusyError`), and other processes' writers on
        SQLite's lock; readers in other threads keep reading the last committed state.
        """
        self.check_writable()
        if not self._write_lock.acquire(timeout=self.timeout):
            raise IndexBusyError(
                f"{self.path} is being written by another thread of this process; waited "
                f"{self.timeout:g} s. Let that write finish, or open the Index with a larger "
                "timeout=."
            )
        try:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise self._error(error) from error
            try:
                yield conn
            except BaseException as error:
                if not self._closed and conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(error, sqlite3.Error):
                    mapped = self._error(error)
                    if mapped is not error:
                        raise mapped from error
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as error:
                if not self._closed and conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise self._error(error) from error
        finally:
            self._write_lock.release()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction of the calling thread's connection: every query inside sees
        one committed state of the file (inside a write transaction: that transaction)."""
        conn = self._conn
        if conn.in_transaction:
            yield
            return
        conn.execute("BEGIN")
        try:
            yield
        except sqlite3.ProgrammingError as error:
            if self._closed:  # close() from another thread while this one was reading
                raise self._closed_error() from error
            raise
        finally:
            if not self._closed and conn.in_transaction:
                conn.execute("COMMIT")

    def data_version(self) -> int:
        """SQLite's ``data_version`` of the calling thread's connection: it changes when
        another connection (another thread's or another process's) commits to the file."""
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def changed_elsewhere(self) -> bool:
        """Whether another connection committed since the calling thread last asked (True
        on a thread's first call: it has no baseline)."""
        slot = self._slot()
        version = int(slot.conn.execute("PRAGMA data_version").fetchone()[0])
        changed = version != slot.data_version
        slot.data_version = version
        return changed

    @property
    def connection(self) -> sqlite3.Connection:
        """The calling thread's connection (for PRAGMAs in tests and tools)."""
        return self._conn

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Close every thread's connection; SQLite checkpoints the WAL when the last one
        closes. Callable from any thread, and more than once; a write in progress in
        another thread is let finish first (up to ``timeout`` seconds)."""
        locked = self._write_lock.acquire(timeout=self.timeout)
        try:
            with self._slots_lock:
                self._closed = True
                slots = list(self._slots)
            for slot in slots:
                slot.close()
        finally:
            if locked:
                self._write_lock.release()

    # -------------------------------------------------------------------- meta

    def meta(self) -> dict[str, str]:
        """The ``meta`` table as a dict."""
        return {str(k): str(v) for k, v in self._conn.execute("SELECT key, value FROM meta")}

    @staticmethod
    def _set_meta(conn: sqlite3.Connection, values: Mapping[str, str]) -> None:
        conn.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )

    def set_meta(self, conn: sqlite3.Connection, values: Mapping[str, str]) -> None:
        """Set meta keys inside a transaction from :meth:`transaction`."""
        self._set_meta(conn, values)

    # ------------------------------------------------------------------- rows

    def count(self) -> int:
        """Number of documents."""
        return int(self._conn.execute("SELECT count(*) FROM documents").fetchone()[0])

    def token_count(self) -> int:
        """Number of stored token vectors (the ``tokens`` meta count, kept by every write)."""
        row = self._conn.execute(
            "SELECT value FROM meta WHERE key = ?", (schema.META_TOKENS,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def contains(self, doc_id: str) -> bool:
        """Whether a document with this id is stored."""
        row = self._conn.execute("SELECT 1 FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return row is not None

    def get(self, doc_id: str) -> StoredDocument | None:
        """The document with this id, or None."""
        row = self._conn.execute(
            "SELECT rowid, id, text, metadata, n_tokens FROM documents WHERE id = ?", (doc_id,)
        ).fetchone()
        return None if row is None else _document(row)

    def _pages(self, columns: str) -> Iterator[tuple[Any, ...]]:
        """Rows ``(rowid, *columns)`` of every document by rowid, :data:`PAGE_ROWS` per
        short read: a generator left half consumed holds no statement open, so it pins no
        snapshot (the WAL could not be checkpointed past it, and ``len`` went stale)."""
        last = -1
        while True:
            rows = self._conn.execute(
                f"SELECT rowid, {columns} FROM documents WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (last, PAGE_ROWS),
            ).fetchall()
            if not rows:
                return
            last = int(rows[-1][0])
            yield from rows

    def ids(self) -> Iterator[str]:
        """Every document id, in insertion order, read in pages (documents added or deleted
        while iterating may or may not be seen)."""
        for _, doc_id in self._pages("id"):
            yield str(doc_id)

    def metadata(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every (id, metadata), in insertion order, read in pages like :meth:`ids`."""
        for rowid, doc_id, meta in self._pages("id, metadata"):
            try:
                value = json.loads(meta)
            except (ValueError, TypeError, RecursionError) as error:
                raise BadRowError("documents", rowid, error) from error
            if not isinstance(value, dict):
                raise BadRowError("documents", rowid, "metadata is not a JSON object")
            yield str(doc_id), value

    def documents(self, rowids: Sequence[int]) -> dict[int, StoredDocument]:
        """The documents with these rowids, by rowid."""
        found: dict[int, StoredDocument] = {}
        for chunk in _chunks([int(r) for r in rowids]):
            marks = ",".join("?" * len(chunk))
            for row in self._conn.execute(
                "SELECT rowid, id, text, metadata, n_tokens FROM documents "
                f"WHERE rowid IN ({marks})",
                list(chunk),
            ):
                found[int(row[0])] = _document(row)
        return found

    def rowids_of(self, ids: Sequence[str]) -> dict[str, int]:
        """The rowids of those ids that are stored."""
        found: dict[str, int] = {}
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            for doc_id, rowid in self._conn.execute(
                f"SELECT id, rowid FROM documents WHERE id IN ({marks})", list(chunk)
            ):
                found[str(doc_id)] = int(rowid)
        return found

    def filter(self, where: Mapping[str, Any]) -> tuple[npt.NDArray[np.int64], int]:
        """Rowids (sorted) of the documents whose metadata matches, and their token count."""
        sql, params = where_clause(where)
        rows = self._conn.execute(
            f"SELECT rowid, n_tokens FROM documents WHERE {sql} ORDER BY rowid", params
        ).fetchall()
        rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return rowids, int(sum(r[1] for r in rows))

    def insert(
        self, conn: sqlite3.Connection, docs: Sequence[NewDocument], centroid_dtype: str
    ) -> tuple[list[int], list[int]]:
        """Upsert documents inside a transaction.

        New rows get rowids above every rowid ever given (the ``rowid_high`` meta mark), not
        SQLite's ``max(rowid) + 1``, which would hand a replaced last row's rowid to its
        replacement: a reader that has seen rowids up to ``r`` then knows that the rows
        above ``r`` are exactly the ones added since (see :meth:`doc_centroids`).

        Returns:
            ``(replaced, added)``: rowids of the rows the new ones replaced (same id) and
            the rowids of the new rows, in the order of ``docs``.
        """
        replaced = list(self.rowids_of([d.id for d in docs]).values())
        high = self.rowid_high()
        removed_tokens = self._delete_rowids(conn, replaced)
        added = list(range(high + 1, high + 1 + len(docs)))
        codes = [np.ascontiguousarray(doc.codes).tobytes() for doc in docs]
        conn.executemany(
            "INSERT INTO documents(rowid, id, text, metadata, n_tokens) VALUES (?, ?, ?, ?, ?)",
            [
                (rowid, doc.id, encode_text(doc.text), doc.metadata_json, int(doc.codes.shape[0]))
                for rowid, doc in zip(added, docs, strict=True)
            ],
        )
        conn.executemany(
            "INSERT INTO vectors(doc, codes, crc) VALUES (?, ?, ?)",
            [(rowid, blob, zlib.crc32(blob)) for rowid, blob in zip(added, codes, strict=True)],
        )
        posted = [
            (r, d.centroids) for r, d in zip(added, docs, strict=True) if d.centroids is not None
        ]
        centroid_lists.append(
            conn,
            np.asarray([r for r, _ in posted], dtype=np.int64),
            [ids.astype(centroid_dtype).tobytes() for _, ids in posted],
        )
        conn.executemany(
            "INSERT INTO documents_fts(rowid, text) VALUES (?, ?)",
            [(rowid, doc.text) for rowid, doc in zip(added, docs, strict=True)],
        )
        if added:
            new_tokens = sum(int(doc.codes.shape[0]) for doc in docs)
            self._set_meta(
                conn,
                {
                    schema.META_ROWID_HIGH: str(added[-1]),
                    schema.META_TOKENS: str(self.token_count() - removed_tokens + new_tokens),
                },
            )
        return replaced, added

    def rowid_high(self) -> int:
        """The highest rowid ever given to a document (0 for none): the ``rowid_high`` meta
        mark, its one source of truth (schema 3 set it on files written before it)."""
        row = self._conn.execute(
            "SELECT value FROM meta WHERE key = ?", (schema.META_ROWID_HIGH,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def rowids(self) -> npt.NDArray[np.int64]:
        """Every document's rowid, sorted (read from the small ``id`` index, not the rows)."""
        # No ORDER BY: SQLite then scans the covering id index, not the table's pages.
        rows = self._conn.execute("SELECT rowid FROM documents").fetchall()
        return np.sort(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))

    def delete(self, conn: sqlite3.Connection, ids: Sequence[str]) -> list[int]:
        """Delete documents by id inside a transaction; returns the rowids removed."""
        rowids = list(self.rowids_of(ids).values())
        removed_tokens = self._delete_rowids(conn, rowids)
        if rowids:
            self._set_meta(conn, {schema.META_TOKENS: str(self.token_count() - removed_tokens)})
        return rowids

    def _delete_rowids(self, conn: sqlite3.Connection, rowids: Sequence[int]) -> int:
        """Delete rows (their vectors go by ON DELETE CASCADE, their centroid ids by
        rewriting the chunks that list them, their full-text entries by FTS5's 'delete'
        with the text they were indexed with); returns the number of tokens they held."""
        centroid_lists.remove(conn, rowids)
        tokens = 0
        for chunk in _chunks(list(rowids)):
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT rowid, text, n_tokens FROM documents WHERE rowid IN ({marks})",
                list(chunk),
            ).fetchall()
            conn.executemany(
                "INSERT INTO documents_fts(documents_fts, rowid, text) VALUES ('delete', ?, ?)",
                [(rowid, decode_text(text)) for rowid, text, _ in rows],
            )
            tokens += sum(int(n) for _, _, n in rows)
            conn.execute(f"DELETE FROM documents WHERE rowid IN ({marks})", list(chunk))
        return tokens

    # ---------------------------------------------------------------- vectors

    def _pack(self, rows: list[tuple[int, bytes]], codec: ResidualCodec | None) -> PackedVectors:
        width = self.dim if codec is None else codec.record_bytes
        bad = next((r for r in rows if len(r[1]) % width), None)
        if bad is not None:  # else the offsets of every later document would shift
            raise BadRowError(
                "vectors", bad[0], f"{len(bad[1])} bytes, not whole {width}-byte tokens"
            )
        rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        lengths = np.fromiter((len(r[1]) // width for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        dtype = np.int8 if codec is None else np.uint8
        codes = np.frombuffer(b"".join(r[1] for r in rows), dtype=dtype)
        return PackedVectors(rowids, codes.reshape(-1, width), offsets, codec)

    def vectors(self, rowids: Iterable[int]) -> PackedVectors:
        """The stored vectors of these documents, packed and ordered by rowid, with the
        coding they were read under (one read transaction: codes and codec agree)."""
        wanted = sorted({int(r) for r in rowids})
        rows: list[tuple[int, bytes]] = []
        with self.snapshot():
            codec = self.residual_codec()
            for chunk in _chunks(wanted):
                marks = ",".join("?" * len(chunk))
                rows.extend(
                    self._conn.execute(
                        f"SELECT doc, codes FROM vectors WHERE doc IN ({marks}) ORDER BY doc",
                        list(chunk),
                    )
                )
        return self._pack(rows, codec)

    def iter_vectors(
        self, max_tokens: int = 262_144, *, after: int = -1
    ) -> Iterator[PackedVectors]:
        """Every document's vectors (with rowid above ``after``), in packs of about
        ``max_tokens`` tokens, by rowid.

        Pages by rowid (keyset), so memory stays near one pack however large the file.
        """
        last = after
        while True:
            rows: list[tuple[int, bytes]] = []
            tokens = 0
            with self.snapshot():  # each page: its codes and their coding from one commit
                codec = self.residual_codec()
                width = self.dim if codec is None else codec.record_bytes
                cursor = self._conn.execute(
                    "SELECT doc, codes, crc FROM vectors WHERE doc > ? ORDER BY doc", (last,)
                )
                for doc, codes, crc in cursor:
                    # A full scan: the crc32 costs little beside what is done with the codes.
                    if zlib.crc32(codes) != crc:
                        raise BadRowError("vectors", doc, "the codes do not match their crc32")
                    rows.append((doc, codes))
                    tokens += len(codes) // width
                    if tokens >= max_tokens:
                        break
                cursor.close()
            if not rows:
                return
            last = int(rows[-1][0])
            yield self._pack(rows, codec)

    def doc_centroids(
        self, centroid_dtype: str, *, after: int = -1
    ) -> tuple[npt.NDArray[np.int64], list[npt.NDArray[np.uint32]]]:
        """Stored centroid ids of the documents with rowid above ``after`` (rowids sorted),
        for building postings; the default reads every document's."""
        rowids, lengths, flat = self.doc_centroids_flat(centroid_dtype, after=after)
        ids = flat.astype(np.uint32)
        return rowids, np.split(ids, np.cumsum(lengths)[:-1]) if rowids.size else []

    def doc_centroids_flat(
        self, centroid_dtype: str, *, after: int = -1
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.unsignedinteger]]:
        """:meth:`doc_centroids` in CSR form ``(rowids, lengths, flat ids)``, read without a
        Python step per document (the open of a large index reads every document's ids):
        one row per chunk of documents (:mod:`edge_colbert.centroid_lists`), and with
        ``after`` only the chunks that hold rowids above it.

        Raises:
            ValueError: a chunk is damaged or a list is not a whole number of ids (mapped
                to :class:`IndexFileError` by the read guard).
        """
        with self.snapshot():  # the chunks and their lower bound from one commit
            return centroid_lists.read(self._conn, centroid_dtype, after=after)

    def set_doc_centroids_flat(
        self,
        conn: sqlite3.Connection,
        rowids: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int64],
        flat: npt.NDArray[np.unsignedinteger],
        centroid_dtype: str,
    ) -> None:
        """Replace every document's stored centroid ids (a document not given is left
        without; retraining posts every document), inside a transaction. CSR form:
        ``lengths[i]`` ids of ``flat`` belong to ``rowids[i]``, rowids increasing; one
        conversion of all ids, written as whole chunks with no array per document."""
        data = np.ascontiguousarray(flat, dtype=centroid_dtype).tobytes()
        width = np.dtype(centroid_dtype).itemsize
        centroid_lists.write_all(
            conn, np.asarray(rowids, dtype=np.int64), np.asarray(lengths) * width, data
        )

    def centroids(self) -> tuple[int, bytes] | None:
        """``(version, blob)`` of the stored centroids, or None before any training."""
        row = self._conn.execute("SELECT version, vectors FROM centroids WHERE id = 0").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def centroid_version(self) -> int:
        """The stored centroids' version (0 before any training), without reading them."""
        row = self._conn.execute("SELECT version FROM centroids WHERE id = 0").fetchone()
        return 0 if row is None else int(row[0])

    def set_centroids(
        self, conn: sqlite3.Connection, version: int, blob: bytes, buckets: bytes | None = None
    ) -> None:
        """Replace the centroids (and a residual file's bucket cut-offs and values of the
        same version), inside a transaction."""
        conn.execute(
            "INSERT INTO centroids(id, version, vectors, buckets) VALUES (0, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET version = excluded.version, "
            "vectors = excluded.vectors, buckets = excluded.buckets",
            (version, blob, buckets),
        )

    def residual_codec(self) -> ResidualCodec | None:
        """The coding of the stored vectors as of this connection's view: the residual
        codec of the stored centroid version, or None where the blobs hold int8 codes (an
        int8 file, or a residual file whose centroids are not trained yet).

        Raises:
            IndexFileError: a residual file whose trained centroids or buckets cannot be
                read.
        """
        codec = self.codec()
        nbits = RESIDUAL_BITS.get(codec)
        if nbits is None:
            return None
        version = self.centroid_version()
        if version == 0:
            return None
        cached = self._residual
        if cached is not None and cached.version == version and cached.nbits == nbits:
            return cached  # versions only grow: the same number is the same centroids
        row = self._conn.execute(
            "SELECT version, vectors, buckets FROM centroids WHERE id = 0"
        ).fetchone()
        loaded = ResidualCodec.from_stored(
            row[1], row[2], dim=self.dim, nbits=nbits, version=int(row[0])
        )
        self._residual = loaded
        return loaded

    def codec(self) -> str:
        """The codec the file records, as of this connection's view (see
        :mod:`edge_colbert.codec`).

        Raises:
            IndexFileError: a codec this version does not read.
        """
        row = self._conn.execute(
            "SELECT value FROM meta WHERE key = ?", (schema.META_CODEC,)
        ).fetchone()
        return stored_codec({} if row is None else {schema.META_CODEC: str(row[0])}, self.path)

    # -------------------------------------------------------------- full text

    def fts_search(
        self, match: str, limit: int, *, where: Mapping[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Rowids and BM25 scores (higher is better), best first, of the ``limit`` best
        full-text matches of ``match``, an FTS5 expression from
        :func:`edge_colbert.lexical.fts_query` (never user text), among the documents whose
        metadata match ``where`` when given."""
        if where is None:
            rows = self._conn.execute(
                "SELECT rowid, -bm25(documents_fts) FROM documents_fts "
                "WHERE documents_fts MATCH ? ORDER BY rank LIMIT ?",
                (match, int(limit)),
            ).fetchall()
        else:
            sql, params = where_clause(where)
            rows = self._conn.execute(
                "SELECT f.rowid, -bm25(documents_fts) AS score FROM documents_fts AS f "
                "JOIN documents AS d ON d.rowid = f.rowid "
                f"WHERE documents_fts MATCH ? AND ({sql}) ORDER BY score DESC LIMIT ?",
                [match, *params, int(limit)],
            ).fetchall()
        rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        scores = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
        return rowids, scores

    def fts_holding(self, term: str, limit: int) -> int:
        """How many documents hold ``term`` (one term of
        :func:`edge_colbert.lexical.fts_terms`), counted up to ``limit``."""
        row = self._conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM documents_fts WHERE documents_fts MATCH ? "
            "LIMIT ?)",
            (term, int(limit)),
        ).fetchone()
        return int(row[0])

    def collection_state(self) -> tuple[int, int]:
        """A key that changes with every write that adds, replaces or deletes a document:
        (``rowid_high``, ``tokens``): new rows always get higher rowids and a deletion
        removes tokens (a document holds at least one)."""
        return self.rowid_high(), self.token_count()

    def fts_integrity_check(self) -> None:
        """Run FTS5's ``integrity-check`` on the full-text index (a write statement that
        changes nothing); raises ``sqlite3.DatabaseError`` when the index is damaged."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO documents_fts(documents_fts) VALUES ('integrity-check')")

    def fts_tokenizer(self) -> str:
        """The FTS5 tokenizer the full-text index was built with."""
        return self.meta().get(schema.META_FTS_TOKENIZER, schema.FTS_ENGLISH)

    def size_bytes(self) -> int:
        """Bytes on disk: the file plus its write-ahead log."""
        total = 0
        for suffix in ("", "-wal"):
            file = Path(str(self.path) + suffix)
            if file.exists():
                total += file.stat().st_size
        return total


def _document(row: tuple[Any, ...]) -> StoredDocument:
    """A ``documents`` row (rowid, id, text, metadata, n_tokens) as a :class:`StoredDocument`."""
    try:
        metadata = json.loads(row[3])
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata is a JSON {type(metadata).__name__}, not an object")
        return StoredDocument(
            rowid=int(row[0]),
            id=str(row[1]),
            text=decode_text(row[2]),
            metadata=metadata,
            n_tokens=int(row[4]),
        )
    except READ_ERRORS as error:
        raise BadRowError("documents", row[0], error) from error
