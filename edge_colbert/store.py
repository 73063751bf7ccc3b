"""The one-file SQLite index: schema, migrations, transactions and the rows it holds.

One file holds everything (see docs/internals.md, "Storage"). This module knows SQL and
bytes; it knows nothing about encoders or MaxSim. :class:`Store` refuses a file it must not
touch (not SQLite, another program's database, a newer schema, another model) *before* it
writes a single byte, by probing the file through a read-only connection first.

Every write goes through :meth:`Store.transaction`: one ``BEGIN IMMEDIATE`` ... ``COMMIT``, so
a crash loses at most the batch in flight, and SQLite's errors come back as the project's
error classes (lock timeout -> :class:`IndexBusyError`, full disk -> :class:`StorageFullError`).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import numpy.typing as npt
import sqlite_utils

from edge_colbert.errors import (
    IndexBusyError,
    IndexFileError,
    InvalidInputError,
    ModelMismatchError,
    StorageFullError,
)

__all__ = [
    "APP",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ModelInfo",
    "NewDocument",
    "PackedVectors",
    "Store",
    "StoredDocument",
    "where_clause",
]

logger = logging.getLogger(__name__)

APP = "edge-colbert"
SCHEMA_VERSION = 1
SQLITE_HEADER = b"SQLite format 3\x00"
# Stay under SQLITE_MAX_VARIABLE_NUMBER's historic default (999) whatever the build.
MAX_VARIABLES = 900
PAGE_SIZE = 1024
MMAP_BYTES = 256 << 20
# Texts shorter than this stay plain TEXT; zlib gains nothing on them.
_COMPRESS_MIN_BYTES = 160

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (
    rowid INTEGER PRIMARY KEY,
    id TEXT UNIQUE NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    n_tokens INTEGER NOT NULL
);
CREATE TABLE vectors (
    doc INTEGER PRIMARY KEY REFERENCES documents(rowid) ON DELETE CASCADE,
    codes BLOB NOT NULL,
    scales BLOB NOT NULL,
    centroids BLOB
);
CREATE TABLE centroids (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    version INTEGER NOT NULL,
    vectors BLOB NOT NULL
);
"""

# Migration from schema version v to v + 1, run inside one transaction on open. Version 1 is
# the first, so the list is empty; a version 2 adds `2 - 1: _migrate_1_to_2` here.
Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: dict[int, Migration] = {}


@dataclass(frozen=True)
class ModelInfo:
    """What an index records about its model: ``Encoder.identity``, name and dimension."""

    identity: str
    name: str
    dim: int


@dataclass(frozen=True)
class StoredDocument:
    """One document row as stored: its rowid, id, text, metadata and token count."""

    rowid: int
    id: str
    text: str
    metadata: dict[str, Any]
    n_tokens: int


@dataclass(frozen=True)
class NewDocument:
    """A document ready to write: text, metadata JSON, int8 codes, scales, centroid ids."""

    id: str
    text: str
    metadata_json: str
    codes: npt.NDArray[np.int8]
    scales: npt.NDArray[np.float16]
    centroids: npt.NDArray[np.uint32] | None


@dataclass(frozen=True)
class PackedVectors:
    """The int8 vectors of several documents packed in one array, ordered by rowid.

    Document ``i`` owns rows ``offsets[i]:offsets[i + 1]`` of ``codes`` and ``scales``.
    """

    rowids: npt.NDArray[np.int64]
    codes: npt.NDArray[np.int8]
    scales: npt.NDArray[np.float16]
    offsets: npt.NDArray[np.int64]


def encode_text(text: str) -> str | bytes:
    """The stored form of a text: zlib-compressed bytes when that is smaller, else itself.

    Text is the second largest thing per token after the int8 codes; compressing it keeps
    the file near the bytes-per-token target. A BLOB in the TEXT column marks compression.
    """
    raw = text.encode("utf-8")
    if len(raw) < _COMPRESS_MIN_BYTES:
        return text
    packed = zlib.compress(raw, 6)
    return packed if len(packed) < len(raw) else text


def decode_text(value: str | bytes) -> str:
    """Inverse of :func:`encode_text`."""
    if isinstance(value, bytes):
        return zlib.decompress(value).decode("utf-8")
    return value


