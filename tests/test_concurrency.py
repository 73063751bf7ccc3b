"""One writer and several readers at once; two writers in turn.

Readers open the index with ``readonly=True`` in their own processes while a writer adds
batches: they never fail, every hit has its text and its vectors row, and the document
counts each reader sees only grow, in whole batches (some committed state, never half of
one). Writers take turns: the second waits for the first, and a writer that waits longer
than its ``timeout`` gets :class:`IndexBusyError` with a message that says what to do.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from crash_worker import (
    check_index,
    doc_id,
    doc_text,
    read_log,
    run_reader,
    run_worker,
    start,
    worker_context,
)

from edge_colbert import Index, IndexBusyError
from edge_colbert.encoder import Encoder

READERS = 3
READ_SECONDS = 3.0
BATCH = 4


def _seed_index(db: Path, encoder: Encoder, batches: int = 1) -> None:
    """Create the index with the first ``batches`` batches, as the worker would write them."""
    with Index(db, encoder=encoder) as index:
        for batch in range(batches):
            numbers = range(batch * BATCH, (batch + 1) * BATCH)
            index.add([doc_text(n) for n in numbers], ids=[doc_id(n) for n in numbers])


def _snapshot(db: Path) -> list[tuple[str, str]]:
    """Every stored (id, metadata), sorted by id."""
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT id, metadata FROM documents ORDER BY id").fetchall()
    finally:
        con.close()


def test_readers_see_only_committed_batches_while_a_writer_adds(
    tmp_path: Path, tiny_model_dir: Path, tiny_encoder: Encoder
) -> None:
    db, log = tmp_path / "shared.db", tmp_path / "writer.log"
    _seed_index(db, tiny_encoder)
    context = worker_context()
    writer = start(
        context, run_worker, str(db), str(tiny_model_dir), str(log), start_batch=1, batch_size=BATCH
    )
    readers = [
        start(
            context,
            run_reader,
            str(db),
            str(tiny_model_dir),
            str(tmp_path / f"reader{r}.json"),
            seconds=READ_SECONDS,
            seed=r,
        )
        for r in range(READERS)
    ]
    for reader in readers:
        reader.join(READ_SECONDS + 60)
    writer.kill()
    writer.join(10)
    assert [r.exitcode for r in readers] == [0] * READERS, "a reader failed (traceback above)"
    assert writer.exitcode == -signal.SIGKILL, (
        f"the writer stopped by itself with {writer.exitcode}"
    )

    committed = read_log(log).last_done  # the writer's batches are numbered from 1
    assert committed >= 5, f"the writer committed only {committed} batches in {READ_SECONDS} s"
    total_searches = 0
    for r in range(READERS):
        seen = json.loads((tmp_path / f"reader{r}.json").read_text(encoding="utf-8"))
        counts = seen["counts"]
        total_searches += seen["searches"]
        assert seen["hits"] > 0
        assert counts == sorted(counts), f"reader {r} saw the count go down: {counts}"
        assert all(c % BATCH == 0 for c in counts), f"reader {r} saw half a batch: {counts}"
        assert len(set(counts)) >= 2, f"reader {r} never saw a new batch: {counts[:5]}"
    assert total_searches >= READERS * 10
    verdict = check_index(db, read_log(log).acknowledged, batch_size=BATCH, grow=False)
    assert verdict.ok, verdict


def test_two_writer_processes_both_finish(
    tmp_path: Path, tiny_model_dir: Path, tiny_encoder: Encoder
) -> None:
    db = tmp_path / "shared.db"
    _seed_index(db, tiny_encoder)
    context = worker_context()
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    writers = [
        start(context, run_worker, str(db), str(tiny_model_dir), str(logs[0]), start_batch=1,
              batches=15, batch_size=BATCH),
        start(context, run_worker, str(db), str(tiny_model_dir), str(logs[1]), start_batch=100,
              batches=15, batch_size=BATCH),
    ]  # fmt: skip
    for writer in writers:
        writer.join(120)
    assert [w.exitcode for w in writers] == [0, 0]
    acknowledged = read_log(logs[0]).acknowledged | read_log(logs[1]).acknowledged
    assert len(acknowledged) == 2 * 15 * BATCH
    verdict = check_index(db, acknowledged, batch_size=BATCH, grow=False)
    assert verdict.ok, verdict
    assert verdict.documents == BATCH + len(acknowledged)


def _hold_write_lock(db: Path) -> sqlite3.Connection:
    """Take the write lock the way another writer would: BEGIN IMMEDIATE, then sit on it."""
    # check_same_thread=False: a timer thread commits it in one test.
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_writer_times_out_with_index_busy_error(tmp_path: Path, tiny_encoder: Encoder) -> None:
    db = tmp_path / "busy.db"
    _seed_index(db, tiny_encoder)
    before = _snapshot(db)
    holder = _hold_write_lock(db)
    try:
        with Index(db, encoder=tiny_encoder, timeout=0.3) as index:
            assert len(index) == BATCH  # reading goes on while another process writes
            started = time.monotonic()
            with pytest.raises(IndexBusyError) as caught:
                index.add(["blocked text"], ids=["blocked"])
            waited = time.monotonic() - started
            with pytest.raises(IndexBusyError):
                index.delete([doc_id(0)])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert 0.25 <= waited < 10, f"waited {waited:.2f} s for a 0.3 s timeout"
    message = str(caught.value)
    assert str(db) in message and "0.3" in message and "timeout" in message, message
    assert _snapshot(db) == before
    # Once the lock is free, the same file takes writes again.
    with Index(db, encoder=tiny_encoder, timeout=0.3) as index:
        index.add(["after the lock"], ids=["after"])
        assert "after" in index


def test_second_writer_waits_for_the_first(tmp_path: Path, tiny_encoder: Encoder) -> None:
    db = tmp_path / "wait.db"
    _seed_index(db, tiny_encoder)
    holder = _hold_write_lock(db)
    holder.execute("INSERT INTO meta(key, value) VALUES ('other_writer', 'was here')")
    # The other writer commits after 0.5 s; our add must wait for it, not fail.
    release = threading.Timer(0.5, holder.execute, args=("COMMIT",))
    release.start()
    try:
        with Index(db, encoder=tiny_encoder, timeout=10) as index:
            started = time.monotonic()
            index.add(["waited for the lock"], ids=["waiter"])
            waited = time.monotonic() - started
            assert "waiter" in index
    finally:
        release.join()
        holder.close()
    assert waited >= 0.3, f"add returned after {waited:.2f} s while the lock was held"
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM meta WHERE key = 'other_writer'").fetchone() == (
        "was here",
    )
    con.close()
