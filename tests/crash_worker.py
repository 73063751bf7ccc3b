"""The process that the crash tests kill, and the checks they run on what it leaves behind.

A worker opens an :class:`edge_colbert.Index` on a model folder and adds batches of documents
whose ids and texts are a pure function of their number (``doc-000042`` always has the same
text). Only AFTER ``add()`` has returned does it append the batch's ids to a log file and
fsync it, so every id in the log is a promise the index made: a crash may lose the batch in
flight, never one that was acknowledged. The log also records ``begin`` before each batch,
so that the tests can tell which kills landed inside ``add()``.

Run as a script (``python tests/crash_worker.py --db ... --model ... --log ...``) or call
:func:`run_worker` in a forked process; the tests do the latter to avoid paying the Python
and onnxruntime start-up on each of their kills. :func:`check_index` is the verdict after a
kill and :func:`resume_point` says where a restarted worker continues.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.process
import os
import random
import sqlite3
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

# A fixed vocabulary the tiny test model knows, so that texts tokenize to real words.
_VOCABULARY = (
    "water river mountain science protein gene cancer patient risk study data cell language "
    "island ocean forest music paper letter school father mother children animal machine "
    "number system record surface object minute power money person pattern center morning "
    "travel remember ground interest problem question family picture country answer city"
)
_WORDS = tuple(_VOCABULARY.split())


def doc_id(number: int) -> str:
    """The id of document ``number``: zero-padded so that ids sort as numbers do."""
    return f"doc-{number:06d}"


def doc_text(number: int) -> str:
    """The text of document ``number``: 6 to 14 words drawn by a generator seeded with it."""
    rng = random.Random(number * 7919 + 17)
    words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 14))]
    return f"{' '.join(words)} {number}"


def batch_numbers(batch: int, batch_size: int, grow: bool) -> list[int]:
    """The document numbers of batch ``batch``.

    With ``grow`` the batches double in size (1, 2, 4, ... ``batch_size`` times), so that a
    run crosses the index's centroid retraining threshold (about 4x the collection the
    centroids were trained on) again and again, and kills land during retraining too.
    """
    if not grow:
        return list(range(batch * batch_size, (batch + 1) * batch_size))
    start = batch_size * ((1 << batch) - 1)
    return list(range(start, start + batch_size * (1 << batch)))


def _append(fd: int, line: str) -> None:
    """Append one line to the log and make it durable before going on."""
    os.write(fd, (line + "\n").encode("utf-8"))
    os.fsync(fd)


def run_worker(
    db: str,
    model: str,
    log: str,
    *,
    start_batch: int = 0,
    batches: int = 1_000_000,
    batch_size: int = 4,
    grow: bool = False,
    slow_encode_s: float = 0.0,
    slow_write_s: float = 0.0,
    slow_retrain_s: float = 0.0,
    train_tokens: int = 64,
    codec: str = "int8",
    pool_factor: int = 1,
) -> None:
    """Add batches ``start_batch, start_batch + 1, ...`` to the index at ``db`` until killed.

    ``slow_encode_s`` makes document encoding sleep that long after logging ``encoding``, so
    that a test can kill the process while it is encoding (the encoder is the user-supplied
    part of the index, so slowing it down changes nothing in the code under test).
    ``slow_write_s`` sleeps that long, after logging ``writing``, when the first vectors row
    of a batch is inserted: inside the open write transaction, with the batch's first
    document already written. It uses SQLite's trace callback on the index's connection
    (``Index.store.connection``); nothing in the index's code path changes.
    ``slow_retrain_s`` likewise sleeps, after logging ``retraining``, at the first statement
    that re-posts stored documents under new centroids (the first chunk written after the
    old lists were deleted): inside the retraining transaction, with a residual file's
    documents already re-coded and no document posted.
    ``train_tokens`` is the Index's centroid training threshold: small, so that centroids
    are trained and retrained (at 4x) within the first few hundred documents.
    ``codec`` and ``pool_factor`` are the Index's (a new file records them).
    """
    from edge_colbert import Encoder, Index

    encoder = Encoder(model, threads=1)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    if slow_encode_s > 0:
        real_encode = encoder.encode_documents

        def slow_encode(texts: object, **kwargs: object) -> object:
            """Log ``encoding``, sleep, then encode as the real encoder does."""
            _append(fd, "encoding")
            time.sleep(slow_encode_s)
            return real_encode(texts, **kwargs)  # type: ignore[arg-type]

        encoder.encode_documents = slow_encode  # type: ignore[method-assign,assignment]
    with Index(
        db, encoder=encoder, train_tokens=train_tokens, codec=codec, pool_factor=pool_factor
    ) as index:
        _append(fd, "open")
        paused = [False]
        # A retraining rewrites every centroid list: a DELETE of the whole table, then the
        # chunks; the pause comes at its first chunk (old lists gone, new ones not written).
        reposting = [False]
        if slow_write_s > 0 or slow_retrain_s > 0:

            def pause_in_transaction(statement: str) -> None:
                """Sleep once per batch at its first vectors insert, or at a retraining's first
                re-posting; both inside the open write transaction."""
                head = statement.lstrip().upper()
                if paused[0]:
                    return
                if slow_write_s > 0 and head.startswith("INSERT INTO VECTORS"):
                    paused[0] = True
                    _append(fd, "writing")
                    time.sleep(slow_write_s)
                elif head.rstrip(";") == "DELETE FROM CENTROID_LISTS":
                    reposting[0] = True
                elif (
                    slow_retrain_s > 0
                    and reposting[0]
                    and head.startswith("INSERT INTO CENTROID_LISTS")
                ):
                    paused[0] = True
                    _append(fd, "retraining")
                    time.sleep(slow_retrain_s)

            index.store.connection.set_trace_callback(pause_in_transaction)
        for batch in range(start_batch, start_batch + batches):
            numbers = batch_numbers(batch, batch_size, grow)
            paused[0] = reposting[0] = False
            _append(fd, f"begin {batch}")
            index.add([doc_text(n) for n in numbers], ids=[doc_id(n) for n in numbers])
            _append(fd, f"done {batch} " + " ".join(doc_id(n) for n in numbers))
    os.close(fd)


def run_reader(db: str, model: str, out: str, *, seconds: float, seed: int) -> None:
    """Search the index read-only in a loop for ``seconds`` and write what was seen to ``out``.

    Every hit must carry the text its id was added with, and its vectors row must exist
    (checked through a second, plain sqlite3 connection). Any failure raises, so the process
    exits non-zero with the traceback; on success ``out`` holds one JSON object with the
    document counts seen, in order, and the number of searches and hits checked.
    """
    from edge_colbert import Encoder, Index

    encoder = Encoder(model, threads=1)
    rng = random.Random(seed)
    counts: list[int] = []
    searches = hits_checked = 0
    raw = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    deadline = time.monotonic() + seconds
    with Index(db, encoder=encoder, readonly=True) as index:
        while time.monotonic() < deadline:
            counts.append(len(index))
            query = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 5)))
            for hit in index.search(query, k=5):
                if hit.text != doc_text(int(hit.id[4:])):
                    raise AssertionError(f"{hit.id} came back with text {hit.text!r}")
                row = raw.execute(
                    "SELECT length(v.codes) FROM documents d JOIN vectors v ON v.doc = d.rowid "
                    "WHERE d.id = ?",
                    (hit.id,),
                ).fetchone()
                if row is None or not row[0]:
                    raise AssertionError(f"{hit.id} was returned but has no vectors row")
                hits_checked += 1
            searches += 1
    raw.close()
    Path(out).write_text(
        json.dumps({"counts": counts, "searches": searches, "hits": hits_checked}),
        encoding="utf-8",
    )


@dataclass
class LogState:
    """What a worker's log says: acknowledged ids and the batch a kill interrupted."""

    acknowledged: set[str] = field(default_factory=set)
    last_done: int = -1
    # The last line is ``begin``, ``encoding`` or ``writing``: the kill landed inside add().
    in_add: bool = False
    opened: bool = False


