"""Centroid training outside the write lock: other writers go on, late documents are
posted at the swap, a second trainer's work is dropped, and kill -9 mid-training of a pooled
file leaves the old centroids in service."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import edge_colbert.training as training
from edge_colbert import centroid_lists
from edge_colbert.encoder import Encoder
from edge_colbert.index import Index
from edge_colbert.kmeans import kmeans
from edge_colbert.prefilter import Prefilter
from edge_colbert.quantize import dequantize_int8

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "ember", "quartz"]
WORDS += ["meadow", "harbor", "lantern"]


def _texts(start: int, count: int) -> list[str]:
    return [
        " ".join(WORDS[(n * 7 + k * 3) % len(WORDS)] for k in range(6)) + f" note {n}"
        for n in range(start, start + count)
    ]


def _stored_postings_match_the_centroids(path: Path) -> int:
    """Every document is posted exactly under its tokens' nearest stored centroids."""
    con = sqlite3.connect(path)
    try:
        ((version, blob),) = con.execute("SELECT version, vectors FROM centroids")
        dim = int(con.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()[0])
        id_dtype = con.execute("SELECT value FROM meta WHERE key = 'centroid_ids'").fetchone()[0]
        pre = Prefilter.from_bytes(bytes(blob), dim)
        posted = dict(centroid_lists.rows(con))
        rows = con.execute("SELECT doc, codes FROM vectors").fetchall()
    finally:
        con.close()
    assert len(posted) == len(rows)
    for doc, codes in rows:
        vectors = dequantize_int8(np.frombuffer(codes, dtype=np.int8).reshape(-1, dim))
        ids = np.frombuffer(posted[doc], dtype=id_dtype).astype(np.int64)
        scores = vectors @ pre.centroids.T
        # Each token's best centroid is posted, and each posted one is some token's best
        # (up to float ties: BLAS rounds differently for differently shaped batches).
        best = scores.max(axis=1, keepdims=True)
        near_best = scores >= best - 1e-5
        assert near_best[:, ids].any(axis=1).all(), f"document {doc}: a token's centroid is missing"
        assert near_best[:, ids].any(axis=0).all(), f"document {doc}: a stray centroid"
    return int(version)


