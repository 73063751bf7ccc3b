"""`edge-colbert compact`: another codec or pool factor, documents kept, swapped in whole."""

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
from typing import Any

import pytest

from edge_colbert import Index
from edge_colbert.compact import compact_index
from edge_colbert.encoder import Encoder
from edge_colbert.errors import InvalidInputError, ReadOnlyIndexError, StorageFullError
from edge_colbert.maintenance import check_index

ROOT = Path(__file__).resolve().parents[1]
WORDS = [
    "water",
    "cold",
    "sun",
    "hot",
    "river",
    "sea",
    "cell",
    "gene",
    "city",
    "tree",
    "stone",
    "cloud",
    "harbor",
    "lantern",
]


def _texts(count: int) -> list[str]:
    return [
        " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(8 + i % 5)) + f" n{i}"
        for i in range(count)
    ]


@pytest.fixture
def int8_path(tmp_path: Path, tiny_encoder: Encoder) -> Path:
    path = tmp_path / "notes.db"
    with Index(path, encoder=tiny_encoder, train_tokens=64) as index:
        index.add(
            _texts(300), ids=[f"d{i}" for i in range(300)], metadata=[{"i": i} for i in range(300)]
        )
    return path


def _rows(path: Path) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(
            "SELECT rowid, id, text, metadata FROM documents ORDER BY rowid"
        ).fetchall()
    finally:
        con.close()


def test_compact_to_residual_codes_and_pooling_keeps_every_document(
    int8_path: Path, tiny_encoder: Encoder
) -> None:
    rows = _rows(int8_path)
    with Index(int8_path, encoder=tiny_encoder) as index:
        before = [h.id for h in index.search("river sea n12", k=5, mode="semantic")]
    report = compact_index(int8_path, codec="residual2", pool_factor=2)
    assert (report.codec_before, report.codec_after) == ("int8", "residual2")
    assert (report.pool_factor_before, report.pool_factor_after) == (1, 2)
    assert report.documents == 300 and report.tokens_after < 0.6 * report.tokens_before
    assert report.bytes_after < 0.6 * report.bytes_before
    assert _rows(int8_path) == rows  # rowids, ids, stored texts and metadata as they were
    assert check_index(int8_path).ok
    assert not int8_path.with_name("notes.db.compact").exists()
    with Index(int8_path, encoder=tiny_encoder) as index:
        info = index.info()
        assert (info["codec"], info["pool_factor"]) == ("residual2", 2)
        assert info["tokens"] == report.tokens_after and info["centroid_version"] >= 1
        after = [h.id for h in index.search("river sea n12", k=5, mode="semantic")]
        assert len(set(before) & set(after)) >= 3
        assert [h.id for h in index.search("n42", k=1, mode="keyword")] == ["d42"]
        index.add(["a new note about the harbor lantern"], ids=["new"])  # the new settings
        assert "new" in index
    con = sqlite3.connect(int8_path)
    widths = {
        length / tokens
        for length, tokens in con.execute(
            "SELECT length(v.codes), d.n_tokens FROM vectors v JOIN documents d ON d.rowid = v.doc"
        )
    }
    con.close()
    assert widths == {2 + tiny_encoder.dim * 2 // 8}


def test_compact_back_to_int8(int8_path: Path, tiny_encoder: Encoder) -> None:
    compact_index(int8_path, codec="residual4")
    report = compact_index(int8_path, codec="int8")
    assert (report.codec_before, report.codec_after) == ("residual4", "int8")
    assert check_index(int8_path).ok
    with Index(int8_path, encoder=tiny_encoder) as index:
        assert index.codec == "int8" and len(index) == 300


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"codec": "pq"}, "codec must be one of"),
        ({"pool_factor": 0}, "pool_factor must be"),
        ({"pool_factor": 99}, "pool_factor must be"),
    ],
)
def test_bad_settings_are_refused_untouched(
    int8_path: Path, kwargs: dict[str, object], message: str
) -> None:
    before = int8_path.read_bytes()
    with pytest.raises(InvalidInputError, match=message):
        compact_index(int8_path, **kwargs)  # type: ignore[arg-type]
    assert int8_path.read_bytes() == before


