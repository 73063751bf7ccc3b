"""Files that are not this version's index: refused with IndexFileError, and left byte for byte.

Not SQLite, another program's SQLite database, a schema newer than this code, one older than
any it can migrate, another model's index: each is refused with one clear message before a
single byte changes. The current schema opens, searches and takes writes; migrations from
older ones are in test_migration.py.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from tiny_model import build_tiny_model

from edge_colbert import IndexFileError, ModelMismatchError
from edge_colbert.encoder import Encoder
from edge_colbert.index import Index
from edge_colbert.store import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["rivers run to the sea", "mountains stand over the city", "the cell holds a gene"]


def _make_index(path: Path, encoder: Encoder) -> Path:
    """A small real index, checkpointed so that the main file is the whole database."""
    with Index(path, encoder=encoder) as index:
        index.add(TEXTS, ids=["river", "mountain", "cell"], metadata=[{"n": 1}, {"n": 2}, {}])
    _checkpoint(path)
    return path


def _checkpoint(path: Path) -> None:
    """Fold the WAL into the main file, so that the main file alone is the whole database."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def _set_meta(path: Path, key: str, value: str) -> None:
    """Overwrite one meta value with plain sqlite3, then checkpoint."""
    con = sqlite3.connect(path)
    with con:
        con.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def _random_bytes(path: Path, _: Encoder) -> Path:
    """A file of bytes that is no database at all."""
    path.write_bytes(bytes(range(256)) * 64)
    return path


def _text_file(path: Path, _: Encoder) -> Path:
    """A text file where the index should be."""
    path.write_text("these are my notes, not a database\n" * 100, encoding="utf-8")
    return path


def _sqlite_header_then_garbage(path: Path, _: Encoder) -> Path:
    """The SQLite magic header followed by garbage pages."""
    path.write_bytes(b"SQLite format 3\x00" + b"\xa5" * 8192)
    return path


def _other_program(path: Path, _: Encoder) -> Path:
    """A SQLite database of another program (a contacts table)."""
    con = sqlite3.connect(path)
    with con:
        con.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
        con.execute("INSERT INTO contacts VALUES ('Ada', '555')")
    con.close()
    return path


def _other_program_with_meta(path: Path, _: Encoder) -> Path:
    """Another program that also keeps a key/value ``meta`` table, without our ``app``."""
    con = sqlite3.connect(path)
    with con:
        con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        con.execute("INSERT INTO meta VALUES ('app', 'photo-manager'), ('schema_version', '1')")
        con.execute("CREATE TABLE documents (id TEXT, text TEXT)")
    con.close()
    return path


def _other_meta_shape(path: Path, _: Encoder) -> Path:
    """Another program whose ``meta`` table has another shape."""
    con = sqlite3.connect(path)
    with con:
        con.execute("CREATE TABLE meta (version INTEGER)")
    con.close()
    return path


def _newer_schema(path: Path, encoder: Encoder) -> Path:
    """A real index whose schema version is one past this code's."""
    _make_index(path, encoder)
    _set_meta(path, "schema_version", str(SCHEMA_VERSION + 1))
    return path


def _unmigratable_schema(path: Path, encoder: Encoder) -> Path:
    """A real index claiming schema version 0, which no migration starts from."""
    _make_index(path, encoder)
    _set_meta(path, "schema_version", "0")
    return path


def _garbled_schema_version(path: Path, encoder: Encoder) -> Path:
    """A real index whose schema version is not a number."""
    _make_index(path, encoder)
    _set_meta(path, "schema_version", "one")
    return path


Maker = Callable[[Path, Encoder], Path]
REFUSED: dict[str, tuple[Maker, str]] = {
    # name: (how to make the file, a word the message must contain)
    "random bytes": (_random_bytes, "not a SQLite"),
    "a text file": (_text_file, "not a SQLite"),
    "SQLite header, garbage after": (_sqlite_header_then_garbage, "not"),
    "another program's database": (_other_program, "another program"),
    "another program with a meta table": (_other_program_with_meta, "another program"),
    "a meta table of another shape": (_other_meta_shape, "another program"),
    "a newer schema": (_newer_schema, "upgrade"),
    "an older schema with no migration": (_unmigratable_schema, "schema version 0"),
    "a garbled schema version": (_garbled_schema_version, "schema"),
}


