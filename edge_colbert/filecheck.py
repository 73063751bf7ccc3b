"""Refuse a crafted index file before anything runs on it, and harden every connection.

An index file may come from anywhere (a download, a sync, a colleague). SQLite runs what a
file's schema says: a trigger on ``documents`` fires during our ``INSERT`` (it once rewrote
151 other texts during an ``add`` of 3), a ``meta`` *view* over an endless recursive CTE
hangs the first ``SELECT``. So before any statement touches the file's tables,
:func:`check_file` reads ``sqlite_master`` (under a time and size budget, through a
read-only, hardened connection) and compares it with exactly what this version writes:

* no trigger and no view, ever (edge-colbert writes neither);
* no table or index of anyone else: every object is one edge-colbert creates, with the SQL
  it creates it with (built by running :data:`edge_colbert.schema.SCHEMA_STATEMENTS`, the
  full-text table and every migration on an in-memory database, so the expected set follows
  the schema as it changes);
* a file of the current schema version holds exactly the current set (full-text shadow
  tables included); a file of an older version (1, 2) holds only objects of that version's
  known tables, and is checked exactly on the next open after its migration.

:func:`harden` sets what SQLite allows on every connection: ``trusted_schema=OFF`` (no
function with side effects from a schema), ``recursive_triggers=OFF``, cell size checks,
and, where Python offers ``setconfig`` (3.12+), defensive mode with triggers and views
switched off outright.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_colbert import schema
from edge_colbert.errors import EdgeColbertError, IndexFileError, StorageFullError

__all__ = [
    "CHECK_SECONDS",
    "MAX_SCHEMA_ROWS",
    "check_file",
    "harden",
    "missing_folder",
    "open_error",
    "read_only_media",
    "remove_new_file",
    "time_budget",
]

logger = logging.getLogger(__name__)

# Time budget of each statement run on a file not yet validated; reading sqlite_master of
# a real index takes well under a millisecond.
CHECK_SECONDS = 2.0
# A real index has under 20 schema objects; one with thousands was made to slow us down.
MAX_SCHEMA_ROWS = 200
# Size budget of any one value read while validating (the SQL of one schema object).
MAX_CHECK_VALUE_BYTES = 1 << 20
# Meta holds a dozen short keys; more means a crafted file (a longer value than the size
# budget is refused by SQLite itself).
MAX_META_ROWS = 1000

# The schemas earlier versions wrote, frozen: files of those versions are still opened
# (and migrated), so what they hold must stay recognizable whatever the current schema is.
_COMMON = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE documents (rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, text TEXT "
    "NOT NULL, metadata TEXT NOT NULL DEFAULT '{}', n_tokens INTEGER NOT NULL)",
    "CREATE TABLE centroids (id INTEGER PRIMARY KEY CHECK (id = 0), version INTEGER NOT NULL, "
    "vectors BLOB NOT NULL)",
)
FROZEN_SCHEMAS: dict[int, tuple[str, ...]] = {
    1: (
        *_COMMON,
        "CREATE TABLE vectors (doc INTEGER PRIMARY KEY REFERENCES documents(rowid) ON DELETE "
        "CASCADE, codes BLOB NOT NULL, scales BLOB NOT NULL, centroids BLOB)",
    ),
    2: (
        *_COMMON,
        "CREATE TABLE vectors (doc INTEGER PRIMARY KEY REFERENCES documents(rowid) ON DELETE "
        "CASCADE, codes BLOB NOT NULL, centroids BLOB)",
    ),
    3: (
        *_COMMON,
        "CREATE TABLE vectors (doc INTEGER PRIMARY KEY REFERENCES documents(rowid) ON DELETE "
        "CASCADE, codes BLOB NOT NULL, crc INTEGER NOT NULL)",
        "CREATE TABLE doc_centroids (doc INTEGER PRIMARY KEY REFERENCES documents(rowid) ON "
        "DELETE CASCADE, ids BLOB NOT NULL)",
    ),
    4: (
        *_COMMON[:2],
        "CREATE TABLE centroids (id INTEGER PRIMARY KEY CHECK (id = 0), version INTEGER NOT "
        "NULL, vectors BLOB NOT NULL, buckets BLOB)",
        "CREATE TABLE vectors (doc INTEGER PRIMARY KEY REFERENCES documents(rowid) ON DELETE "
        "CASCADE, codes BLOB NOT NULL, crc INTEGER NOT NULL)",
        "CREATE TABLE doc_centroids (doc INTEGER PRIMARY KEY REFERENCES documents(rowid) ON "
        "DELETE CASCADE, ids BLOB NOT NULL)",
    ),
}

# (type, name, tbl_name, normalized sql)
SchemaRow = tuple[str, str, str, str | None]


def normalize_sql(sql: str | None) -> str | None:
    """SQL text as compared: case, spacing and quotes around plain identifiers ignored.

    SQLite stores the ``CREATE`` text as written, and rewrites the name on ``ALTER TABLE
    ... RENAME`` (as ``"vectors"``), so a migrated table differs from a new one only there.
    """
    if sql is None:
        return None
    text = re.sub(r'"(\w+)"', r"\1", sql)
    text = re.sub(r"\s+", " ", text).strip().lower()
    return re.sub(r"\s*([(),=])\s*", r"\1", text)


def harden(conn: sqlite3.Connection) -> None:
    """Set the safety switches SQLite offers on ``conn`` (before it reads anything).

    ``trusted_schema=OFF`` stops a schema from calling functions with side effects;
    ``recursive_triggers=OFF`` (sqlite-utils turns it on); ``cell_size_check`` finds some
    damaged pages before they are used. On Python 3.12+ also ``SQLITE_DBCONFIG_DEFENSIVE``
    (no writes to the schema table or shadow tables of virtual tables through SQL) and
    triggers and views disabled.
    """
    conn.execute("PRAGMA trusted_schema = OFF")
    conn.execute("PRAGMA recursive_triggers = OFF")
    conn.execute("PRAGMA cell_size_check = ON")
    setconfig = getattr(conn, "setconfig", None)
    if setconfig is not None:
        for name, value in (
            ("SQLITE_DBCONFIG_DEFENSIVE", True),
            ("SQLITE_DBCONFIG_ENABLE_TRIGGER", False),
            ("SQLITE_DBCONFIG_ENABLE_VIEW", False),
            ("SQLITE_DBCONFIG_TRUSTED_SCHEMA", False),
        ):
            option = getattr(sqlite3, name, None)
            if option is not None:
                setconfig(option, value)


def limit_value_bytes(conn: sqlite3.Connection, most: int) -> None:
    """Make SQLite refuse ("string or blob too big") any text or blob over ``most`` bytes on
    ``conn`` (Python 3.11+; on 3.10 the checks' time budget alone bounds them)."""
    setlimit = getattr(conn, "setlimit", None)
    option = getattr(sqlite3, "SQLITE_LIMIT_LENGTH", None)
    if setlimit is not None and option is not None:
        setlimit(option, most)


@contextmanager
def time_budget(conn: sqlite3.Connection, seconds: float) -> Iterator[None]:
    """Interrupt any statement on ``conn`` that runs longer than ``seconds`` (SQLite raises
    ``OperationalError: interrupted``)."""
    deadline = time.monotonic() + seconds

    def over() -> int:
        return 1 if time.monotonic() > deadline else 0

    conn.set_progress_handler(over, 10_000)
    try:
        yield
    finally:
        conn.set_progress_handler(None, 0)


def _rows(conn: sqlite3.Connection) -> list[SchemaRow]:
    return [
        (str(t), str(n), str(tb), normalize_sql(sql))
        for t, n, tb, sql in conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")
    ]


def _fts_statements() -> list[str | None]:
    """The full-text table's ``CREATE`` for every tokenizer this version may choose, or
    ``[None]`` before the schema had one."""
    statement = getattr(schema, "fts_statement", None)
    if statement is None:
        return [None]
    tokenizers = [getattr(schema, n, None) for n in ("FTS_ENGLISH", "FTS_MULTILINGUAL")]
    return [statement(t) for t in tokenizers if isinstance(t, str)] or [None]


def _build(
    statements: tuple[str, ...], *, migrate_from: int | None, fts: str | None
) -> set[SchemaRow]:
    """The schema rows of an in-memory database made by ``statements``, then (when
    ``migrate_from`` is set) every migration to the current version and the full-text
    table a migration adds."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
        if migrate_from is not None:
            for step in range(migrate_from, schema.SCHEMA_VERSION):
                schema.MIGRATIONS[step](conn)
        if fts is not None:
            conn.execute(fts)
        return set(_rows(conn))
    finally:
        conn.close()


@functools.lru_cache(maxsize=1)
def expected_schemas() -> tuple[tuple[frozenset[SchemaRow], ...], dict[str, set[SchemaRow]]]:
    """What this version accepts: the exact sets a current-version file may hold (new, or
    migrated from each older version; per full-text tokenizer), and for every object name
    any version may hold, its known rows (for older-version files)."""
    exact: list[frozenset[SchemaRow]] = []
    known: dict[str, set[SchemaRow]] = {}
    for fts in _fts_statements():
        exact.append(frozenset(_build(schema.SCHEMA_STATEMENTS, migrate_from=None, fts=fts)))
        for version, statements in FROZEN_SCHEMAS.items():
            if version >= schema.SCHEMA_VERSION:
                continue
            try:
                migrated = _build(statements, migrate_from=version, fts=fts)
            except (sqlite3.Error, KeyError) as error:  # a migration that needs real rows
                logger.debug("cannot replay migration from %d in memory: %s", version, error)
                continue
            exact.append(frozenset(migrated))
    for version, statements in FROZEN_SCHEMAS.items():
        if version < schema.SCHEMA_VERSION:
            exact_old = _build(statements, migrate_from=None, fts=None)
            for row in exact_old:
                known.setdefault(row[1], set()).add(row)
    for rows in exact:
        for row in rows:
            known.setdefault(row[1], set()).add(row)
    return tuple(exact), known


def _refuse(path: Path, what: str) -> IndexFileError:
    return IndexFileError(
        f"{path} {what}; edge-colbert never writes that, so the file is another program's or "
        "was crafted. It was refused and left untouched: open only indexes you trust, or "
        "re-index your documents into a new file."
    )


def check_file(path: Path, *, seconds: float = CHECK_SECONDS) -> None:
    """Refuse ``path`` unless its schema is one this version writes (see the module doc).

    Opens its own read-only, hardened connection; every statement runs under a time budget
    of ``seconds`` and reads values of at most :data:`MAX_CHECK_VALUE_BYTES`. An empty
    database passes (it becomes a new index).

    Raises:
        IndexFileError: damaged, another program's database, or a schema with triggers,
            views or objects edge-colbert does not write; or the checks ran out of time.
    """
    try:
        conn = sqlite3.connect(schema.sqlite_uri(path, "ro"), uri=True, isolation_level=None)
    except sqlite3.Error as error:
        raise open_error(path, error, readonly=True) or IndexFileError(
            f"{path} cannot be opened read-only ({error})."
        ) from error
    try:
        limit_value_bytes(conn, MAX_CHECK_VALUE_BYTES)
        with time_budget(conn, seconds):
            harden(conn)
            _check(conn, path)
    except sqlite3.DataError as error:  # a value over the size budget: "too big"
        raise _refuse(path, f"holds a value over {MAX_CHECK_VALUE_BYTES >> 20} MiB") from error
    except sqlite3.OperationalError as error:
        if "interrupted" in str(error):
            raise IndexFileError(
                f"{path}: checking the file took longer than {seconds:g} s, which an "
                "edge-colbert index never does; it was refused and left untouched."
            ) from error
        raise open_error(path, error, readonly=True) or _damaged(path, error) from error
    except sqlite3.Error as error:
        raise _damaged(path, error) from error
    finally:
        conn.close()


def read_only_media(path: Path) -> bool:
    """Whether ``path`` sits on read-only media (a read-only file system, or a folder this
    process cannot write) with no write-ahead log left to replay.

    SQLite cannot open a WAL database there at all, even read-only: it needs to create the
    ``-shm`` file. Such a file, cleanly closed (its ``-wal`` absent or empty), cannot change
    under us, so it is opened ``immutable=1``: no locks, no ``-shm``.
    """
    folder = path.resolve().parent
    statvfs = getattr(os, "statvfs", None)  # not on Windows: there, the access check alone
    try:
        flags = statvfs(folder).f_flag if statvfs is not None else 0
    except OSError:
        return False
    read_only = bool(flags & getattr(os, "ST_RDONLY", 0))
    if not read_only and os.access(folder, os.W_OK):
        return False
    wal = Path(str(path) + "-wal")
    return not wal.exists() or wal.stat().st_size == 0


def missing_folder(path: Path) -> IndexFileError:
    """The error for an index path whose folder does not exist (it is not created: a typo in
    a path must not scatter folders)."""
    return IndexFileError(
        f"the folder {path.parent} does not exist, so {path.name} cannot be created in it; "
        f"create the folder first (mkdir -p {path.parent}) or pick another path."
    )


def remove_new_file(path: Path) -> None:
    """Remove an index file this process has just created, with its ``-wal``, ``-shm`` and
    ``-journal``, after creating it failed (a full disk left a 0-byte file behind)."""
    for suffix in ("-wal", "-shm", "-journal", ""):
        try:
            Path(str(path) + suffix).unlink()
        except FileNotFoundError:
            continue
        except OSError as error:  # read-only media: nothing was created there anyway
            logger.debug("could not remove %s%s: %s", path, suffix, error)


def open_error(path: Path, error: sqlite3.Error, *, readonly: bool) -> EdgeColbertError | None:
    """The error for SQLite failing to open, read or write the file itself (permissions,
    read-only media, a full or failing disk), or None for any other error.

    These used to read "not a SQLite database or damaged", which could make a person delete
    a good index.
    """
    text = str(error).lower()
    if "disk i/o error" in text or "database or disk is full" in text:
        try:
            free = shutil.disk_usage(path.resolve().parent).free
        except OSError:
            free = -1
        if 0 <= free < 64 << 20 or "full" in text:
            return StorageFullError(
                f"{path}: the disk is full ({free / 1e6:.1f} MB free); nothing was changed. "
                "Free disk space and try again."
            )
        return IndexFileError(
            f"{path}: the disk reported an I/O error (SQLite: {error}); the disk may be "
            "failing or was removed. Check it, then run `edge-colbert check` on the index."
        )
    if "unable to open database file" in text or "readonly" in text or "read-only" in text:
        if readonly:
            return IndexFileError(
                f"{path} cannot be opened: its folder is not readable, or it lies on read-only "
                f"media with an unfinished write-ahead log ({path}-wal). Open it once where it "
                "can be written, or copy the folder to a writable place."
            )
        return IndexFileError(
            f"{path} cannot be written: the file, its folder or the file system is read-only "
            f"(SQLite: {error}). Open it with readonly=True (CLI: search and info) to search "
            "it, or copy it to a writable folder to change it."
        )
    return None


def _damaged(path: Path, error: sqlite3.Error) -> IndexFileError:
    return IndexFileError(
        f"{path} is not an edge-colbert index: not a SQLite database or damaged ({error}). "
        "If it was an index, restore it from a backup (edge-colbert backup) or run "
        "`edge-colbert check` on it."
    )


def _check(conn: sqlite3.Connection, path: Path) -> None:
    cursor = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")
    raw = cursor.fetchmany(MAX_SCHEMA_ROWS + 1)
    cursor.close()
    if len(raw) > MAX_SCHEMA_ROWS:
        raise _refuse(path, f"has more than {MAX_SCHEMA_ROWS} schema objects")
    rows = [(str(t), str(n), str(tb), normalize_sql(sql)) for t, n, tb, sql in raw]
    if not rows:
        return  # an empty database becomes a new index
    for kind, name, table, _ in rows:
        if kind in ("trigger", "view"):
            raise _refuse(path, f"holds a {kind} {name!r} (on {table!r})")
    exact, known = expected_schemas()
    meta_rows = known.get("meta", set())
    if not any(row in meta_rows for row in rows):
        names = ", ".join(sorted(n for k, n, _, _ in rows if k == "table"))
        raise IndexFileError(
            f"{path} is a SQLite database of another program (tables: {names}), not an "
            "edge-colbert index; it was left untouched. Pick a new path for the index."
        )
    (meta_count,) = conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM meta LIMIT {MAX_META_ROWS + 1})"
    ).fetchone()
    if meta_count > MAX_META_ROWS:
        raise _refuse(path, f"has more than {MAX_META_ROWS} meta rows")
    app = conn.execute("SELECT value FROM meta WHERE key = 'app'").fetchone()
    if app is None or app[0] != schema.APP:
        names = ", ".join(sorted(n for k, n, _, _ in rows if k == "table"))
        raise IndexFileError(
            f"{path} is a SQLite database of another program (tables: {names}), not an "
            "edge-colbert index; it was left untouched. Pick a new path for the index."
        )
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if version is not None and _integer_in(version[0], schema.SCHEMA_VERSION + 1, 10**6):
        return  # a newer edge-colbert's file: schema_version() says "upgrade", untouched
    foreign = [row for row in rows if row not in known.get(row[1], set()) and not _stat(row)]
    if foreign:
        kind, name, table, _ = foreign[0]
        if name in known:
            raise _refuse(path, f"defines the {kind} {name!r} otherwise than edge-colbert does")
        raise _refuse(path, f"holds the {kind} {name!r} (on {table!r}) of someone else")
    _check_meta(conn, path)
    if version is None or str(version[0]) != str(schema.SCHEMA_VERSION):
        return  # older (each object known above) or unreadable: schema_version() says
    have = frozenset(row for row in rows if not _stat(row))
    if have not in exact:
        closest = min(exact, key=lambda rows: len(rows ^ have))
        missing = sorted(r[1] for r in closest - have)
        extra = sorted(r[1] for r in have - closest)
        raise _refuse(
            path,
            f"does not hold the schema version {schema.SCHEMA_VERSION} writes "
            f"(missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(extra) or 'none'})",
        )


# Meta keys holding counts or marks: non-negative integers that fit SQLite (with room to
# add to them), when present.
_COUNT_KEYS = ("rowid_high", "tokens", "trained_on_tokens", "centroid_version")
MAX_COUNT = 2**62


def _check_meta(conn: sqlite3.Connection, path: Path) -> None:
    """The meta values everything else trusts: ``dim`` and the counts, as integers in range
    (``rowid_high`` 2**63-1 made the next insert overflow)."""
    meta = {str(k): v for k, v in conn.execute("SELECT key, value FROM meta")}
    dim = meta.get(schema.META_DIM)
    if not _integer_in(dim, 1, 8192):
        raise IndexFileError(
            f"{path} records the vector dimension {dim!r}, not a number from 1 to 8192: the "
            "file is damaged or was crafted. Re-index into a new file."
        )
    tokenizers = {getattr(schema, n, None) for n in ("FTS_ENGLISH", "FTS_MULTILINGUAL")}
    for key, allowed in (("centroid_ids", {"uint16", "uint32"}), ("fts_tokenizer", tokenizers)):
        if key in meta and meta[key] not in allowed:
            raise IndexFileError(
                f"{path} records {key} = {str(meta[key])[:40]!r}, which edge-colbert never "
                "writes: the file is damaged or was crafted. Re-index into a new file."
            )
    for key in _COUNT_KEYS:
        if key in meta and not _integer_in(meta[key], 0, MAX_COUNT):
            raise IndexFileError(
                f"{path} records {key} = {str(meta[key])[:40]!r}, not a count from 0 to "
                f"{MAX_COUNT}: the file is damaged or was crafted. Run `edge-colbert repair "
                f"{path}` or re-index into a new file."
            )


def _integer_in(value: object, low: int, high: int) -> bool:
    text = str(value) if isinstance(value, (str, int)) else ""
    return text.isascii() and text.isdigit() and len(text) < 20 and low <= int(text) <= high


def _stat(row: SchemaRow) -> bool:
    """SQLite's own statistics tables (``ANALYZE``, ``PRAGMA optimize``) are allowed."""
    return row[0] == "table" and row[1] in ("sqlite_stat1", "sqlite_stat4")
