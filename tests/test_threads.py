"""One :class:`Index` shared by threads.

Eight threads search while one thread adds and deletes whole batches: nothing fails, every
hit is a stored document with its own text and metadata, and an exhaustive search (which
returns every document) always sees whole batches in a state that was committed. An index
opened in one thread works in another, under ``asyncio.to_thread``, and ``close()`` from
any thread closes every thread's connection (and the ones of threads that ended are closed
without it).
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from crash_worker import doc_id, doc_text

from edge_colbert import Index, IndexClosedError
from edge_colbert.encoder import Encoder

BATCH = 4
STEPS = 12
READERS = 8


def _batch_ids(batch: int) -> list[str]:
    return [doc_id(batch * BATCH + i) for i in range(BATCH)]


def _add_batch(index: Index, batch: int) -> None:
    numbers = range(batch * BATCH, (batch + 1) * BATCH)
    index.add(
        [doc_text(n) for n in numbers],
        ids=[doc_id(n) for n in numbers],
        metadata=[{"batch": batch, "number": n} for n in numbers],
    )


def _pruning_index(path: Path, encoder: Encoder, batches: int) -> Index:
    """An index with trained centroids whose searches prune (keep=3 of more candidates)."""
    index = Index(path, encoder=encoder, train_tokens=64, keep=3)
    for batch in range(batches):
        _add_batch(index, batch)
    return index


def _run_threads(targets: Sequence[Callable[[], object]]) -> list[Exception]:
    """Run each target in its own thread; the errors they raised."""
    errors: list[Exception] = []

    def guarded(target: Callable[[], object]) -> None:
        try:
            target()
        except Exception as error:  # noqa: BLE001 (collected; the test reports them)
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive(), "a thread hung"
    return errors


def test_eight_threads_search_while_one_adds_and_deletes(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    # A low training threshold: centroids are trained and retrained while readers search,
    # so the shared prefilter is reloaded and updated under them.
    index = Index(tmp_path / "shared.db", encoder=tiny_encoder, train_tokens=64)
    _add_batch(index, 0)
    _add_batch(index, 1)
    done = threading.Event()
    states: list[set[int]] = []
    checked = [0]

    def writer() -> None:
        try:
            for batch in range(2, STEPS + 2):
                _add_batch(index, batch)  # batches {b-2, b-1, b}
                assert index.delete(_batch_ids(batch - 2)) == BATCH  # then {b-1, b}
        finally:
            done.set()

    def reader(seed: int) -> Callable[[], None]:
        def run() -> None:
            turn = 0
            while not done.is_set() or turn < 3:
                turn += 1
                query = doc_text((seed * 7 + turn) % ((STEPS + 2) * BATCH))
                exhaustive = turn % 2 == 0
                k = 1000 if exhaustive else 5
                where = {"batch": [b for b in range(STEPS + 2) if b % 2 == seed % 2]}
                hits = index.search(
                    query, k, exhaustive=exhaustive, where=where if turn % 3 == 0 else None
                )
                for hit in hits:
                    number = int(hit.id.split("-")[1])
                    assert hit.text == doc_text(number), hit
                    assert hit.metadata == {"batch": number // BATCH, "number": number}
                if exhaustive and turn % 3 != 0:
                    batches = {h.metadata["batch"] for h in hits}
                    # Whole batches only, and a window that some commit left.
                    assert len(hits) == BATCH * len(batches), sorted(h.id for h in hits)
                    assert (
                        len(batches) in (2, 3) and max(batches) - min(batches) == len(batches) - 1
                    ), batches
                    states.append(batches)
                checked[0] += 1

        return run

    errors = _run_threads([writer] + [reader(r) for r in range(READERS)])
    assert not errors, errors
    assert index.info()["centroid_version"] >= 1
    assert len(index) == 2 * BATCH
    assert len(states) >= READERS and checked[0] >= 2 * READERS
    index.close()


def test_hybrid_searches_share_the_helper_thread(tmp_path: Path, tiny_encoder: Encoder) -> None:
    # A hybrid search runs its prefilter on the index's one helper thread when it is free,
    # else on its own thread: from eight threads at once, the results are those of one.
    index = _pruning_index(tmp_path / "helper.db", tiny_encoder, 6)
    assert index.info()["centroids"] > 0  # the prefilter runs
    queries = [doc_text(n) for n in range(0, 6 * BATCH, 3)]
    expected = [[(h.id, h.score) for h in index.search(q, 5)] for q in queries]
    assert any(t.name.startswith("edge-colbert-search") for t in threading.enumerate())
    seen: list[list[list[tuple[str, float]]]] = []

    def searcher() -> None:
        seen.append([[(h.id, h.score) for h in index.search(q, 5)] for q in queries * 3])

    assert not _run_threads([searcher] * READERS)
    assert seen == [expected * 3] * READERS
    # Semantic search prunes in two halves, one on the helper: the same survivors as
    # Prefilter.prune in one pass.
    prefilter = index._prefilter
    assert prefilter is not None
    for query in queries:
        vectors = index.encoder.encode_queries([query])[0]
        one_pass, pruned = index.ranker.narrow(prefilter, vectors, 3, None, hybrid=False)
        with index.ranker.beside() as beside:
            halves, _ = index.ranker.narrow(
                prefilter, vectors, 3, None, hybrid=False, beside=beside
            )
        assert pruned and one_pass.size == 3
        assert halves.tolist() == one_pass.tolist()
    index.close()
    assert not any(t.name.startswith("edge-colbert-search") for t in threading.enumerate())


def test_an_index_opened_in_one_thread_works_in_another(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    db = tmp_path / "moved.db"
    opened: list[Index] = []
    errors = _run_threads([lambda: opened.append(Index(db, encoder=tiny_encoder))])
    assert not errors, errors
    (index,) = opened
    _add_batch(index, 0)  # in the main thread, on an index opened by a thread now gone
    hits = index.search(doc_text(2), 1)
    assert [h.id for h in hits] == [doc_id(2)]
    found: list[str] = []
    errors = _run_threads([lambda: found.extend(h.id for h in index.search(doc_text(3), 1))])
    assert not errors, errors
    assert found == [doc_id(3)]
    errors = _run_threads([index.close])
    assert not errors, errors
    with pytest.raises(IndexClosedError, match="closed"):
        index.search(doc_text(3), 1)


def test_search_through_asyncio_to_thread(tmp_path: Path, tiny_encoder: Encoder) -> None:
    with Index(tmp_path / "async.db", encoder=tiny_encoder) as index:
        for batch in range(3):
            _add_batch(index, batch)

        async def many() -> list[Any]:
            calls = [asyncio.to_thread(index.search, doc_text(n), 1) for n in range(3 * BATCH)]
            return await asyncio.gather(*calls)

        results = asyncio.run(many())
        assert [hits[0].id for hits in results] == [doc_id(n) for n in range(3 * BATCH)]


def _open_descriptors(db: Path) -> int:
    """How many of this process's file descriptors point at ``db``."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        count += target == db.resolve()
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc/self/fd")
def test_close_from_another_thread_closes_every_connection(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    db = tmp_path / "closing.db"
    index = Index(db, encoder=tiny_encoder)
    _add_batch(index, 0)
    searched, closed = threading.Barrier(READERS + 1), threading.Event()
    after_close: list[BaseException] = []

    def reader() -> None:
        index.search(doc_text(1), 2)  # opens this thread's connection
        searched.wait(30)
        closed.wait(30)
        try:
            index.search(doc_text(1), 2)
        except IndexClosedError as error:
            after_close.append(error)

    def closer() -> None:
        searched.wait(30)
        assert _open_descriptors(db) >= READERS  # one connection per thread, all open
        index.close()
        closed.set()

    errors = _run_threads([reader for _ in range(READERS)] + [closer])
    assert not errors, errors
    assert len(after_close) == READERS
    assert _open_descriptors(db) == 0
    # The last connection to close checkpointed and removed the write-ahead log, and no
    # connection is left to stop another from leaving WAL mode (which needs the file alone).
    assert not Path(f"{db}-wal").exists()
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    finally:
        con.close()
    index.close()  # twice is harmless


def test_close_during_hybrid_searches_gives_index_closed_errors(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    # Searches that hand work to the helper thread while close() stops it fail the way any
    # search of a closed index does, never with the executor's own RuntimeError.
    index = _pruning_index(tmp_path / "racing.db", tiny_encoder, 4)
    started = threading.Barrier(READERS + 1)
    failures: list[BaseException] = []

    def searcher(seed: int) -> Callable[[], None]:
        def run() -> None:
            started.wait(30)
            for turn in range(200):
                try:
                    index.search(doc_text((seed + turn) % 16), 3)
                except IndexClosedError:
                    return
                except BaseException as error:  # noqa: BLE001 - the test reports it
                    failures.append(error)
                    return

        return run

    def closer() -> None:
        started.wait(30)
        index.close()

    assert not _run_threads([searcher(r) for r in range(READERS)] + [closer])
    assert not failures, failures


def test_a_search_whose_helper_stopped_runs_on_its_own_thread(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    # close() stops the helper first: a search caught between that and the file closing
    # does its work itself (and then meets IndexClosedError at its next read, not the
    # executor's RuntimeError). The same moment, made deterministic.
    index = _pruning_index(tmp_path / "stopped.db", tiny_encoder, 4)
    before = [(h.id, h.score) for h in index.search(doc_text(5), 3)]
    assert index.ranker._helper is not None
    index.ranker._helper.shutdown(wait=True)
    assert [(h.id, h.score) for h in index.search(doc_text(5), 3)] == before
    index.close()
    with pytest.raises(IndexClosedError):
        index.search(doc_text(5), 3)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc/self/fd")
def test_threads_that_end_leave_no_connection_open(tmp_path: Path, tiny_encoder: Encoder) -> None:
    """A thread-per-request server (``ThreadingHTTPServer``) must not leak a connection per
    request: a thread's connection closes when the thread ends."""
    db = tmp_path / "requests.db"
    with Index(db, encoder=tiny_encoder) as index:
        _add_batch(index, 0)
        for _ in range(3):
            errors = _run_threads([lambda: index.search(doc_text(1), 1) for _ in range(10)])
            assert not errors, errors
        gc.collect()
        # 30 threads searched; a leak would hold 30 descriptors. (SQLite keeps a closed
        # connection's descriptor for reuse while another connection holds a lock, so the
        # count is small, not exactly the main thread's one.)
        assert _open_descriptors(db) < 10
