"""What an edge-colbert file is: its schema, its ``meta`` keys, and the checks that refuse
a file this code must not touch.

:func:`probe_file` looks at an existing file through a read-only connection *before*
anything opens it for writing, so a refused file (not SQLite, another program's database)
is never modified. :func:`schema_version` and :func:`check_model` then refuse a newer schema
or another model; :data:`MIGRATIONS` lists the steps from an older schema to this one.
"""

from __future__ import annotations

import logging
import sqlite3
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from edge_colbert.errors import IndexFileError, ModelMismatchError

__all__ = [
    "APP",
    "MIGRATIONS",
    "SCHEMA_STATEMENTS",
    "SCHEMA_VERSION",
    "Migration",
    "ModelInfo",
    "check_model",
    "fts_statement",
    "fts_tokenizer",
    "initial_meta",
    "probe_file",
    "schema_version",
    "sqlite_uri",
]

logger = logging.getLogger(__name__)

APP = "edge-colbert"
SCHEMA_VERSION = 5
SQLITE_HEADER = b"SQLite format 3\x00"

# meta keys (all values are TEXT)
META_APP = "app"
META_SCHEMA_VERSION = "schema_version"
META_MODEL_IDENTITY = "model_identity"
META_MODEL_NAME = "model_name"
META_DIM = "dim"
# Schema 1-2 only: the centroid version now lives in the centroids row alone.
META_CENTROID_VERSION = "centroid_version"
META_TRAINED_ON_TOKENS = "trained_on_tokens"
# Stored token vectors in all documents, kept in the transaction that changes them.
META_TOKENS = "tokens"
# How token vectors are coded, and how many tokens were pooled into one (1: none).
META_CODEC = "codec"
META_POOL_FACTOR = "pool_factor"
# The FTS5 tokenizer of documents_fts (from the model's languages, fixed at creation).
META_FTS_TOKENIZER = "fts_tokenizer"
FTS_ENGLISH = "porter unicode61"
FTS_MULTILINGUAL = "unicode61 remove_diacritics 2"
META_CENTROID_IDS = "centroid_ids"
# Highest rowid ever given to a document. Rowids are never reused (see Store.insert), so a
# reader that has seen rowids up to r loads only the rows above r after another commit.
META_ROWID_HIGH = "rowid_high"

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
    crc INTEGER NOT NULL
);
CREATE TABLE centroid_lists (
    last INTEGER PRIMARY KEY,
    rowids BLOB NOT NULL,
    sizes BLOB NOT NULL,
    ids BLOB NOT NULL
);
CREATE TABLE centroids (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    version INTEGER NOT NULL,
    vectors BLOB NOT NULL,
    buckets BLOB
);
"""

# The chunked centroid lists (schema 5); the 4 -> 5 migration creates the same table.
_CENTROID_LISTS = next(s.strip() for s in _SCHEMA.split(";") if "centroid_lists" in s)

# One statement at a time: executescript would COMMIT the transaction they run in.
SCHEMA_STATEMENTS: tuple[str, ...] = tuple(s.strip() for s in _SCHEMA.split(";") if s.strip())


def fts_statement(tokenizer: str) -> str:
    """The FTS5 table over the documents' text.

    Contentless (``content=''``): it holds the index only, not a second copy of the text,
    which ``documents`` keeps zlib-compressed (an external-content table would read that
    BLOB as its text). Rows are removed with FTS5's ``'delete'`` command and the original
    text, which works on SQLite 3.37 (``contentless_delete`` needs 3.43). ``detail=full``
    keeps term frequencies and positions: BM25 and phrase queries need them.
    """
    if tokenizer not in (FTS_ENGLISH, FTS_MULTILINGUAL):
        raise IndexFileError(
            f"unknown full-text tokenizer {tokenizer!r}; the file is damaged. Re-index into a "
            "new file."
        )
    return (
        f"CREATE VIRTUAL TABLE documents_fts USING fts5(text, content='', tokenize='{tokenizer}')"
    )


def fts_tokenizer(languages: Sequence[str]) -> str:
    """Porter stemming for English models (or when the languages are unknown), Unicode
    folding without stemming for multilingual ones."""
    if not languages or all(lang.lower().split("-")[0] == "en" for lang in languages):
        return FTS_ENGLISH
    return FTS_MULTILINGUAL


# Migration from schema version v to v + 1, run inside one transaction on open.
Migration = Callable[[sqlite3.Connection], None]


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Version 2 drops the per-token float16 scales: codes alone give each unit vector.

    The table is rebuilt rather than altered with ``DROP COLUMN``, which needs SQLite 3.35
    and some Python builds link an older one. Codes, centroid ids and rowids are kept as
    they are, so postings and the mirror of any reader stay valid; the freed pages are
    reused by later writes (``VACUUM`` returns them to the file system).
    """
    conn.execute(
        "CREATE TABLE vectors_v2 ("
        "doc INTEGER PRIMARY KEY REFERENCES documents(rowid) ON DELETE CASCADE, "
        "codes BLOB NOT NULL, centroids BLOB)"
    )
    conn.execute(
        "INSERT INTO vectors_v2(doc, codes, centroids) SELECT doc, codes, centroids FROM vectors"
    )
    conn.execute("DROP TABLE vectors")
    conn.execute("ALTER TABLE vectors_v2 RENAME TO vectors")