def read_log(log: Path) -> LogState:
    """Parse a worker log; a torn last line (killed mid-write) is ignored."""
    state = LogState()
    if not log.exists():
        return state
    lines = log.read_text(encoding="utf-8").split("\n")
    for line in lines[:-1]:  # the part after the last newline was never finished
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "open":
            state.opened = True
            state.in_add = False
        elif parts[0] in ("begin", "encoding", "writing"):
            state.in_add = True
        elif parts[0] == "done":
            state.last_done = max(state.last_done, int(parts[1]))
            state.acknowledged.update(parts[2:])
            state.in_add = False
    return state


def resume_point(log: Path) -> int:
    """The batch a restarted worker starts from: the one after the last acknowledged."""
    return read_log(log).last_done + 1


@dataclass
class Verdict:
    """The state of an index file after a kill."""

    integrity: str
    documents: int
    lost: list[str]
    problems: list[str]
    centroid_version: str | None

    @property
    def ok(self) -> bool:
        """True when the file is intact and holds everything that was acknowledged."""
        return self.integrity == "ok" and not self.lost and not self.problems


def check_structure(db: Path) -> tuple[str, list[str]]:
    """``PRAGMA integrity_check`` and the document/vectors pairing, per docs/internals.md.

    Every document has its vectors row and every vectors row its document, with blob sizes
    that match ``n_tokens`` and the index's ``dim``. Returns (integrity result, problems).
    """
    problems: list[str] = []
    # Open read-write so that SQLite can recover the WAL left by the killed process.
    con = sqlite3.connect(db, timeout=30)
    try:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"meta", "documents", "vectors"} <= tables:
            # Killed before the schema's transaction committed: an empty file is fine.
            empty = not tables
            return integrity, [] if empty else [f"a partial schema: {sorted(tables)}"]
        width = _token_bytes(con)
        orphans = con.execute(
            "SELECT count(*) FROM documents d LEFT JOIN vectors v ON v.doc = d.rowid "
            "WHERE v.doc IS NULL"
        ).fetchone()[0]
        widows = con.execute(
            "SELECT count(*) FROM vectors v LEFT JOIN documents d ON d.rowid = v.doc "
            "WHERE d.rowid IS NULL"
        ).fetchone()[0]
        bad_sizes = con.execute(
            "SELECT d.id FROM documents d JOIN vectors v ON v.doc = d.rowid "
            "WHERE length(v.codes) != d.n_tokens * ? "
            "OR d.n_tokens <= 0",
            (width,),
        ).fetchall()
        if "documents_fts" in {r[0] for r in con.execute("SELECT name FROM sqlite_master")}:
            problems.extend(_check_schema_3(con))
    finally:
        con.close()
    if orphans:
        problems.append(f"{orphans} documents without vectors")
    if widows:
        problems.append(f"{widows} vectors rows without a document")
    if bad_sizes:
        problems.append(f"vector blobs of the wrong size for {[r[0] for r in bad_sizes[:5]]}")
    return integrity, problems


