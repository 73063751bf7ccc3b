"""SIGKILL the indexer at random and chosen moments: nothing acknowledged is ever lost.

Each test runs a worker (tests/crash_worker.py) that adds batches with known ids and logs an
id only after ``add()`` returned; the test kills it with SIGKILL and then checks the file with
plain sqlite3: ``PRAGMA integrity_check`` is ok, every logged id is there with its text and
vectors, no document lacks vectors (or vice versa), every batch is all there or absent, and a
restarted worker goes on from where the log stopped. benchmarks/crash_soak.py runs the same
loop hundreds of times.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from crash_worker import (
    check_index,
    check_structure,
    doc_id,
    doc_text,
    lost_by_words,
    read_log,
    resume_point,
    start_worker,
    wait_for_line,
    worker_context,
)

from edge_colbert import Index, StorageFullError
from edge_colbert.encoder import Encoder
from edge_colbert.sync import ADD_CHUNKS

ROOT = Path(__file__).resolve().parents[1]
KILLS = 24
BATCH = 4


def _kill(process: object) -> None:
    """SIGKILL a worker and reap it; fail if it had died by itself (a crash of its own)."""
    exitcode = process.exitcode  # type: ignore[attr-defined]
    assert exitcode is None, f"the worker exited by itself with {exitcode} before the kill"
    process.kill()  # type: ignore[attr-defined]
    process.join(10)  # type: ignore[attr-defined]
    assert process.exitcode == -signal.SIGKILL  # type: ignore[attr-defined]


def _assert_intact(db: Path, log: Path, *, batch_size: int = BATCH, grow: bool = False) -> int:
    """Check the file after a kill; return the number of documents it holds."""
    state = read_log(log)
    verdict = check_index(db, state.acknowledged, batch_size=batch_size, grow=grow)
    assert verdict.integrity == "ok", verdict
    assert not verdict.lost, f"acknowledged documents lost: {verdict.lost[:10]}"
    assert not verdict.problems, verdict.problems
    return verdict.documents


def _assert_searchable(db: Path, encoder: Encoder, ids: set[str]) -> None:
    """Every acknowledged document is readable through the API and found by its own text."""
    sample = sorted(ids)[:: max(1, len(ids) // 25)]
    with Index(db, encoder=encoder, readonly=True) as index:
        assert len(index) >= len(ids)
        found = 0
        for doc in sample:
            assert doc in index
            hit = index.get(doc)
            assert hit is not None and hit.text == doc_text(int(doc[4:]))
            top = index.search(doc_text(int(doc[4:])), k=10, exhaustive=True)
            found += doc in {h.id for h in top}
    # A document's own text is its best query; allow a little slack for the tiny random model.
    assert found >= 0.8 * len(sample), f"only {found} of {len(sample)} found by their own text"


def test_random_kills_lose_nothing(
    tmp_path: Path, tiny_model_dir: Path, tiny_encoder: Encoder
) -> None:
    db, log = tmp_path / "crash.db", tmp_path / "worker.log"
    context = worker_context()
    rng = random.Random(20240501)
    in_add = 0
    for round_ in range(KILLS):
        opened = _count_lines(log, "open")
        worker = start_worker(context, db, tiny_model_dir, log, batch_size=BATCH)
        # Every third kill lands at a random moment, opening included; the others wait for
        # the index to be open, so that a loaded machine still has them hit the writes.
        if round_ % 3:
            assert wait_for_line(log, "open", after=opened, timeout=60)
        time.sleep(rng.uniform(0.0, 0.35))
        _kill(worker)
        in_add += read_log(log).in_add
        if db.exists():
            _assert_intact(db, log)
    # The test is only worth something if kills really hit the writes.
    assert in_add >= KILLS // 3, f"only {in_add} of {KILLS} kills landed inside add()"
    # A restarted worker picks up where the log stopped and finishes its batches.
    before = resume_point(log)
    worker = start_worker(context, db, tiny_model_dir, log, batch_size=BATCH, batches=3)
    worker.join(60)
    assert worker.exitcode == 0
    assert resume_point(log) == before + 3
    _assert_intact(db, log)
    _assert_searchable(db, tiny_encoder, read_log(log).acknowledged)


def test_kill_while_encoding(tmp_path: Path, tiny_model_dir: Path) -> None:
    db, log = tmp_path / "crash.db", tmp_path / "worker.log"
    context = worker_context()
    for round_ in range(3):
        worker = start_worker(context, db, tiny_model_dir, log, slow_encode_s=0.05)
        # Let a batch or two commit, then kill in the middle of the next encoding.
        assert wait_for_line(log, "encoding", after=2 * round_ + 1)
        time.sleep(0.01)
        _kill(worker)
        assert read_log(log).in_add
        _assert_intact(db, log)


def test_kill_inside_the_write_transaction(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Killed with the batch's first document written and the transaction still open."""
    db, log = tmp_path / "crash.db", tmp_path / "worker.log"
    context = worker_context()
    for round_ in range(4):
        worker = start_worker(context, db, tiny_model_dir, log, slow_write_s=0.05)
        assert wait_for_line(log, "writing", after=3 * round_ + 2)
        _kill(worker)
        assert read_log(log).in_add
        _assert_intact(db, log)
    assert len(read_log(log).acknowledged) >= 4 * 2 * BATCH