def _migrate_2_to_3(conn: sqlite3.Connection) -> None:
    """Version 3: a crc32 per vector blob, centroid ids in their own table, the token count,
    codec and pool factor in ``meta``, one home for the centroid version (the centroids row)
    and for the highest rowid (``meta``), and the FTS5 table (filled by the caller, which
    can decode the compressed texts: :meth:`Store._migrate`)."""
    conn.create_function("crc32", 1, _crc32, deterministic=True)
    conn.execute(
        "CREATE TABLE vectors_v3 ("
        "doc INTEGER PRIMARY KEY REFERENCES documents(rowid) ON DELETE CASCADE, "
        "codes BLOB NOT NULL, crc INTEGER NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE doc_centroids ("
        "doc INTEGER PRIMARY KEY REFERENCES documents(rowid) ON DELETE CASCADE, "
        "ids BLOB NOT NULL)"
    )
    conn.execute(
        "INSERT INTO vectors_v3(doc, codes, crc) SELECT doc, codes, crc32(codes) FROM vectors"
    )
    conn.execute(
        "INSERT INTO doc_centroids(doc, ids) SELECT doc, centroids FROM vectors "
        "WHERE centroids IS NOT NULL"
    )
    conn.execute("DROP TABLE vectors")
    conn.execute("ALTER TABLE vectors_v3 RENAME TO vectors")
    conn.execute(
        "INSERT INTO meta(key, value) SELECT ?, CAST(max(coalesce((SELECT max(rowid) FROM "
        "documents), 0), coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?), 0)) "
        "AS TEXT) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (META_ROWID_HIGH, META_ROWID_HIGH),
    )
    conn.execute(
        "INSERT INTO meta(key, value) SELECT ?, CAST(total(n_tokens) AS INTEGER) FROM documents "
        "WHERE 1 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (META_TOKENS,),
    )
    conn.executemany(
        "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
        [(META_CODEC, "int8"), (META_POOL_FACTOR, "1")],
    )
    conn.execute("DELETE FROM meta WHERE key = ?", (META_CENTROID_VERSION,))


def _migrate_3_to_4(conn: sqlite3.Connection) -> None:
    """Version 4: the centroids row gains ``buckets``, the residual codes' bucket cut-offs
    and values of that centroid version (NULL in an int8 file, which is otherwise left as
    it is: its codes, postings and full-text index stay valid)."""
    conn.execute("ALTER TABLE centroids ADD COLUMN buckets BLOB")


def _migrate_4_to_5(conn: sqlite3.Connection) -> None:
    """Version 5: each document's centroid ids move from one ``doc_centroids`` row per
    document into ``centroid_lists``, chunks of many documents (see
    :mod:`edge_colbert.centroid_lists`), so opening a million-document index reads 3,907
    rows where it read a million. The id blobs are copied byte for byte, in rowid order:
    the postings are the same. Rows are read in pages, so memory stays near one page of
    lists."""
    from edge_colbert import centroid_lists  # it builds on the read guard, which needs this

    conn.execute(_CENTROID_LISTS)
    last = -1
    while True:
        rows = conn.execute(
            "SELECT doc, ids FROM doc_centroids WHERE doc > ? ORDER BY doc LIMIT ?",
            (last, _MIGRATE_PAGE),
        ).fetchall()
        if not rows:
            break
        last = int(rows[-1][0])
        rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        blobs = [bytes(r[1]) for r in rows]
        # Dropped as they are copied: the next page's chunks reuse the freed pages, so
        # the file does not grow by a second copy of the lists.
        conn.execute("DELETE FROM doc_centroids WHERE doc <= ?", (last,))
        centroid_lists.append(conn, rowids, blobs)
    conn.execute("DROP TABLE doc_centroids")


# Documents read per step of the 4 -> 5 migration (a multiple of the chunk size).
_MIGRATE_PAGE = 1 << 16


def _crc32(blob: bytes) -> int:
    return zlib.crc32(blob)


MIGRATIONS: dict[int, Migration] = {
    1: _migrate_1_to_2,
    2: _migrate_2_to_3,
    3: _migrate_3_to_4,
    4: _migrate_4_to_5,
}


@dataclass(frozen=True)
class ModelInfo:
    """What an index records about its model: ``Encoder.identity``, name and dimension."""

    identity: str
    name: str
    dim: int
    # The identity an older edge-colbert recorded for this same model (name, dimension and
    # graph hash, before the preprocessing hash), accepted on opening a file written then.
    legacy_identity: str | None = None
    # The model's languages (its manifest's); they choose the full-text tokenizer.
    languages: tuple[str, ...] = ()