def _token_bytes(con: sqlite3.Connection) -> int:
    """Bytes per stored token: ``dim`` int8 codes, or a residual record (2 + dim * bits / 8)
    once a residual file's centroids exist."""
    from edge_colbert.codec import RESIDUAL_BITS

    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    dim = int(meta["dim"])
    bits = RESIDUAL_BITS.get(meta.get("codec", "int8"))
    trained = con.execute("SELECT count(*) FROM centroids").fetchone()[0]
    return dim if bits is None or not trained else 2 + dim * bits // 8


def _check_schema_3(con: sqlite3.Connection) -> list[str]:
    """Schema 3's extra promises: FTS5's integrity-check passes, every vector blob matches
    its crc32, and the ``tokens`` meta count is the sum over the documents."""
    problems: list[str] = []
    try:
        con.execute("INSERT INTO documents_fts(documents_fts) VALUES ('integrity-check')")
    except sqlite3.DatabaseError as error:
        problems.append(f"FTS5 integrity-check failed: {error}")
    bad_crc = [
        doc
        for doc, codes, crc in con.execute("SELECT doc, codes, crc FROM vectors")
        if zlib.crc32(codes) != crc
    ]
    if bad_crc:
        problems.append(f"vector blobs whose crc32 differs: rowids {bad_crc[:5]}")
    meta = con.execute("SELECT value FROM meta WHERE key = 'tokens'").fetchone()
    total = con.execute("SELECT total(n_tokens) FROM documents").fetchone()[0]
    if meta is None or int(meta[0]) != int(total):
        problems.append(f"meta tokens {meta} but the documents hold {int(total)}")
    return problems


def lost_by_words(db: Path, acknowledged: set[str]) -> list[str]:
    """Acknowledged documents that the full-text index does not find by their own rare word
    (the number that ends each text)."""
    con = sqlite3.connect(db, timeout=30)
    try:
        rowids = dict(con.execute("SELECT id, rowid FROM documents"))
        lost = []
        for doc in sorted(acknowledged):
            found = {
                r[0]
                for r in con.execute(
                    "SELECT rowid FROM documents_fts WHERE documents_fts MATCH ?",
                    (f'"{int(doc[4:])}"',),
                )
            }
            if rowids.get(doc) not in found:
                lost.append(doc)
    finally:
        con.close()
    return lost


