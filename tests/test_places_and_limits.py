"""Where an index lives and what a caller may pass: read-only media, full disks, missing
folders, integer ids, deep metadata, huge ``where`` filters, and the file check's own
guarantees (hardened connections, migrated files still pass)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_colbert import Index
from edge_colbert.encoder import Encoder
from edge_colbert.errors import IndexFileError, InvalidInputError
from edge_colbert.filecheck import check_file, expected_schemas, normalize_sql

ROOT = Path(__file__).resolve().parents[1]
NOTES = ["the water is cold", "the sun is hot", "rivers run to the sea"]


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or sys.platform != "linux":
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True
    )
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(
    not _can_unshare(),
    reason="needs `unshare -rm` (user and mount namespaces) to mount a small tmpfs",
)


def _in_namespace(shell: str, script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``shell`` (mounting under $M) then ``script`` with Python, in a private mount
    namespace where $M is a folder under ``tmp_path``."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    program = tmp_path / "script.py"
    program.write_text(textwrap.dedent(script), encoding="utf-8")
    command = f"M={mount}; {shell} && {sys.executable} {program}"
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


_OPEN_BOTH = """
import sys
sys.path.insert(0, {root!r})
from edge_colbert import Index, EdgeColbertError
from edge_colbert.encoder import Encoder
encoder = Encoder({model!r}, providers=["CPUExecutionProvider"], threads=1)
for readonly in (True, False):
    try:
        with Index({db!r}, encoder=encoder, readonly=readonly) as index:
            hit = index.search("cold water", k=1)[0].id
            print("readonly" if readonly else "writable", "ok", hit)
    except EdgeColbertError as error:
        print("readonly" if readonly else "writable", type(error).__name__, error)
