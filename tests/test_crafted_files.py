"""Crafted index files: every case ends with one clear edge-colbert error or correct
behaviour, never tampering, a hang or a memory blowup.

Each case starts from a copy of one real index (the tiny model, trained centroids), changes
it with plain ``sqlite3`` the way a hostile or damaged file would be, then runs one action
(open, search, add, delete, read every document, info, the CLI) in a subprocess limited to
10 s and 1 GiB of address space (``RLIMIT_AS``). The subprocess reports what happened as
one JSON line; the test checks the class of the error (an ``EdgeColbertError``, usually an
``IndexFileError`` naming the file) or the result, and that nothing was tampered with.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_model import build_tiny_model

from edge_colbert import Index
from edge_colbert.encoder import Encoder

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
# A crafted file must be refused or read, never hang: a hang runs far past this. 10 s was
# too tight for a loaded CI machine (the subprocess imports numpy and onnxruntime first):
# a NaN-centroid case and a flipped page each ran past it there while passing alone.
TIME_LIMIT_S = 30
MEMORY_LIMIT = 1 << 30

WORDS = [
    "water",
    "cold",
    "sun",
    "hot",
    "river",
    "sea",
    "cell",
    "gene",
    "mountain",
    "city",
    "tree",
    "bird",
    "dog",
    "fish",
]
TEXTS = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(12)) for i in range(40)]
IDS = [f"d{i}" for i in range(40)]

WORKER = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
sys.path[:0] = [{root!r}, {tests!r}]
db, model, action = sys.argv[1:4]
report = {{}}
try:
    from edge_colbert import EdgeColbertError, Index
    from edge_colbert.encoder import Encoder
    encoder = Encoder(model, providers=["CPUExecutionProvider"], threads=1)
    with Index(db, encoder=encoder) as index:
        if action == "search":
            report["hits"] = [h.id for h in index.search("cold water", k=3)]
        elif action == "exhaustive":
            report["hits"] = [h.id for h in index.search("cold water", k=3, exhaustive=True)]
        elif action == "add":
            index.add(["a new note about the cold water"], ids=["new"])
            report["count"] = len(index)
        elif action == "delete":
            report["deleted"] = index.delete(["d1"])
        elif action == "read":
            report["read"] = sum(1 for doc_id in list(index) if index.get(doc_id) is not None)
            report["metadata"] = len(list(index.metadata()))
        elif action == "info":
            report["info"] = {{k: str(v) for k, v in index.info().items()}}
        elif action != "open":
            raise SystemExit("unknown action " + action)
    report["outcome"] = "ok"
except EdgeColbertError as error:
    report.update(outcome="error", type=type(error).__name__, message=str(error))
except BaseException as error:
    report.update(outcome="crash", type=type(error).__name__, message=str(error)[:500])
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("crafted-model") / "tiny")


@pytest.fixture(scope="module")
def base_index(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real index with trained centroids, checkpointed so that the .db holds everything."""
    path = tmp_path_factory.mktemp("crafted-base") / "base.db"
    encoder = Encoder(model_dir, providers=["CPUExecutionProvider"], threads=1)
    with Index(path, encoder=encoder, train_tokens=64) as index:
        index.add(TEXTS, ids=IDS, metadata=[{"n": i} for i in range(len(IDS))])
        assert index.info()["centroids"] > 0
    _checkpoint(path)
    return path