def _stored(db: Path) -> tuple[dict[str, str], str | None]:
    """Stored ids with their texts, and the centroid version (None before any training)."""
    con = sqlite3.connect(db, timeout=30)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "documents" not in tables:
            return {}, None
        # Long texts are stored zlib-compressed as a BLOB (see store.encode_text).
        texts = {
            doc: zlib.decompress(text).decode("utf-8") if isinstance(text, bytes) else text
            for doc, text in con.execute("SELECT id, text FROM documents")
        }
        version = (
            con.execute("SELECT version FROM centroids").fetchone()
            if "centroids" in tables
            else None
        )
    finally:
        con.close()
    return texts, None if version is None else str(version[0])


def check_index(db: Path, acknowledged: set[str], *, batch_size: int, grow: bool) -> Verdict:
    """Everything :func:`check_structure` checks, plus what the worker's log promises.

    Every acknowledged id is stored with its own text; every stored id is one a worker tried
    to add; and each batch is all there or not there at all (one transaction per batch).
    """
    integrity, problems = check_structure(db)
    texts, version = _stored(db)
    lost = sorted(doc for doc in acknowledged if doc not in texts)
    if texts:
        unfound = sorted(set(lost_by_words(db, acknowledged)) - set(lost))
        if unfound:
            problems.append(f"acknowledged but not found by their words: {unfound[:5]}")
    for doc, text in texts.items():
        if not doc.startswith("doc-"):
            problems.append(f"unexpected id {doc!r}")
        elif text != doc_text(int(doc[4:])):
            problems.append(f"{doc} holds another text: {text[:40]!r}")
    stored = set(texts)
    highest = max((int(d[4:]) for d in stored if d.startswith("doc-")), default=-1)
    batch = 0
    while batch_numbers(batch, batch_size, grow)[0] <= highest:
        ids = {doc_id(n) for n in batch_numbers(batch, batch_size, grow)}
        present = len(ids & stored)
        if present not in (0, len(ids)):
            problems.append(f"batch {batch} is half there: {present} of {len(ids)} ids")
        batch += 1
    return Verdict(integrity, len(texts), lost, problems, version)


def worker_context() -> multiprocessing.context.BaseContext:
    """A multiprocessing context whose children start in milliseconds with clean state.

    The fork server is a fresh interpreter that imports the runtime once and then forks a
    child per worker: no start-up cost per kill, and no onnxruntime session inherited from
    the parent (forking a process that already runs one is unsafe).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["crash_worker", "edge_colbert.encoder", "edge_colbert.index"])
    return context


def start_worker(
    context: multiprocessing.context.BaseContext, db: Path, model: Path, log: Path, **kwargs: object
) -> multiprocessing.process.BaseProcess:
    """Start :func:`run_worker` in a child of ``context``, resuming after the log's last batch."""
    kwargs.setdefault("start_batch", resume_point(log))
    return start(context, run_worker, str(db), str(model), str(log), **kwargs)


def start(
    context: multiprocessing.context.BaseContext,
    target: Callable[..., None],
    *args: object,
    **kwargs: object,
) -> multiprocessing.process.BaseProcess:
    """Start ``target(*args, **kwargs)`` in a daemon child of ``context``."""
    process = context.Process(  # type: ignore[attr-defined]
        target=target, args=args, kwargs=kwargs, daemon=True
    )
    process.start()
    return process  # type: ignore[no-any-return]


def wait_for_line(log: Path, word: str, timeout: float = 30.0, after: int = 0) -> bool:
    """Wait until the log holds more than ``after`` lines starting with ``word``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            lines = log.read_text(encoding="utf-8").split("\n")[:-1]
            if sum(1 for line in lines if line.split(" ", 1)[0] == word) > after:
                return True
        time.sleep(0.005)
    return False


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: run one worker until it is killed or its batches are done."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--start-batch", type=int, default=None, help="default: from the log")
    parser.add_argument("--batches", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grow", action="store_true")
    parser.add_argument("--slow-encode", type=float, default=0.0)
    args = parser.parse_args(argv)
    start = resume_point(Path(args.log)) if args.start_batch is None else args.start_batch
    run_worker(
        args.db,
        args.model,
        args.log,
        start_batch=start,
        batches=args.batches,
        batch_size=args.batch_size,
        grow=args.grow,
        slow_encode_s=args.slow_encode,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