@pytest.mark.parametrize(("codec", "pool_factor"), [("int8", 1), ("residual2", 2)])
def test_kill_during_centroid_retraining(
    tmp_path: Path, tiny_model_dir: Path, codec: str, pool_factor: int
) -> None:
    """Killed inside the retraining transaction: new centroids written, postings half done
    (and in a residual file every document already re-coded against them).

    Batches double in size, so the collection crosses the ~4x retraining threshold again and
    again; the worker pauses at a retraining's first re-posting and the test kills it there.
    """
    db, log = tmp_path / "crash.db", tmp_path / "worker.log"
    context = worker_context()
    settings = {"codec": codec, "pool_factor": pool_factor}
    for kills in range(3):
        worker = start_worker(
            context,
            db,
            tiny_model_dir,
            log,
            batch_size=2,
            grow=True,
            slow_retrain_s=5.0,
            **settings,
        )
        assert wait_for_line(log, "retraining", after=kills, timeout=60), "no retraining began"
        version_before = _centroid_version(db)
        _kill(worker)
        _assert_intact(db, log, batch_size=2, grow=True)
        # The killed retraining left no trace: the committed centroids are still in force.
        assert _centroid_version(db) == version_before
    # Restarted without pauses, the worker retrains for real and carries on.
    version_killed = _centroid_version(db)
    worker = start_worker(
        context, db, tiny_model_dir, log, batch_size=2, grow=True, batches=2, **settings
    )
    worker.join(timeout=120)
    assert worker.exitcode == 0
    _assert_intact(db, log, batch_size=2, grow=True)
    assert _centroid_version(db) > version_killed


def _count_lines(log: Path, word: str) -> int:
    """How many finished lines of the log start with ``word``."""
    if not log.exists():
        return 0
    lines = log.read_text(encoding="utf-8").split("\n")[:-1]
    return sum(1 for line in lines if line.split(" ", 1)[0] == word)