"""


@needs_mounts
def test_cleanly_closed_index_on_read_only_media_is_searchable(
    tmp_path: Path, tiny_encoder: Encoder, tiny_model_dir: Path
) -> None:
    source = tmp_path / "source.db"
    with Index(source, encoder=tiny_encoder) as index:
        index.add(NOTES, ids=["water", "sun", "river"])
    db = tmp_path / "mnt" / "notes.db"
    result = _in_namespace(
        f"mount -t tmpfs -o size=20m tmpfs $M && cp {source} $M/notes.db && mount -o remount,ro $M",
        _OPEN_BOTH.format(root=str(ROOT), model=str(tiny_model_dir), db=str(db)),
        tmp_path,
    )
    lines = result.stdout.splitlines()
    assert "readonly ok water" in lines, result.stdout + result.stderr
    writable = next(line for line in lines if line.startswith("writable"))
    assert "IndexFileError" in writable and "read-only" in writable, writable
    assert "not a SQLite database" not in result.stdout


@needs_mounts
def test_creating_on_a_full_disk_leaves_no_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    db = tmp_path / "mnt" / "new.db"
    script = f"""
    import os, sys
    sys.path.insert(0, {str(ROOT)!r})
    from edge_colbert import Index, EdgeColbertError
    from edge_colbert.encoder import Encoder
    encoder = Encoder({str(tiny_model_dir)!r}, providers=["CPUExecutionProvider"], threads=1)
    try:
        Index({str(db)!r}, encoder=encoder)
        print("created")
    except EdgeColbertError as error:
        print(type(error).__name__, error)
    print("left:", sorted(os.listdir({str(db.parent)!r})))
    """
    result = _in_namespace(
        "mount -t tmpfs -o size=300k tmpfs $M && head -c 290000 /dev/zero > $M/fill",
        script,
        tmp_path,
    )
    assert "StorageFullError" in result.stdout and "full" in result.stdout, result
    assert "left: ['fill']" in result.stdout, result.stdout


def test_missing_folder_is_refused_not_created(tmp_path: Path, tiny_encoder: Encoder) -> None:
    path = tmp_path / "no" / "such" / "dir" / "x.db"
    with pytest.raises(IndexFileError, match=r"does not exist.*mkdir -p"):
        Index(path, encoder=tiny_encoder)
    assert not (tmp_path / "no").exists()


def test_busy_advice_names_no_cli_option_that_does_not_exist(tmp_path: Path) -> None:
    source = (ROOT / "edge_colbert" / "store.py").read_text(encoding="utf-8")
    assert "larger timeout=" not in source
    assert "Index(path, timeout=SECONDS)" in source


# ----------------------------------------------------------------- inputs


def test_integer_ids_are_refused_so_123_never_replaces_the_text_123(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    with Index(tmp_path / "ids.db", encoder=tiny_encoder) as index:
        index.add([NOTES[0]], ids=["123"])
        with pytest.raises(InvalidInputError, match=r"integer 123.*str\(id\)"):
            index.add([NOTES[1]], ids=[123])
        assert index.get("123") is not None and index.get("123").text == NOTES[0]  # type: ignore[union-attr]
        assert len(index) == 1


def test_metadata_nested_5000_deep_is_invalid_input(tmp_path: Path, tiny_encoder: Encoder) -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(5000):
        child: dict[str, object] = {}
        node["a"] = child
        node = child
    with Index(tmp_path / "deep.db", encoder=tiny_encoder) as index:
        with pytest.raises(InvalidInputError, match=r"nested .* levels deep"):
            index.add([NOTES[0]], metadata=[deep])
        # 64 levels are fine, and stay filterable by SQLite's JSON functions.
        shallow: dict[str, object] = {"k": 1}
        for _ in range(62):
            shallow = {"k": 1, "x": shallow}
        index.add([NOTES[0]], ids=["ok"], metadata=[shallow])
        assert [h.id for h in index.search("water", k=1, where={"k": 1})] == ["ok"]


@pytest.mark.parametrize("count", [998, 1000, 5000])
def test_where_with_thousands_of_values_holds(
    tmp_path: Path, tiny_encoder: Encoder, count: int
) -> None:
    with Index(tmp_path / "where.db", encoder=tiny_encoder) as index:
        index.add(NOTES, ids=["a", "b", "c"], metadata=[{"n": 5}, {"n": "5"}, {"n": 7.0}])
        values: list[object] = [*range(10_000, 10_000 + count), 5, 7, True, None]
        hits = index.search("water", k=3, where={"n": values})
        assert sorted(h.id for h in hits) == ["a", "c"]  # 5 and 7.0, never the text "5"
        texts = [f"v{i}" for i in range(count)] + ["5"]
        assert [h.id for h in index.search("water", k=3, where={"n": texts})] == ["b"]


def test_where_with_too_many_keys_is_refused(tmp_path: Path, tiny_encoder: Encoder) -> None:
    with Index(tmp_path / "keys.db", encoder=tiny_encoder) as index:
        where = {f"k{i}": i for i in range(200)}
        index.add(NOTES[:1], metadata=[where])
        assert index.search("water", k=1, where=where)  # balanced AND: no depth error
        with pytest.raises(InvalidInputError, match="at most 256"):
            index.search("water", k=1, where={f"k{i}": i for i in range(1000)})


# ------------------------------------------------------------- file check


def test_connections_are_hardened(tmp_path: Path, tiny_encoder: Encoder) -> None:
    with Index(tmp_path / "h.db", encoder=tiny_encoder) as index:
        conn = index.store.connection
        assert conn.execute("PRAGMA trusted_schema").fetchone()[0] == 0
        assert conn.execute("PRAGMA recursive_triggers").fetchone()[0] == 0


def test_a_fresh_index_matches_the_expected_schema_exactly(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    path = tmp_path / "fresh.db"
    with Index(path, encoder=tiny_encoder) as index:
        index.add(NOTES)
    check_file(path)  # passes
    conn = sqlite3.connect(path)
    rows = {
        (t, n, tb, normalize_sql(sql))
        for t, n, tb, sql in conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")
    }
    conn.close()
    exact, _ = expected_schemas()
    assert frozenset(r for r in rows if not r[1].startswith("sqlite_stat")) in exact


def test_a_migrated_file_passes_the_exact_check_afterwards(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    """A version 1 file (version 1's tables, made from the frozen schema) is checked against
    the known objects, migrated on open, and then holds exactly a current schema."""
    from edge_colbert.filecheck import FROZEN_SCHEMAS

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in FROZEN_SCHEMAS[1]:
        conn.execute(statement)
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [
            ("app", "edge-colbert"),
            ("schema_version", "1"),
            ("model_identity", tiny_encoder.identity),
            ("model_name", tiny_encoder.manifest.name),
            ("dim", str(tiny_encoder.dim)),
            ("centroid_version", "0"),
            ("trained_on_tokens", "0"),
        ],
    )
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    check_file(path)
    with Index(path, encoder=tiny_encoder) as index:
        index.add(NOTES, ids=["water", "sun", "river"])
        assert index.search("cold water", k=1)[0].id == "water"
    check_file(path)  # now exactly the current schema
    conn = sqlite3.connect(path)
    conn.execute("CREATE TRIGGER t AFTER INSERT ON documents BEGIN SELECT 1; END")
    conn.commit()
    conn.close()
    with pytest.raises(IndexFileError, match="trigger"):
        check_file(path)


# ------------------------------------------------------------------- CLI


def _cli(*args: str | bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_colbert", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_cli_query_and_where_edge_cases(
    tmp_path: Path, tiny_encoder: Encoder, tiny_model_dir: Path
) -> None:
    db = tmp_path / "cli.db"
    with Index(db, encoder=tiny_encoder) as index:
        index.add(NOTES, ids=["water", "sun", "river"], metadata=[{"café": 1}, {}, {"n": 2}])
    model = ["--model", str(tiny_model_dir)]
    # A query argument that is not UTF-8: one line, exit 1, no traceback.
    broken = _cli(*model, "search", str(db), b"\xff\xfe water")
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1 and "UTF-8" in broken.stderr
    # One key given twice with two values cannot match: refused, not the last one kept.
    twice = _cli(*model, "search", str(db), "water", "--where", "n=1", "--where", "n=2")
    assert twice.returncode == 1 and "twice" in twice.stderr
    # A non-ASCII key is a key like any other.
    accented = _cli(*model, "search", str(db), "water", "--where", "café=1", "--json")
    assert accented.returncode == 0, accented.stderr
    assert '"id": "water"' in accented.stdout


def test_text_over_the_stored_limit_is_refused(tmp_path: Path, tiny_encoder: Encoder) -> None:
    from edge_colbert.records import MAX_TEXT_BYTES

    with Index(tmp_path / "big.db", encoder=tiny_encoder) as index:
        with pytest.raises(InvalidInputError, match="a document may hold"):
            index.add(["water " * (MAX_TEXT_BYTES // 6 + 1)], ids=["big"])
        assert len(index) == 0


def test_half_consumed_iterators_pin_no_snapshot(tmp_path: Path, tiny_encoder: Encoder) -> None:
    """``iter(index)`` and ``metadata()`` read in short pages: a generator left half
    consumed lets other writers' commits be checkpointed and counted."""
    path = tmp_path / "pages.db"
    with Index(path, encoder=tiny_encoder) as index:
        index.add([f"note {i} about water" for i in range(2500)], metadata=[{"i": 1}] * 2500)
        ids, metas = iter(index), index.metadata()
        first = next(ids), next(metas)
        with Index(path, encoder=tiny_encoder) as other:
            other.add([f"later note {i}" for i in range(1500)])
            conn = other.store.connection
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0  # no reader pinned the old snapshot
        assert Path(str(path) + "-wal").stat().st_size == 0
        assert len(index) == 4000
        rest = list(ids)
        assert first[0] not in rest and len(rest) + 1 == 4000  # the pages go on past it
        assert sum(1 for _ in metas) + 1 == 4000


def test_a_newer_versions_file_says_upgrade_even_with_new_tables(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    from edge_colbert.schema import SCHEMA_VERSION

    path = tmp_path / "newer.db"
    with Index(path, encoder=tiny_encoder) as index:
        index.add(NOTES)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE future_feature (x)")
    conn.execute(
        "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
    )
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(IndexFileError, match="upgrade"):
        Index(path, encoder=tiny_encoder)
    assert path.read_bytes() == before