def _json_path(key: str) -> str:
    """A JSON path naming the top-level ``key``, quoted so that dots and brackets are literal."""
    if not isinstance(key, str) or not key:
        raise InvalidInputError(f"where keys must be non-empty strings; got {key!r}.")
    if '"' in key or any(ord(ch) < 32 or 0xD800 <= ord(ch) < 0xE000 for ch in key):
        raise InvalidInputError(
            f"where key {key!r} holds a double quote or a control character, which a SQLite "
            "JSON path cannot name; rename that metadata key to filter on it."
        )
    return f'$."{key}"'


def _condition(path: str, value: Any) -> tuple[str, list[Any]]:
    """SQL (with ? placeholders) for metadata[path] equal to ``value``, type included."""
    if value is None:
        return "json_type(metadata, ?) = 'null'", [path]
    if isinstance(value, bool):
        return "json_type(metadata, ?) = ?", [path, "true" if value else "false"]
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInputError(
                f"where value {value!r} for {path[3:-1]!r} is not a finite number; JSON metadata "
                "never holds NaN or infinity."
            )
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            value = float(value)  # SQLite reads such JSON integers as reals too
        return (
            "(json_type(metadata, ?) IN ('integer', 'real') AND json_extract(metadata, ?) = ?)",
            [path, path, value],
        )
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(
                f"where value for {path[3:-1]!r} holds a lone surrogate; it is not valid text."
            ) from None
        return "(json_type(metadata, ?) = 'text' AND json_extract(metadata, ?) = ?)", [
            path,
            path,
            value,
        ]
    raise InvalidInputError(
        f"where value {value!r} for {path[3:-1]!r} is a {type(value).__name__}; use a string, "
        "number, bool, None, or a list of those (meaning any of them)."
    )