def _centroid_version(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        row = con.execute("SELECT version FROM centroids").fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


def _script_env() -> dict[str, str]:
    """Environment for a child interpreter: this checkout and tests/ importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    return env


def test_worker_script_killed_in_a_real_subprocess(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The same, through a plain ``python tests/crash_worker.py`` process (no fork server)."""
    db, log = tmp_path / "crash.db", tmp_path / "worker.log"
    command = [sys.executable, str(ROOT / "tests" / "crash_worker.py")]
    command += ["--db", str(db), "--model", str(tiny_model_dir), "--log", str(log)]
    for round_ in range(2):
        worker = subprocess.Popen(command, env=_script_env(), stderr=subprocess.PIPE)
        assert wait_for_line(log, "done", after=3 * round_ + 2), worker.stderr
        worker.kill()
        _, stderr = worker.communicate(timeout=10)
        assert worker.returncode == -signal.SIGKILL, stderr.decode()
        _assert_intact(db, log)
    finished = subprocess.run([*command, "--batches", "2"], env=_script_env(), check=False)
    assert finished.returncode == 0
    _assert_intact(db, log)


def _cli(model: Path, *args: str) -> list[str]:
    """The command line that runs ``edge-colbert --model MODEL ARGS`` from this checkout."""
    code = "import sys; from edge_colbert.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code, "--model", str(model), *args]


def _count(db: Path) -> int:
    """Documents committed so far (0 while the schema is not there yet)."""
    con = sqlite3.connect(db, timeout=5)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        if "documents" not in tables:
            return 0
        return int(con.execute("SELECT count(*) FROM documents").fetchone()[0])
    finally:
        con.close()


def _ids(db: Path) -> set[tuple[str, str]]:
    """The (id, stored text) pairs of an index."""
    con = sqlite3.connect(db)
    try:
        return set(con.execute("SELECT id, hex(text) FROM documents"))
    finally:
        con.close()


def test_cli_index_killed_then_rerun_finishes(tmp_path: Path, tiny_model_dir: Path) -> None:
    """``edge-colbert index`` killed twice, each time while batches remain, keeps every
    committed batch whole and nothing else, and a rerun ends where an uninterrupted run ends.

    The CLI gathers chunks of many files into ``ADD_CHUNKS``-chunk ``Index.add`` calls, one
    transaction each; the corpus is over four of those, so a kill soon after a run's first
    commit is seen always lands with at least one more batch to go.
    """
    corpus = tmp_path / "notes"
    corpus.mkdir()
    for n in range(1400):  # about 4,370 chunks: four full batches and part of a fifth
        paragraphs = [doc_text(n * 10 + p) for p in range(4)]
        (corpus / f"note{n:04d}.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    clean = tmp_path / "clean.db"
    done = subprocess.run(_cli(tiny_model_dir, "index", str(clean), str(corpus)), env=_script_env())
    assert done.returncode == 0
    everything = _ids(clean)
    assert len(everything) > 4 * ADD_CHUNKS, "the corpus must span more than four batches"

    db = tmp_path / "killed.db"
    rng = random.Random(99)
    partial: list[int] = []
    for _ in range(2):
        indexer = subprocess.Popen(
            _cli(tiny_model_dir, "index", str(db), str(corpus)),
            env=_script_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Wait for a batch committed beyond what earlier runs left (a run adds only the
        # chunks that are missing, so this is the run's first commit), then kill it a random
        # moment into the next batch's encoding or writing.
        start = partial[-1] if partial else 0
        seen = start
        deadline = time.monotonic() + 120
        while indexer.poll() is None and time.monotonic() < deadline:
            if db.exists():
                seen = _count(db)
                if seen > start:
                    break
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.1))
        indexer.send_signal(signal.SIGKILL)
        indexer.wait(10)
        assert indexer.returncode == -signal.SIGKILL, "the run ended before the kill"
        integrity, problems = check_structure(db)
        assert integrity == "ok" and not problems, problems
        kept = _ids(db)
        # Nothing committed is lost and nothing half-written stays: whole batches only, each
        # chunk as the uninterrupted run stores it.
        assert len(kept) >= seen > start, (start, seen, len(kept))
        assert (len(kept) - start) % ADD_CHUNKS == 0, (start, len(kept))
        assert kept <= everything
        partial.append(len(kept))
    assert all(0 < n < len(everything) for n in partial), f"a kill came after the end: {partial}"
    rerun = subprocess.run(_cli(tiny_model_dir, "index", str(db), str(corpus)), env=_script_env())
    assert rerun.returncode == 0
    integrity, problems = check_structure(db)
    assert integrity == "ok" and not problems, problems
    assert _ids(db) == everything, "the re-run did not end where an uninterrupted run ends"


def test_full_disk_rolls_the_batch_back(tmp_path: Path, tiny_encoder: Encoder) -> None:
    """A page limit stands in for a full disk: StorageFullError, and the file as before."""
    db = tmp_path / "full.db"
    with Index(db, encoder=tiny_encoder, train_tokens=64) as index:
        index.add([doc_text(n) for n in range(20)], ids=[f"doc-{n:06d}" for n in range(20)])
        before = _snapshot(db)
        connection = index.store.connection  # the documented hook for PRAGMAs in tests
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages + 2}")
        numbers = range(1000, 1400)  # far more than two pages, and past the retrain line
        with pytest.raises(StorageFullError) as caught:
            index.add([doc_text(n) for n in numbers], ids=[f"doc-{n:06d}" for n in numbers])
        assert "rolled back" in str(caught.value)
        assert _snapshot(db) == before and len(index) == 20
        # Room again: the same index takes the batch.
        connection.execute("PRAGMA max_page_count = 1073741823")
        index.add([doc_text(n) for n in numbers], ids=[f"doc-{n:06d}" for n in numbers])
        assert len(index) == 420
    integrity, problems = check_structure(db)
    assert integrity == "ok" and not problems


def _snapshot(db: Path) -> list[tuple[str, str, str]]:
    """Every stored (id, metadata, text as hex), sorted by id."""
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT id, metadata, hex(text) FROM documents ORDER BY id").fetchall()
    finally:
        con.close()


def test_the_check_sees_a_damaged_full_text_index(tmp_path: Path, tiny_encoder: Encoder) -> None:
    """The crash checks can fail: damaged full-text pages break FTS5's integrity-check, and
    a document whose entries are gone from the full-text index is not found by its rare
    word (a contentless table cannot compare itself with the text, so the word check is
    what catches a half-applied delete)."""
    db = tmp_path / "damaged.db"
    with Index(db, encoder=tiny_encoder) as index:
        index.add([doc_text(n) for n in range(BATCH)], ids=[doc_id(n) for n in range(BATCH)])
    acknowledged = {doc_id(n) for n in range(BATCH)}
    assert check_index(db, acknowledged, batch_size=BATCH, grow=False).ok
    shutil.copyfile(db, tmp_path / "pages.db")
    con = sqlite3.connect(db)
    with con:  # the FTS entries of rowid 2 (document 1) removed, nothing else
        con.execute(
            "INSERT INTO documents_fts(documents_fts, rowid, text) VALUES ('delete', 2, ?)",
            (doc_text(1),),
        )
    con.close()
    assert lost_by_words(db, acknowledged) == [doc_id(1)]
    assert not check_index(db, acknowledged, batch_size=BATCH, grow=False).ok
    pages = tmp_path / "pages.db"
    con = sqlite3.connect(pages)
    with con:
        con.execute("UPDATE documents_fts_data SET block = zeroblob(length(block)) WHERE id > 10")
    con.close()
    verdict = check_index(pages, acknowledged, batch_size=BATCH, grow=False)
    assert any("integrity-check" in problem for problem in verdict.problems), verdict