def test_other_writers_go_on_while_centroids_train(
    tmp_path: Path, tiny_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "busy.db"
    started, release = threading.Event(), threading.Event()
    real_kmeans = kmeans  # what training.kmeans is until the test replaces it

    def held_kmeans(*args: object, **kwargs: object) -> np.ndarray:
        """k-means that waits, the first time, until the test lets it go."""
        if not started.is_set():
            started.set()
            assert release.wait(60)
        return real_kmeans(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(training, "kmeans", held_kmeans)
    with Index(path, encoder=tiny_encoder, train_tokens=300) as trainer:
        trainer.add(_texts(0, 4))
        errors: list[BaseException] = []

        def crossing() -> None:
            try:
                trainer.add(_texts(4, 30))  # crosses train_tokens: trains after its commit
            except BaseException as error:  # noqa: BLE001 - reported to the test below
                errors.append(error)

        worker = threading.Thread(target=crossing)
        worker.start()
        assert started.wait(60), "training never began"
        # The trainer holds no lock now: a second writer commits at once (timeout 1 s).
        with Index(path, encoder=tiny_encoder, timeout=1.0, train_tokens=10**9) as other:
            began = time.perf_counter()
            other.add(_texts(100, 5), ids=[f"late-{n}" for n in range(5)])
            other.delete([f"late-{n}" for n in range(1)])
            assert time.perf_counter() - began < 5
            assert other.info()["centroid_version"] == 0  # not swapped in yet
        release.set()
        worker.join(60)
        assert not errors
        assert trainer.info()["centroid_version"] == 1
        assert len(trainer) == 34 + 4
        # The documents added during training were posted at the swap, under new centroids.
        assert _stored_postings_match_the_centroids(path) == 1
        hits = trainer.search(_texts(101, 1)[0], k=1)
        assert hits[0].id == "late-1"


def test_a_training_that_lost_the_race_is_dropped(
    tmp_path: Path, tiny_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "race.db"
    started, release = threading.Event(), threading.Event()
    real_kmeans = kmeans  # what training.kmeans is until the test replaces it
    first = threading.get_ident

    def held_kmeans(*args: object, **kwargs: object) -> np.ndarray:
        if not started.is_set():
            started.set()
            assert release.wait(60)
        return real_kmeans(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(training, "kmeans", held_kmeans)
    with Index(path, encoder=tiny_encoder, train_tokens=300) as slow:
        worker = threading.Thread(target=slow.add, args=(_texts(0, 30),))
        worker.start()
        assert started.wait(60)
        with Index(path, encoder=tiny_encoder, train_tokens=300) as fast:
            fast.add(_texts(50, 3))  # due too: trains (not held) and swaps in version 1
            assert fast.info()["centroid_version"] == 1
        release.set()
        worker.join(60)
        assert first is threading.get_ident
        assert slow.info()["centroid_version"] == 1  # the slow one's work was dropped
        assert _stored_postings_match_the_centroids(path) == 1
        assert slow.search(_texts(51, 1)[0], k=1)[0].text == _texts(51, 1)[0]


WORKER = """
import sys, time
import edge_colbert.training as training
from edge_colbert.encoder import Encoder
from edge_colbert.index import Index

path, model, log = sys.argv[1:4]
words = "alpha beta gamma delta river stone cloud ember quartz meadow harbor lantern".split()
texts = lambda a, n: [" ".join(words[(i * 7 + k * 3) % 12] for k in range(6)) + f" note {i}"
                      for i in range(a, a + n)]
real = training.kmeans
def logged_kmeans(*args, **kwargs):
    with open(log, "a") as f:
        f.write("training\\n")
    time.sleep(float(sys.argv[4]))
    return real(*args, **kwargs)
training.kmeans = logged_kmeans
with Index(path, encoder=Encoder(model, threads=1), train_tokens=200, pool_factor=2) as index:
    start = index.info()["documents"]
    for size in (20, 40, 80, 160):
        with open(log, "a") as f:
            f.write(f"begin {start + size}\\n")
        index.add(texts(start, size))
        start += size
        with open(log, "a") as f:
            f.write(f"done {start} {index.info()['centroid_version']}\\n")
"""


def _run_worker(
    tmp_path: Path, db: Path, model: Path, log: Path, pause: float
) -> subprocess.Popen[bytes]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(script), str(db), str(model), str(log), str(pause)], env=env
    )


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_kill_during_retraining_of_a_pooled_file_keeps_the_old_centroids(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    db, log = tmp_path / "pooled.db", tmp_path / "log.txt"
    worker = _run_worker(tmp_path, db, tiny_model_dir, log, pause=0.0)
    assert worker.wait(120) == 0
    trained = [line for line in _lines(log) if line.startswith("done")]
    version = int(trained[-1].split()[2])
    count = int(trained[-1].split()[1])
    assert version >= 1
    # Again, adding more: the retraining it triggers is killed in the middle of k-means.
    log.unlink()
    worker = _run_worker(tmp_path, db, tiny_model_dir, log, pause=60.0)
    deadline = time.time() + 120
    while "training" not in _lines(log) and time.time() < deadline:
        time.sleep(0.05)
    assert "training" in _lines(log), "no retraining began"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(30)
    # The batch whose add() was training had committed before the training began.
    committed = int([line for line in _lines(log) if line.startswith("begin")][-1].split()[1])
    assert committed > count
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT count(*) FROM documents").fetchone()[0] == committed
        assert con.execute("SELECT version FROM centroids").fetchone()[0] == version
        assert con.execute("SELECT value FROM meta WHERE key='pool_factor'").fetchone()[0] == "2"
    finally:
        con.close()
    # The old centroids are in service: every document is posted under them and found.
    assert _stored_postings_match_the_centroids(db) == version
    with Index(db, encoder=Encoder(tiny_model_dir, threads=1)) as index:
        assert index.pool_factor == 2 and len(index) == committed
        assert index.info()["centroid_version"] == version
        assert index.search(_texts(count + 3, 1)[0], k=1)[0].text == _texts(count + 3, 1)[0]
    # Resumed (no pause), the next add trains for real.
    log.unlink()
    worker = _run_worker(tmp_path, db, tiny_model_dir, log, pause=0.0)
    assert worker.wait(180) == 0
    assert _stored_postings_match_the_centroids(db) > version
