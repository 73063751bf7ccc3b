"""Each document's unique centroid ids, stored in chunks of documents (schema 5).

The prefilter's postings are built from these lists, and opening an index reads all of
them. Schema 4 kept one row per document (``doc_centroids``); at a million documents,
SQLite stepping through a million small rows was most of the open (0.3 s for a bare
``count(*)`` over them, 0.75 s to aggregate them). Here one row of ``centroid_lists``
holds the lists of up to :data:`CHUNK_DOCS` consecutive documents:

* ``last``: the key, an upper bound of the chunk's rowids; the chunk holds rowids in
  ``(previous chunk's last, last]``, increasing;
* ``rowids``: the documents' rowids, little-endian int64;
* ``sizes``: the byte length of each document's id list, little-endian uint32 (bytes, not
  ids, so that removing or moving a list never needs the id width);
* ``ids``: the lists one after another, as ``uint16`` or ``uint32`` (meta ``centroid_ids``).

Rowids are never reused (:meth:`Store.insert`), so a new document always goes after the
last chunk: into the tail chunk while it has room, else a new one. Deleting rewrites the
chunks that held the deleted rowids; retraining rewrites them all. Every function runs
on the caller's connection; the writing ones inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from edge_colbert.readguard import BadRowError

__all__ = [
    "CHUNK_DOCS",
    "TABLE",
    "append",
    "count_unlisted",
    "read",
    "remove",
    "rows",
    "write_all",
]

TABLE = "centroid_lists"
# Documents per chunk. At a million documents (24 uint16 ids each) reading every list
# took 91 CPU-ms with 256 (3,907 rows), 71 with 1,024, 350 as one row a document; a
# one-document add into a half-full tail chunk writes 11 KiB of it to the WAL with 256,
# 34 KiB with 1,024, and deleting one document 33 against 127 KiB: 20 ms of open buy
# 3-4x smaller small writes (benchmarks/centroid_chunks.py, docs/benchmarks.md).
CHUNK_DOCS = 256
_ROWID = np.dtype("<i8")
_SIZE = np.dtype("<u4")
# A document's rowids are positive (see Store.insert): the first chunk's lower bound.
_FIRST_LOWER = 0

Flat = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.unsignedinteger]]


_Chunk = tuple[int, bytes, bytes, bytes]  # (last, rowids, sizes, ids) as SQLite gives them


def _checked(
    chunks: Sequence[_Chunk], lower: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The rowids and byte sizes of consecutive ``chunks`` (keys rising, the first above
    ``lower``), and each rowid's chunk number, checked against the chunks' key ranges and
    id blobs with numpy over all of them at once: a Python step per chunk cost 25 us, a
    third of the open's read at 1,024 documents a chunk.

    Raises:
        BadRowError: a chunk is not one this module wrote (damaged or crafted).
    """
    count = len(chunks)
    keys = np.fromiter((int(c[0]) for c in chunks), dtype=np.int64, count=count)
    rowid_bytes = np.fromiter((len(c[1]) for c in chunks), dtype=np.int64, count=count)
    size_bytes = np.fromiter((len(c[2]) for c in chunks), dtype=np.int64, count=count)
    id_bytes = np.fromiter((len(c[3]) for c in chunks), dtype=np.int64, count=count)
    _first_bad(
        keys,
        (rowid_bytes % _ROWID.itemsize) | (size_bytes % _SIZE.itemsize),
        "its rowids or sizes are not whole numbers",
    )
    docs = rowid_bytes // _ROWID.itemsize
    bad = docs != size_bytes // _SIZE.itemsize
    if bad.any():
        at = int(np.argmax(bad))
        raise BadRowError(
            TABLE,
            int(keys[at]),
            f"{int(docs[at])} rowids but {int(size_bytes[at]) // 4} list sizes",
        )
    rowids = np.frombuffer(b"".join(c[1] for c in chunks), dtype=_ROWID).astype(np.int64)
    sizes = np.frombuffer(b"".join(c[2] for c in chunks), dtype=_SIZE).astype(np.int64)
    chunk_of = np.repeat(np.arange(count), docs)
    sums = np.bincount(chunk_of, weights=sizes, minlength=count).astype(np.int64)
    bad = sums != id_bytes
    if bad.any():
        at = int(np.argmax(bad))
        raise BadRowError(
            TABLE,
            int(keys[at]),
            f"the list sizes add up to {int(sums[at])} bytes, not {int(id_bytes[at])}",
        )
    falling = np.flatnonzero(rowids[1:] <= rowids[:-1]) + 1
    inside = chunk_of[falling] == chunk_of[falling - 1]
    if inside.any():
        raise BadRowError(
            TABLE, int(keys[chunk_of[falling[inside][0]]]), "its rowids are not increasing"
        )
    lowers = np.concatenate([[lower], keys[:-1]])
    outside = (rowids <= lowers[chunk_of]) | (rowids > keys[chunk_of])
    if outside.any():
        at = int(chunk_of[int(np.argmax(outside))])
        first = int(rowids[np.argmax(chunk_of == at)])
        last = int(rowids[len(chunk_of) - 1 - np.argmax(chunk_of[::-1] == at)])
        raise BadRowError(
            TABLE,
            int(keys[at]),
            f"rowids {first}..{last} outside its range ({int(lowers[at])}, {int(keys[at])}]",
        )
    return rowids, sizes, chunk_of