def initial_meta(model: ModelInfo) -> dict[str, str]:
    """The ``meta`` rows of a new, empty index for ``model``."""
    return {
        META_APP: APP,
        META_SCHEMA_VERSION: str(SCHEMA_VERSION),
        META_MODEL_IDENTITY: model.identity,
        META_MODEL_NAME: model.name,
        META_DIM: str(model.dim),
        META_TRAINED_ON_TOKENS: "0",
        META_TOKENS: "0",
        META_ROWID_HIGH: "0",
        META_CODEC: "int8",
        META_POOL_FACTOR: "1",
        META_FTS_TOKENIZER: fts_tokenizer(model.languages),
    }


def sqlite_uri(path: Path, mode: str) -> str:
    """A ``file:`` URI for ``path`` with SQLite's ``mode`` (``ro``, ``rw``, ``rwc``); ``ro``
    on read-only media adds ``immutable=1`` (see :func:`filecheck.read_only_media`)."""
    from edge_colbert.filecheck import read_only_media  # filecheck builds on this module

    immutable = "&immutable=1" if mode == "ro" and read_only_media(path) else ""
    return f"file:{quote(str(path.resolve()))}?mode={mode}{immutable}"


def probe_file(path: Path, timeout: float) -> None:
    """Refuse an existing file that is not an edge-colbert index, without changing a byte.

    An empty file, or a SQLite database without tables, passes: it becomes a new index.

    Raises:
        IndexFileError: not a SQLite database, damaged, or another program's database.
    """
    with path.open("rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        raise IndexFileError(
            f"{path} is not an edge-colbert index: not a SQLite database. Pick a new "
            "path for the index (it will be created)."
        )
    if not header:
        return  # an empty file is an empty SQLite database: it becomes a new index
    from edge_colbert.filecheck import check_file  # filecheck builds on this module

    check_file(path)  # no trigger, view or foreign object; time and size budgets
    try:
        probe = sqlite3.connect(sqlite_uri(path, "ro"), uri=True, timeout=timeout)
    except sqlite3.Error as error:
        raise IndexFileError(f"{path} cannot be opened read-only ({error}).") from error
    try:
        tables = {row[0] for row in probe.execute("SELECT name FROM sqlite_master")}
        app = _probe_app(probe) if "meta" in tables else None
    except sqlite3.DatabaseError as error:
        raise IndexFileError(
            f"{path} is not an edge-colbert index: not a SQLite database or damaged ({error})."
        ) from error
    finally:
        probe.close()
    if tables and app != APP:
        found = ", ".join(sorted(t for t in tables if not t.startswith("sqlite_")))
        raise IndexFileError(
            f"{path} is a SQLite database of another program (tables: {found}), not an "
            "edge-colbert index; it was left untouched. Pick a new path for the index."
        )


def _probe_app(probe: sqlite3.Connection) -> str | None:
    """The ``app`` meta value, or None when ``meta`` has another shape (another program's)."""
    try:
        row = probe.execute("SELECT value FROM meta WHERE key = 'app'").fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None else str(row[0])


def schema_version(path: Path, meta: Mapping[str, str]) -> int:
    """The file's schema version, checked: this code reads it, or can migrate it.

    Raises:
        IndexFileError: the version is not a number, newer than :data:`SCHEMA_VERSION`
            ("upgrade"), or older with no path in :data:`MIGRATIONS`.
    """
    raw = meta.get(META_SCHEMA_VERSION, "")
    try:
        version = int(raw)
    except ValueError:
        raise IndexFileError(
            f"{path} records the schema version {raw!r}, which is not a number; "
            "the file is damaged. Re-index into a new file."
        ) from None
    if version > SCHEMA_VERSION:
        raise IndexFileError(
            f"{path} has index schema version {version}, newer than the "
            f"{SCHEMA_VERSION} this edge-colbert reads; upgrade edge-colbert "
            "(pip install -U edge-colbert)."
        )
    if any(step not in MIGRATIONS for step in range(version, SCHEMA_VERSION)):
        raise IndexFileError(
            f"{path} has schema version {version}, which this edge-colbert cannot "
            f"migrate to {SCHEMA_VERSION}; re-index into a new file."
        )
    return version


def check_model(path: Path, model: ModelInfo, meta: Mapping[str, str]) -> None:
    """Raise :class:`ModelMismatchError` unless ``model`` wrote the file ``meta`` describes."""
    stored = meta.get(META_MODEL_IDENTITY)
    if meta.get(META_DIM) != str(model.dim):
        raise ModelMismatchError(
            f"{path} holds {meta.get(META_DIM)}-d vectors from {stored}, but the encoder "
            f"makes {model.dim}-d vectors ({model.identity}); open it with the model that "
            "wrote it, or index into a new file."
        )
    if stored != model.identity and (stored is None or stored != model.legacy_identity):
        raise ModelMismatchError(
            f"{path} was written by the model {stored}, not {model.identity}; vectors "
            "of two models cannot be compared. Open it with the model that wrote it, or "
            "index into a new file."
        )