def test_pooling_can_only_go_further(int8_path: Path) -> None:
    compact_index(int8_path, pool_factor=2)
    before = int8_path.read_bytes()
    with pytest.raises(InvalidInputError, match=r"pooled by 2.*multiple of it.*not to 3"):
        compact_index(int8_path, pool_factor=3)
    assert int8_path.read_bytes() == before
    assert not int8_path.with_name("notes.db.compact").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anyway")
def test_a_read_only_file_is_refused_untouched(int8_path: Path) -> None:
    int8_path.chmod(0o444)
    try:
        with pytest.raises(ReadOnlyIndexError, match="read-only; compact writes a new copy"):
            compact_index(int8_path, codec="residual2")
    finally:
        int8_path.chmod(0o644)


def test_a_full_disk_is_refused_untouched(int8_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No room for the new copy: SQLite's own page limit on the copy's connection stands
    in for a full disk (SQLITE_FULL, as ENOSPC gives). One StorageFullError that says what
    is needed, the index byte for byte as it was, no half-made copy left."""
    connect = sqlite3.connect

    def no_room(database: str | Path, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = connect(database, *args, **kwargs)
        if str(database).endswith(".compact"):
            conn.execute("PRAGMA max_page_count = 64")  # 32 KiB at 512-byte pages
        return conn

    before = int8_path.read_bytes()
    rows = _rows(int8_path)
    monkeypatch.setattr(sqlite3, "connect", no_room)
    with pytest.raises(StorageFullError, match=r"no room to write the compacted copy.*free beside"):
        compact_index(int8_path, codec="residual2", pool_factor=2)
    monkeypatch.undo()
    assert int8_path.read_bytes() == before
    assert not int8_path.with_name("notes.db.compact").exists()
    assert _rows(int8_path) == rows
    assert compact_index(int8_path, codec="residual2").documents == 300  # with room, it works


def _compact_cli(path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``edge-colbert compact PATH OPTIONS`` in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "edge_colbert", "compact", str(path), *options],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_the_cli_reports_the_sizes(int8_path: Path) -> None:
    done = _compact_cli(int8_path, "--codec", "residual4")
    assert done.returncode == 0, done.stderr
    assert "int8 pooled by 1 -> residual4 pooled by 1;" in done.stdout
    assert "MiB ->" in done.stdout and "stored tokens" in done.stdout
    bad = _compact_cli(int8_path, "--pool-factor", "0")
    assert bad.returncode == 1 and bad.stderr.startswith("edge-colbert: error:")
    assert "Traceback" not in bad.stderr


def test_compact_killed_at_any_moment_leaves_old_or_new(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    source = tmp_path / "source.db"
    with Index(source, encoder=tiny_encoder, train_tokens=64) as index:
        index.add(_texts(1500), ids=[f"d{i}" for i in range(1500)])
    rng = random.Random(0)
    outcomes = []
    for attempt in range(5):
        db = tmp_path / f"kill{attempt}.db"
        shutil.copy(source, db)
        worker = subprocess.Popen(
            [sys.executable, "-m", "edge_colbert", "compact", str(db), "--codec", "residual2"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 5.0))
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        assert check_index(db).ok
        with Index(db, encoder=tiny_encoder, readonly=True) as index:
            assert len(index) == 1500
            outcomes.append(index.codec)
        # Run again after the kill: it finishes from either state.
        compact_index(db, codec="residual2")
        with Index(db, encoder=tiny_encoder, readonly=True) as index:
            assert index.codec == "residual2" and len(index) == 1500
    print("compact kill outcomes (int8 old, residual2 new):", outcomes)