def _files_beside(path: Path) -> dict[str, bytes]:
    """The file and its -wal/-shm companions, as bytes (only those that exist)."""
    found = {}
    for suffix in ("", "-wal", "-journal"):
        companion = Path(str(path) + suffix)
        if companion.exists():
            found[suffix] = companion.read_bytes()
    return found


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_and_left_byte_identical(case: str, tmp_path: Path, tiny_encoder: Encoder) -> None:
    maker, word = REFUSED[case]
    path = maker(tmp_path / "target.db", tiny_encoder)
    before = _files_beside(path)
    for readonly in (False, True):
        with pytest.raises(IndexFileError) as caught:
            Index(path, encoder=tiny_encoder, readonly=readonly)
        message = str(caught.value)
        assert word.lower() in message.lower(), message
        assert str(path) in message and "\n" not in message, message
    after = _files_beside(path)
    assert after.keys() <= before.keys() | {"-wal"}
    assert after[""] == before[""], "the refused file was changed"
    assert after.get("-wal", b"") == before.get("-wal", b""), "a WAL was written to the file"


def test_another_models_index_is_refused_untouched(tmp_path: Path, tiny_encoder: Encoder) -> None:
    path = _make_index(tmp_path / "notes.db", tiny_encoder)
    before = path.read_bytes()
    other = Encoder(build_tiny_model(tmp_path / "other-model", seed=1, name="other"))
    with pytest.raises(ModelMismatchError) as caught:
        Index(path, encoder=other)
    assert "other" in str(caught.value) and tiny_encoder.identity in str(caught.value)
    assert path.read_bytes() == before


def test_current_schema_opens_searches_and_takes_writes(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    """Schema version 1 is the only one so far: a file written by this code reopens as is."""
    path = _make_index(tmp_path / "notes.db", tiny_encoder)
    con = sqlite3.connect(path)
    meta = dict(con.execute("SELECT key, value FROM meta"))
    con.close()
    assert meta["app"] == "edge-colbert" and meta["schema_version"] == str(SCHEMA_VERSION)
    with Index(path, encoder=tiny_encoder, readonly=True) as index:
        assert len(index) == 3
        assert index.search(TEXTS[0], k=3)[0].id == "river"
    with Index(path, encoder=tiny_encoder) as index:
        index.add(["a new note about the ocean"], ids=["ocean"])
        assert len(index) == 4 and index.get("river").metadata == {"n": 1}  # type: ignore[union-attr]


def test_empty_file_becomes_a_new_index(tmp_path: Path, tiny_encoder: Encoder) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with Index(path, encoder=tiny_encoder) as index:
        index.add(["first note"], ids=["first"])
        assert len(index) == 1


def test_folder_and_missing_file(tmp_path: Path, tiny_encoder: Encoder) -> None:
    with pytest.raises(IndexFileError, match="folder"):
        Index(tmp_path, encoder=tiny_encoder)
    missing = tmp_path / "missing.db"
    with pytest.raises(IndexFileError, match="does not exist"):
        Index(missing, encoder=tiny_encoder, readonly=True)
    assert not missing.exists(), "a read-only open must not create the file"


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``edge-colbert ARGS`` from this checkout in a subprocess."""
    code = "import sys; from edge_colbert.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("case", "command"),
    [
        ("a text file", "info"),
        ("another program's database", "search"),
        ("a newer schema", "index"),
        ("another program with a meta table", "delete"),
    ],
)
def test_cli_refuses_in_one_line(
    case: str, command: str, tmp_path: Path, tiny_model_dir: Path, tiny_encoder: Encoder
) -> None:
    path = REFUSED[case][0](tmp_path / "target.db", tiny_encoder)
    before = path.read_bytes()
    note = tmp_path / "note.txt"
    note.write_text("a note about rivers", encoding="utf-8")
    extra = {"info": [], "search": ["rivers"], "index": [str(note)], "delete": ["river"]}[command]
    result = _run_cli("--model", str(tiny_model_dir), command, str(path), *extra)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert path.read_bytes() == before