def _checkpoint(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _run(db: Path, model: Path, action: str) -> dict[str, Any]:
    """Run ``action`` on ``db`` in a limited subprocess; its JSON report."""
    script = WORKER.format(limit=MEMORY_LIMIT, root=str(ROOT), tests=str(TESTS))
    try:
        result = subprocess.run(
            [sys.executable, "-c", script, str(db), str(model), action],
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT_S,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{action} on the crafted file ran past {TIME_LIMIT_S} s")
    lines = result.stdout.strip().splitlines()
    assert lines, f"no report (exit {result.returncode}): {result.stderr[-2000:]}"
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def _sql(path: Path, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in statements:
        if isinstance(statement, tuple):
            conn.execute(*statement)
        else:
            conn.execute(statement)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _edit_chunk(
    path: Path,
    *,
    rowids: Callable[[np.ndarray], np.ndarray] | None = None,
    sizes: Callable[[np.ndarray], np.ndarray] | None = None,
) -> None:
    """Rewrite the first centroid-list chunk's rowids or byte sizes (little-endian int64,
    uint32) through ``rowids`` or ``sizes``."""
    conn = sqlite3.connect(path, isolation_level=None)
    key, stored_rowids, stored_sizes = conn.execute(
        "SELECT last, rowids, sizes FROM centroid_lists ORDER BY last LIMIT 1"
    ).fetchone()
    new_rowids = np.frombuffer(stored_rowids, dtype="<i8")
    new_sizes = np.frombuffer(stored_sizes, dtype="<u4").astype(np.int64)
    if rowids is not None:
        new_rowids = rowids(new_rowids)
    if sizes is not None:
        new_sizes = sizes(new_sizes)
    conn.execute(
        "UPDATE centroid_lists SET rowids = ?, sizes = ? WHERE last = ?",
        (new_rowids.astype("<i8").tobytes(), new_sizes.astype("<u4").tobytes(), key),
    )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _texts(path: Path) -> list[Any]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, text FROM documents ORDER BY rowid").fetchall()
    finally:
        conn.close()


def _assert_file_error(report: dict[str, Any], db: Path, *words: str) -> None:
    assert report["outcome"] == "error", report
    assert report["type"] in ("IndexFileError", "ReadOnlyIndexError"), report
    assert str(db) in report["message"] and "\n" not in report["message"], report
    for word in words:
        assert word.lower() in report["message"].lower(), report


Craft = Callable[[Path], None]


def _bomb(path: Path) -> None:
    """One text column: ~1.2 MB stored, 1.5 GB inflated."""
    packer = zlib.compressobj(9)
    zeros = b"\0" * (64 << 20)
    blob = b"".join(packer.compress(zeros) for _ in range(24)) + packer.flush()
    _sql(path, ("UPDATE documents SET text = ? WHERE id = 'd3'", (blob,)))


# name: (craft, action, expected words in the IndexFileError message, or None for "ok")
CASES: dict[str, tuple[Craft, str, tuple[str, ...] | None]] = {
    "trigger rewriting texts on insert": (
        lambda p: _sql(
            p,
            "CREATE TRIGGER t AFTER INSERT ON documents BEGIN "
            "UPDATE documents SET text = 'pwned'; END",
        ),
        "add",
        ("trigger",),
    ),
    "trigger copying deleted texts": (
        lambda p: _sql(
            p,
            "CREATE TABLE hidden (t)",
            "CREATE TRIGGER t BEFORE DELETE ON documents BEGIN "
            "INSERT INTO hidden VALUES (old.text); END",
        ),
        "delete",
        ("trigger",),
    ),
    "RAISE trigger": (
        lambda p: _sql(
            p,
            "CREATE TRIGGER t BEFORE INSERT ON documents BEGIN SELECT RAISE(ABORT, 'no'); END",
        ),
        "add",
        ("trigger",),
    ),
    "meta view over an endless recursive CTE": (
        lambda p: _sql(
            p,
            "ALTER TABLE meta RENAME TO meta_real",
            "CREATE VIEW meta AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
            "SELECT 'app' AS key, 'edge-colbert' AS value FROM c",
        ),
        "open",
        ("view",),
    ),
    "view of someone else": (
        lambda p: _sql(p, "CREATE VIEW v AS SELECT * FROM documents"),
        "search",
        ("view",),
    ),
    "extra index": (
        lambda p: _sql(p, "CREATE INDEX evil ON documents(text)"),
        "open",
        ("evil",),
    ),
    "extra table": (
        lambda p: _sql(p, "CREATE TABLE notes (x)"),
        "read",
        ("notes",),
    ),
    "documents redefined with a default": (
        lambda p: _sql(
            p,
            "PRAGMA writable_schema = ON",
            "UPDATE sqlite_master SET sql = replace(sql, 'DEFAULT ''{}''', "
            "'DEFAULT (zeroblob(1000000000))') WHERE name = 'documents'",
        ),
        "open",
        ("documents",),
    ),
    "thousands of schema objects": (
        lambda p: _sql(p, *[f"CREATE TABLE t{i} (x)" for i in range(300)]),
        "open",
        ("schema objects",),
    ),
    "zlib bomb in one text": (_bomb, "read", ("documents row", "inflates past")),
    "text that is not zlib": (
        lambda p: _sql(p, ("UPDATE documents SET text = ? WHERE id = 'd2'", (b"garbage",))),
        "read",
        ("documents row", "zlib"),
    ),
    "text that is not UTF-8": (
        lambda p: _sql(
            p,
            ("UPDATE documents SET text = ? WHERE id = 'd2'", (zlib.compress(b"\xff\xfe" * 200),)),
        ),
        "read",
        ("documents row",),
    ),
    "metadata that is not JSON": (
        lambda p: _sql(p, "UPDATE documents SET metadata = '{not json' WHERE id = 'd4'"),
        "read",
        ("documents row",),
    ),
    "metadata that is a JSON list": (
        lambda p: _sql(p, "UPDATE documents SET metadata = '[1, 2]' WHERE id = 'd4'"),
        "read",
        ("documents row",),
    ),
    "n_tokens that is text": (
        lambda p: _sql(p, "UPDATE documents SET n_tokens = 'many' WHERE id = 'd5'"),
        "read",
        ("documents row",),
    ),
    "rowid_high at 2**63-1": (
        lambda p: _sql(
            p,
            "INSERT INTO meta(key, value) VALUES ('rowid_high', '9223372036854775807') "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        ),
        "add",
        ("rowid_high",),
    ),
    "dim that is not a number": (
        lambda p: _sql(p, "UPDATE meta SET value = 'wide' WHERE key = 'dim'"),
        "open",
        ("dimension",),
    ),
    "dim missing": (
        lambda p: _sql(p, "DELETE FROM meta WHERE key = 'dim'"),
        "open",
        ("dimension",),
    ),
    "meta with a 17 MiB value": (
        lambda p: _sql(p, ("INSERT INTO meta VALUES ('junk', ?)", ("x" * (17 << 20),))),
        "open",
        ("over 1 MiB",),
    ),
    "ten thousand meta rows": (
        lambda p: _sql(
            p,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10000) "
            "INSERT INTO meta SELECT 'k' || x, 'v' FROM c",
        ),
        "open",
        ("meta rows",),
    ),
    "centroid id type that is not an integer type": (
        lambda p: _sql(p, "UPDATE meta SET value = 'float64' WHERE key = 'centroid_ids'"),
        "search",
        ("centroid_ids",),
    ),
    "centroid ids past the last centroid": (
        lambda p: _sql(
            p, "UPDATE centroid_lists SET ids = CAST(x'e8fd0300' || substr(ids, 5) AS BLOB)"
        ),
        "search",
        ("centroid_lists",),
    ),
    "centroid id lists whose sizes add up": (
        lambda p: _edit_chunk(p, sizes=lambda s: s + np.array([1, -1] + [0] * (s.size - 2))),
        "search",
        ("centroid_lists",),
    ),
    "centroid list sizes that do not add up to the ids": (
        lambda p: _sql(p, "UPDATE centroid_lists SET ids = substr(ids, 1, length(ids) - 2)"),
        "search",
        ("centroid_lists",),
    ),
    "centroid list rowids out of order": (
        lambda p: _edit_chunk(p, rowids=lambda r: r[[1, 0, *range(2, r.size)]]),
        "search",
        ("centroid_lists",),
    ),
    "centroid list rowids above the chunk's key": (
        lambda p: _sql(p, "UPDATE centroid_lists SET last = last - 1"),
        "search",
        ("centroid_lists",),
    ),
    "vector blob of the wrong length": (
        lambda p: _sql(p, "UPDATE vectors SET codes = substr(codes, 1, 7) WHERE doc = 3"),
        "exhaustive",
        (),
    ),
    "vector blob stored as text that is not UTF-8": (
        lambda p: _sql(p, "UPDATE vectors SET codes = codes || x'00' WHERE doc = 4"),
        "exhaustive",
        ("codes",),
    ),
    "vector blobs whose lengths add up": (
        lambda p: _sql(
            p,
            "UPDATE vectors SET codes = substr(codes, 1, length(codes) - 7) WHERE doc = 3",
            "UPDATE vectors SET codes = CAST(codes || zeroblob(7) AS BLOB) WHERE doc = 4",
        ),
        "exhaustive",
        ("vectors row",),
    ),
    "8 flipped bytes inside a vector blob": (
        lambda p: _sql(
            p,
            "UPDATE vectors SET codes = CAST(substr(codes, 1, 8) || zeroblob(8) "
            "|| substr(codes, 17) AS BLOB) WHERE doc = 6",
        ),
        "exhaustive",
        ("crc32",),
    ),
    "vector blob empty": (
        lambda p: _sql(p, "UPDATE vectors SET codes = x'' WHERE doc = 3"),
        "exhaustive",
        None,
    ),
    "NaN centroids": (
        lambda p: _sql(
            p,
            (
                "UPDATE centroids SET vectors = ?",
                (np.full(64 * 16, np.nan, dtype=np.float32).tobytes(),),
            ),
        ),
        "search",
        ("centroids",),
    ),
    "centroids of the wrong length": (
        lambda p: _sql(p, "UPDATE centroids SET vectors = substr(vectors, 1, 13)"),
        "search",
        ("centroids",),
    ),
    "huge token counts": (
        lambda p: _sql(p, "UPDATE documents SET n_tokens = 4611686018427387904"),
        "search",
        None,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_crafted_file(case: str, base_index: Path, model_dir: Path, tmp_path: Path) -> None:
    craft, action, words = CASES[case]
    db = tmp_path / "crafted.db"
    shutil.copy(base_index, db)
    craft(db)
    before = _texts(db) if action in ("add", "delete") else None
    report = _run(db, model_dir, action)
    if words is None:
        assert report["outcome"] in ("ok", "error"), report
        if report["outcome"] == "error":
            _assert_file_error(report, db)
    else:
        _assert_file_error(report, db, *words)
    if before is not None:
        # Refused before anything ran: no trigger fired, nothing was written.
        assert _texts(db) == before
        conn = sqlite3.connect(db)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "hidden" in tables:
            assert conn.execute("SELECT count(*) FROM hidden").fetchone()[0] == 0
        conn.close()


def test_untouched_copy_works_in_the_limits(
    base_index: Path, model_dir: Path, tmp_path: Path
) -> None:
    db = tmp_path / "plain.db"
    shutil.copy(base_index, db)
    for action in ("search", "exhaustive", "read", "add", "delete", "info"):
        report = _run(db, model_dir, action)
        assert report["outcome"] == "ok", (action, report)
    assert _run(db, model_dir, "read")["read"] == len(IDS)  # 40 + "new" - "d1"


@pytest.mark.parametrize("offset_pages", [4, 40, 200])
def test_flipped_page_is_an_index_file_error(
    base_index: Path, model_dir: Path, tmp_path: Path, offset_pages: int
) -> None:
    db = tmp_path / "flipped.db"
    shutil.copy(base_index, db)
    data = bytearray(db.read_bytes())
    start = min(offset_pages * 512, len(data) - 4096)
    data[start : start + 4096] = os.urandom(4096)
    db.write_bytes(bytes(data))
    for action in ("open", "read", "exhaustive"):
        report = _run(db, model_dir, action)
        assert report["outcome"] in ("ok", "error"), (action, report)
        if report["outcome"] == "error":
            _assert_file_error(report, db)


def test_cli_damaged_file_is_one_line(base_index: Path, model_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "damaged.db"
    shutil.copy(base_index, db)
    _sql(db, ("UPDATE documents SET text = ? WHERE id = 'd2'", (b"garbage",)))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_colbert",
            "--model",
            str(model_dir),
            "search",
            str(db),
            "cold water",
            "--exhaustive",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert "Traceback" not in result.stderr
    if result.returncode != 0:
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "edge-colbert check" in result.stderr