def where_clause(where: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """Turn ``{key: value}`` (a list or tuple value means "any of") into SQL and parameters.

    Keys and values are always bound parameters; nothing the caller passes is pasted into
    the SQL text, so no key or value can change the query.

    Raises:
        InvalidInputError: ``where`` is not a dict, or holds a key or value it cannot match.
    """
    if not isinstance(where, Mapping):
        raise InvalidInputError(
            f"where must be a dict of metadata key -> value; got {type(where).__name__}."
        )
    parts: list[str] = []
    params: list[Any] = []
    for key, value in where.items():
        path = _json_path(key)
        if isinstance(value, (list, tuple)):
            if not value:
                parts.append("0")  # "any of nothing" matches nothing
                continue
            options = [_condition(path, item) for item in value]
            parts.append("(" + " OR ".join(sql for sql, _ in options) + ")")
            for _, option_params in options:
                params.extend(option_params)
        else:
            sql, option_params = _condition(path, value)
            parts.append(sql)
            params.extend(option_params)
    return (" AND ".join(parts) or "1"), params


def _chunks(items: Sequence[Any], size: int = MAX_VARIABLES) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Store:
    """An edge-colbert index file, opened for one model.

    Args:
        path: the SQLite file; created (with its parent folder) when absent, unless
            ``readonly``.
        model: the model that writes or reads it (identity, name, dimension); a new file
            records it, an existing one must have been written by it.
            ``None`` opens an existing file without checking (for ``info``, ``get``,
            ``delete``); call :meth:`check_model` before encoding anything for it.
        readonly: open with ``mode=ro``; every write raises :class:`IndexFileError`.
        timeout: seconds to wait for another writer's lock before :class:`IndexBusyError`.

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
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.timeout = float(timeout)
        exists = self.path.exists()
        if exists and not self.path.is_file():
            raise IndexFileError(f"{self.path} is a folder, not an index file; pass a file path.")
        if not exists and readonly:
            raise IndexFileError(
                f"{self.path} does not exist, so there is nothing to open read-only; create it "
                "first with a writable Index."
            )
        if exists:
            self._probe()
        elif not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._connect()
        self.db = sqlite_utils.Database(self._conn)
        try:
            self._open(model)
        except BaseException:
            self._conn.close()
            raise
        meta = self.meta()
        self.dim = int(meta["dim"])
        self.model_identity = meta.get("model_identity", "")
        self.model_name = meta.get("model_name", "")
        self._data_version = self.data_version()

    # ----------------------------------------------------------------- opening

    def _probe(self) -> None:
        """Refuse a file that is not an edge-colbert index without changing one byte of it."""
        with self.path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
        if header and header != SQLITE_HEADER:
            raise IndexFileError(
                f"{self.path} is not an edge-colbert index: not a SQLite database. Pick a new "
                "path for the index (it will be created)."
            )
        if not header:
            return  # an empty file is an empty SQLite database: it becomes a new index
        try:
            probe = sqlite3.connect(self._uri("ro"), uri=True, timeout=self.timeout)
        except sqlite3.Error as error:
            raise IndexFileError(f"{self.path} cannot be opened read-only ({error}).") from error
        try:
            tables = {row[0] for row in probe.execute("SELECT name FROM sqlite_master")}
            app = None
            if "meta" in tables:
                app = self._probe_app(probe)
        except sqlite3.DatabaseError as error:
            raise IndexFileError(
                f"{self.path} is not an edge-colbert index: not a SQLite database or damaged "
                f"({error})."
            ) from error
        finally:
            probe.close()
        if tables and app != APP:
            found = ", ".join(sorted(t for t in tables if not t.startswith("sqlite_")))
            raise IndexFileError(
                f"{self.path} is a SQLite database of another program (tables: {found}), not an "
                "edge-colbert index; it was left untouched. Pick a new path for the index."
            )

    @staticmethod
    def _probe_app(probe: sqlite3.Connection) -> str | None:
        try:
            row = probe.execute("SELECT value FROM meta WHERE key = 'app'").fetchone()
        except sqlite3.OperationalError:
            return None  # a `meta` table of another shape: another program's
        return None if row is None else str(row[0])

    def _uri(self, mode: str) -> str:
        return f"file:{quote(str(self.path.resolve()))}?mode={mode}"

    def _connect(self) -> sqlite3.Connection:
        mode = "ro" if self.readonly else "rwc"
        try:
            conn = sqlite3.connect(
                self._uri(mode), uri=True, timeout=self.timeout, isolation_level=None
            )
        except sqlite3.Error as error:
            raise IndexFileError(f"cannot open {self.path}: {error}.") from error
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        # Memory-mapped reads halve the cost of walking a blob's chain of small pages.
        conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        return conn

    def _open(self, model: ModelInfo | None) -> None:
        tables = set(self.db.table_names())
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
        raw_version = meta.get("schema_version", "")
        try:
            version = int(raw_version)
        except ValueError:
            raise IndexFileError(
                f"{self.path} records the schema version {raw_version!r}, which is not a number; "
                "the file is damaged. Re-index into a new file."
            ) from None
        if version > SCHEMA_VERSION:
            raise IndexFileError(
                f"{self.path} has index schema version {version}, newer than the "
                f"{SCHEMA_VERSION} this edge-colbert reads; upgrade edge-colbert "
                "(pip install -U edge-colbert)."
            )
        if any(step not in MIGRATIONS for step in range(version, SCHEMA_VERSION)):
            raise IndexFileError(
                f"{self.path} has schema version {version}, which this edge-colbert cannot "
                f"migrate to {SCHEMA_VERSION}; re-index into a new file."
            )
        if model is not None:
            self.check_model(model, meta)
        if not self.readonly:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
        if version < SCHEMA_VERSION:
            self._migrate(version)

    def check_model(self, model: ModelInfo, meta: Mapping[str, str] | None = None) -> None:
        """Raise :class:`ModelMismatchError` unless ``model`` wrote this file."""
        meta = self.meta() if meta is None else meta
        stored = meta.get("model_identity")
        if meta.get("dim") != str(model.dim):
            raise ModelMismatchError(
                f"{self.path} holds {meta.get('dim')}-d vectors from {stored}, but the encoder "
                f"makes {model.dim}-d vectors ({model.identity}); open it with the model that "
                "wrote it, or index into a new file."
            )
        if stored != model.identity:
            raise ModelMismatchError(
                f"{self.path} was written by the model {stored}, not {model.identity}; vectors "
                "of two models cannot be compared. Open it with the model that wrote it, or "
                "index into a new file."
            )

    def _create(self, model: ModelInfo) -> None:
        # Small pages: a document's vectors overflow into full pages and its remainder sits
        # on a leaf page, where 4 KiB pages left ~4 bytes per token unused (1 KiB: ~2).
        self._conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        with self.transaction() as conn:
            # one statement at a time: executescript would COMMIT the open transaction
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            self._set_meta(
                conn,
                {
                    "app": APP,
                    "schema_version": str(SCHEMA_VERSION),
                    "model_identity": model.identity,
                    "model_name": model.name,
                    "dim": str(model.dim),
                    "centroid_version": "0",
                    "trained_on_tokens": "0",
                },
            )
        logger.info("created index %s for %s", self.path, model.identity)

    def _migrate(self, version: int) -> None:
        if self.readonly:
            raise IndexFileError(
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
            self._set_meta(conn, {"schema_version": str(SCHEMA_VERSION)})

    # ------------------------------------------------------------ transactions

    def _error(self, error: sqlite3.Error) -> Exception:
        """The project error for a SQLite error, or the error itself."""
        text = str(error).lower()
        if "database or disk is full" in text:
            return StorageFullError(
                f"{self.path}: the disk (or the database's page limit) is full; the batch was "
                "rolled back and nothing of it was stored. Free disk space and add it again."
            )
        if "locked" in text or "busy" in text:
            return IndexBusyError(
                f"{self.path} is locked by another writer; waited {self.timeout:g} s. Let the "
                "other process finish (or close it), or open the Index with a larger timeout=."
            )
        if "readonly" in text or "read-only" in text:
            return IndexFileError(
                f"{self.path} is open read-only (or the file is not writable); open it with "
                "readonly=False to change it."
            )
        return error

    def check_writable(self) -> None:
        """Raise :class:`IndexFileError` when the index was opened read-only."""
        if self.readonly:
            raise IndexFileError(
                f"{self.path} was opened with readonly=True, so it cannot be changed; open it "
                "with readonly=False (one writer at a time) to add or delete."
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``): all of it commits, or none of it."""
        self.check_writable()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise self._error(error) from error
        try:
            yield self._conn
        except BaseException as error:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            if isinstance(error, sqlite3.Error):
                mapped = self._error(error)
                if mapped is not error:
                    raise mapped from error
            raise
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as error:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise self._error(error) from error

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees one committed state of the file."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")

    def data_version(self) -> int:
        """SQLite's ``data_version``: changes when another connection commits to the file."""
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def changed_elsewhere(self) -> bool:
        """Whether another connection committed since the last call (or since opening)."""
        version = self.data_version()
        changed = version != self._data_version
        self._data_version = version
        return changed

    @property
    def connection(self) -> sqlite3.Connection:
        """The underlying connection (for PRAGMAs in tests and tools)."""
        return self._conn

    def close(self) -> None:
        """Close the connection; SQLite checkpoints the WAL when the last one closes."""
        self._conn.close()

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
        """Number of stored token vectors."""
        return int(self._conn.execute("SELECT total(n_tokens) FROM documents").fetchone()[0])

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

    def ids(self) -> Iterator[str]:
        """Every document id, in insertion order."""
        for (doc_id,) in self._conn.execute("SELECT id FROM documents ORDER BY rowid"):
            yield str(doc_id)

    def metadata(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every (id, metadata), in insertion order."""
        for doc_id, meta in self._conn.execute("SELECT id, metadata FROM documents ORDER BY rowid"):
            yield str(doc_id), json.loads(meta)

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

        Returns:
            ``(replaced, added)``: rowids of the rows the new ones replaced (same id) and
            the rowids of the new rows, in the order of ``docs``.
        """
        replaced = list(self.rowids_of([d.id for d in docs]).values())
        self._delete_rowids(conn, replaced)
        added: list[int] = []
        for doc in docs:
            cursor = conn.execute(
                "INSERT INTO documents(id, text, metadata, n_tokens) VALUES (?, ?, ?, ?)",
                (doc.id, encode_text(doc.text), doc.metadata_json, int(doc.codes.shape[0])),
            )
            rowid = int(cursor.lastrowid or 0)
            conn.execute(
                "INSERT INTO vectors(doc, codes, scales, centroids) VALUES (?, ?, ?, ?)",
                (
                    rowid,
                    np.ascontiguousarray(doc.codes, dtype=np.int8).tobytes(),
                    np.ascontiguousarray(doc.scales, dtype="<f2").tobytes(),
                    None
                    if doc.centroids is None
                    else doc.centroids.astype(centroid_dtype).tobytes(),
                ),
            )
            added.append(rowid)
        return replaced, added

    def delete(self, conn: sqlite3.Connection, ids: Sequence[str]) -> list[int]:
        """Delete documents by id inside a transaction; returns the rowids removed."""
        rowids = list(self.rowids_of(ids).values())
        self._delete_rowids(conn, rowids)
        return rowids

    @staticmethod
    def _delete_rowids(conn: sqlite3.Connection, rowids: Sequence[int]) -> None:
        for chunk in _chunks(list(rowids)):
            marks = ",".join("?" * len(chunk))
            # vectors go by ON DELETE CASCADE
            conn.execute(f"DELETE FROM documents WHERE rowid IN ({marks})", list(chunk))

    # ---------------------------------------------------------------- vectors

    def _pack(self, rows: list[tuple[int, bytes, bytes]]) -> PackedVectors:
        rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        lengths = np.fromiter((len(r[2]) // 2 for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        codes = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.int8)
        scales = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f2").astype(np.float16)
        return PackedVectors(rowids, codes.reshape(-1, self.dim), scales, offsets)

    def vectors(self, rowids: Iterable[int]) -> PackedVectors:
        """The int8 vectors of these documents, packed and ordered by rowid."""
        wanted = sorted({int(r) for r in rowids})
        rows: list[tuple[int, bytes, bytes]] = []
        for chunk in _chunks(wanted):
            marks = ",".join("?" * len(chunk))
            rows.extend(
                self._conn.execute(
                    f"SELECT doc, codes, scales FROM vectors WHERE doc IN ({marks}) ORDER BY doc",
                    list(chunk),
                )
            )
        return self._pack(rows)

    def iter_vectors(self, max_tokens: int = 262_144) -> Iterator[PackedVectors]:
        """Every document's vectors, in packs of about ``max_tokens`` tokens, by rowid.

        Pages by rowid (keyset), so memory stays near one pack however large the file.
        """
        last = -1
        while True:
            rows: list[tuple[int, bytes, bytes]] = []
            tokens = 0
            cursor = self._conn.execute(
                "SELECT doc, codes, scales FROM vectors WHERE doc > ? ORDER BY doc", (last,)
            )
            for row in cursor:
                rows.append(row)
                tokens += len(row[2]) // 2
                if tokens >= max_tokens:
                    break
            cursor.close()
            if not rows:
                return
            last = int(rows[-1][0])
            yield self._pack(rows)

    def doc_centroids(
        self, centroid_dtype: str
    ) -> tuple[npt.NDArray[np.int64], list[npt.NDArray[np.uint32]]]:
        """Every document's stored centroid ids (rowids sorted), for building postings."""
        rowids: list[int] = []
        lists: list[npt.NDArray[np.uint32]] = []
        for rowid, blob in self._conn.execute(
            "SELECT doc, centroids FROM vectors WHERE centroids IS NOT NULL ORDER BY doc"
        ):
            rowids.append(int(rowid))
            lists.append(np.frombuffer(blob, dtype=centroid_dtype).astype(np.uint32))
        return np.asarray(rowids, dtype=np.int64), lists

    def set_doc_centroids(
        self,
        conn: sqlite3.Connection,
        rowids: Sequence[int],
        lists: Sequence[npt.NDArray[np.uint32]],
        centroid_dtype: str,
    ) -> None:
        """Store each document's unique centroid ids, inside a transaction."""
        conn.executemany(
            "UPDATE vectors SET centroids = ? WHERE doc = ?",
            [
                (np.asarray(ids).astype(centroid_dtype).tobytes(), int(rowid))
                for rowid, ids in zip(rowids, lists, strict=True)
            ],
        )

    def centroids(self) -> tuple[int, bytes] | None:
        """``(version, blob)`` of the stored centroids, or None before any training."""
        row = self._conn.execute("SELECT version, vectors FROM centroids WHERE id = 0").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def set_centroids(self, conn: sqlite3.Connection, version: int, blob: bytes) -> None:
        """Replace the centroids, inside a transaction."""
        conn.execute(
            "INSERT INTO centroids(id, version, vectors) VALUES (0, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET version = excluded.version, vectors = excluded.vectors",
            (version, blob),
        )

    def size_bytes(self) -> int:
        """Bytes on disk: the file plus its write-ahead log."""
        total = 0
        for suffix in ("", "-wal"):
            file = Path(str(self.path) + suffix)
            if file.exists():
                total += file.stat().st_size
        return total


def _document(row: tuple[Any, ...]) -> StoredDocument:
    return StoredDocument(
        rowid=int(row[0]),
        id=str(row[1]),
        text=decode_text(row[2]),
        metadata=json.loads(row[3]),
        n_tokens=int(row[4]),
    )