def _decode(
    key: int, rowids: bytes, sizes: bytes, ids: bytes, lower: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """One chunk's rowids and byte sizes, checked (:func:`_checked`) against its key range
    ``(lower, key]`` and its id blob.

    Raises:
        BadRowError: the chunk is not one this module wrote (damaged or crafted).
    """
    rows, bytes_, _ = _checked([(key, rowids, sizes, ids)], lower)
    return rows, bytes_


def _lower(conn: sqlite3.Connection, after: int) -> int:
    """The key of the last chunk wholly at or below ``after`` (the lower bound of the
    first chunk read after it)."""
    row = conn.execute(f"SELECT max(last) FROM {TABLE} WHERE last <= ?", (after,)).fetchone()
    return _FIRST_LOWER if row is None or row[0] is None else max(int(row[0]), _FIRST_LOWER)


def read(conn: sqlite3.Connection, id_dtype: str, *, after: int = -1) -> Flat:
    """The lists of the documents with rowid above ``after``: ``(rowids, lengths, ids)``
    with ``lengths[i]`` ids of ``ids`` belonging to ``rowids[i]`` (rowids increasing).
    Only the chunks whose key is above ``after`` are read, all checked at once
    (:func:`_checked`).

    Raises:
        BadRowError: a chunk is damaged, or a list is not a whole number of ``id_dtype``
            ids.
    """
    width = np.dtype(id_dtype).itemsize
    lower = _lower(conn, after)
    chunks = conn.execute(
        f"SELECT last, rowids, sizes, ids FROM {TABLE} WHERE last > ? ORDER BY last", (after,)
    ).fetchall()
    if not chunks:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(0, dtype=id_dtype)
    rowids, sizes, chunk_of = _checked(chunks, lower)
    keys = [int(c[0]) for c in chunks]
    flat = np.frombuffer(b"".join(c[3] for c in chunks), dtype=id_dtype)
    del chunks
    bad_width = sizes % width != 0
    if bad_width.any():
        raise BadRowError(
            TABLE,
            keys[int(chunk_of[int(np.argmax(bad_width))])],
            f"a list is not a whole number of {width}-byte ids",
        )
    lengths = sizes // width
    # Only the first chunk read may hold rowids at or below ``after``.
    skip = int(np.searchsorted(rowids, after, side="right"))
    if skip:
        start = int(lengths[:skip].sum())
        return rowids[skip:], lengths[skip:], flat[start:]
    return rowids, lengths, flat


def _first_bad(keys: npt.NDArray[np.int64], flags: npt.NDArray[np.int64], reason: str) -> None:
    """Raise :class:`BadRowError` for the first chunk whose flag is set."""
    if flags.any():
        raise BadRowError(TABLE, int(keys[int(np.argmax(flags != 0))]), reason)


def _encode(rowids: npt.NDArray[np.int64], sizes: npt.NDArray[np.int64]) -> tuple[bytes, bytes]:
    return rowids.astype(_ROWID).tobytes(), sizes.astype(_SIZE).tobytes()


def _insert_chunks(
    conn: sqlite3.Connection,
    rowids: npt.NDArray[np.int64],
    sizes: npt.NDArray[np.int64],
    data: bytes,
    chunk_docs: int,
) -> None:
    """Write ``rowids`` (increasing, above every stored chunk) as new chunks of
    ``chunk_docs`` documents; ``sizes[i]`` bytes of ``data`` are ``rowids[i]``'s list."""
    ends = np.cumsum(sizes)
    rows = []
    for start in range(0, rowids.size, chunk_docs):
        stop = min(start + chunk_docs, rowids.size)
        first_byte = int(ends[start - 1]) if start else 0
        rowid_blob, size_blob = _encode(rowids[start:stop], sizes[start:stop])
        rows.append(
            (int(rowids[stop - 1]), rowid_blob, size_blob, data[first_byte : int(ends[stop - 1])])
        )
    conn.executemany(f"INSERT INTO {TABLE}(last, rowids, sizes, ids) VALUES (?, ?, ?, ?)", rows)


def write_all(
    conn: sqlite3.Connection,
    rowids: npt.NDArray[np.int64],
    sizes: npt.NDArray[np.int64],
    data: bytes,
    *,
    chunk_docs: int | None = None,
) -> None:
    """Replace every stored list: ``rowids`` (increasing) with ``sizes[i]`` bytes of
    ``data`` each, in full chunks of ``chunk_docs`` (default :data:`CHUNK_DOCS`). Inside
    the caller's transaction."""
    _check_increasing(rowids)
    conn.execute(f"DELETE FROM {TABLE}")
    _insert_chunks(conn, rowids, sizes, data, chunk_docs or CHUNK_DOCS)


def _check_increasing(rowids: npt.NDArray[np.int64]) -> None:
    if rowids.size > 1 and not bool(np.all(rowids[1:] > rowids[:-1])):
        # A caller's bug, not a stored value: never written, so the file stays as it was.
        raise RuntimeError("centroid lists must be written in increasing rowid order")


def append(
    conn: sqlite3.Connection,
    rowids: npt.NDArray[np.int64],
    lists: Sequence[bytes],
    *,
    chunk_docs: int | None = None,
) -> None:
    """Add the lists of new documents ``rowids`` (increasing, above every listed rowid):
    the tail chunk takes as many as it has room for, the rest go into new chunks.

    Raises:
        BadRowError: the tail chunk is damaged, or lists rowids at or above the new ones.
    """
    if not rowids.size:
        return
    _check_increasing(rowids)
    chunk_docs = chunk_docs or CHUNK_DOCS
    sizes = np.fromiter((len(b) for b in lists), dtype=np.int64, count=len(lists))
    data = b"".join(lists)
    tail = conn.execute(
        f"SELECT last, rowids, sizes, ids FROM {TABLE} ORDER BY last DESC LIMIT 1"
    ).fetchone()
    if tail is not None:
        key = int(tail[0])
        if key >= int(rowids[0]):
            raise BadRowError(
                TABLE,
                key,
                f"the last chunk reaches rowid {key}, but new rowids start at "
                f"{int(rowids[0])} (rowids are never reused)",
            )
        old_rows, old_sizes = _decode(key, tail[1], tail[2], tail[3], _lower(conn, key - 1))
        room = max(chunk_docs - old_rows.size, 0)
        if room:
            take = min(room, rowids.size)
            taken = int(sizes[:take].sum())
            rowid_blob, size_blob = _encode(
                np.concatenate([old_rows, rowids[:take]]),
                np.concatenate([old_sizes, sizes[:take]]),
            )
            conn.execute(
                f"UPDATE {TABLE} SET last = ?, rowids = ?, sizes = ?, ids = ? WHERE last = ?",
                (int(rowids[take - 1]), rowid_blob, size_blob, tail[3] + data[:taken], key),
            )
            rowids, sizes, data = rowids[take:], sizes[take:], data[taken:]
    _insert_chunks(conn, rowids, sizes, data, chunk_docs)


def remove(conn: sqlite3.Connection, rowids: Sequence[int]) -> None:
    """Drop the lists of ``rowids`` (listed or not), rewriting only the chunks that held
    them (a chunk left empty is deleted). Inside the caller's transaction.

    Raises:
        BadRowError: a chunk to rewrite is damaged.
    """
    wanted = np.unique(np.asarray(rowids, dtype=np.int64))
    at = 0
    while at < wanted.size:
        row = conn.execute(
            f"SELECT last, rowids, sizes, ids FROM {TABLE} WHERE last >= ? ORDER BY last LIMIT 1",
            (int(wanted[at]),),
        ).fetchone()
        if row is None:
            return  # no chunk reaches these rowids: none of them is listed
        key = int(row[0])
        stop = int(np.searchsorted(wanted, key, side="right"))
        rows, sizes = _decode(key, row[1], row[2], row[3], _lower(conn, key - 1))
        drop = np.isin(rows, wanted[at:stop])
        at = stop
        if not drop.any():
            continue
        if drop.all():
            conn.execute(f"DELETE FROM {TABLE} WHERE last = ?", (key,))
            continue
        ends = np.cumsum(sizes)
        starts = ends - sizes
        ids = row[3]
        kept = b"".join(
            ids[a:b] for a, b in zip(starts[~drop].tolist(), ends[~drop].tolist(), strict=True)
        )
        rowid_blob, size_blob = _encode(rows[~drop], sizes[~drop])
        # The key stays: it is an upper bound, and later rowids are above it either way.
        conn.execute(
            f"UPDATE {TABLE} SET rowids = ?, sizes = ?, ids = ? WHERE last = ?",
            (rowid_blob, size_blob, kept, key),
        )


def count_unlisted(conn: sqlite3.Connection) -> int:
    """How many listed rowids name no document (for ``edge-colbert check``); reads the
    chunk rowids and the documents' rowids (about 16 bytes a document at most).

    Raises:
        BadRowError: a chunk is damaged.
    """
    listed: list[npt.NDArray[np.int64]] = []
    lower = _FIRST_LOWER
    for key, rowids, sizes, ids in conn.execute(
        f"SELECT last, rowids, sizes, ids FROM {TABLE} ORDER BY last"
    ):
        rows, _ = _decode(int(key), rowids, sizes, ids, lower)
        listed.append(rows)
        lower = int(key)
    if not listed:
        return 0
    stored = np.fromiter(
        (r[0] for r in conn.execute("SELECT rowid FROM documents")), dtype=np.int64
    )
    return int((~np.isin(np.concatenate(listed), stored)).sum())


def rows(conn: sqlite3.Connection) -> Iterator[tuple[int, bytes]]:
    """Every listed document's ``(rowid, id bytes)``, by rowid, one chunk read at a time
    (for tools and checks that look at single documents; the open uses :func:`read`).

    Raises:
        BadRowError: a chunk is damaged.
    """
    lower = _FIRST_LOWER
    last = -1
    while True:
        row = conn.execute(
            f"SELECT last, rowids, sizes, ids FROM {TABLE} WHERE last > ? ORDER BY last LIMIT 1",
            (last,),
        ).fetchone()
        if row is None:
            return
        last = int(row[0])
        listed, sizes = _decode(last, row[1], row[2], row[3], lower)
        lower = last
        ends = np.cumsum(sizes).tolist()
        starts = [0, *ends[:-1]]
        ids = bytes(row[3])
        for rowid, a, b in zip(listed.tolist(), starts, ends, strict=True):
            yield rowid, ids[a:b]
