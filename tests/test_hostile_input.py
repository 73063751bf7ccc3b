"""Hostile input to the API (hypothesis) and to the CLI's file reading.

The property for every call: it succeeds and does what it says, or it raises an
:class:`EdgeColbertError` subclass (never a raw sqlite3 error, KeyError or TypeError), and
after a failed call everything stored before is unchanged: the ids, texts and metadata of a
snapshot taken through plain sqlite3. Examples are derandomized (the same on every run) and
bounded so that the file runs in well under a minute.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edge_colbert import EdgeColbertError
from edge_colbert.encoder import Encoder
from edge_colbert.index import Hit, Index
from edge_colbert.records import decode_text

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")

PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Metadata keys a filter will aim at: SQL and JSON-path syntax, quotes, dots, brackets.
NASTY_KEYS = [
    "'; DROP TABLE documents; --",
    'say "hi"',
    "a.b",
    "$",
    "$.a",
    "[0]",
    "it's",
    "*",
    "%",
    "_",
    "",
    "\x00",
    "key\nline",
    "ключ",
    "🔑",
]
NASTY_VALUES: list[Any] = [
    "' OR 1=1 --",
    "'); DELETE FROM documents; --",
    '"',
    "%",
    "_",
    "",
    "\x00",
    0,
    -1,
    1.5,
    2**63,
    True,
    False,
    None,
    "x" * 1000,
]
SEED_DOCS: dict[str, tuple[str, dict[str, Any]]] = {
    "river": ("the river runs to the sea", {"a.b": 1, "it's": "' OR 1=1 --", "n": 1}),
    "mountain": ("a mountain over the city", {"a": {"b": 1}, "n": 2, "flag": True}),
    "cell": ("the cell holds a gene", {"'; DROP TABLE documents; --": "x", "n": 1.0}),
    "paper": ("a paper about protein", {"flag": False, "none": None, "%": "_"}),
    "music": ("music and the morning", {"tags": ["x", "y"], 'say "hi"': '"', "n": "1"}),
    "island": ("an island in the ocean", {"": "empty key", "🔑": "ключ"}),
}

# Text a person (or a bad file) can hand over.
SPECIAL_TEXTS = [
    "",
    " ",
    "\t\n\r  ",
    "\x00",
    "a\x00b",
    "\x01\x02\x1b[31mred\x1b[0m\x7f",
    "שלום עולם \u200f right to left",
    "e\u0301" * 50 + "\u0338\u20dd",
    "🙂👩‍👩‍👧‍👦🏳️‍🌈" * 20,
    "\ufeffbom",
    "\ud800 lone surrogate",
    "\udfff",
    "\uffff\U0010ffff",
    "word " * 5000,
    "x" * 100_000,
    "ﷺ" * 300,
]
QUERIES = ["river", "the sea", "a gene", "morning music"]
TEXT_PIECES = ["river", "sea", " ", "\x00", "🙂", "\u0301"]
texts = st.one_of(
    st.sampled_from(SPECIAL_TEXTS),
    st.text(st.characters(codec=None, categories=None), max_size=60),
    st.lists(st.sampled_from(["river", "sea", " ", "\x00", "🙂", "\u0301"]), max_size=30).map(
        "".join
    ),
)
ids = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(["river", "", " ", "\x00", "'; DROP TABLE documents; --", "\ud800", "1"]),
    st.floats(allow_nan=True),
    st.none(),
    st.booleans(),
    st.binary(max_size=8),
    st.tuples(st.integers()),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
not_json = st.one_of(
    st.sets(st.integers(), max_size=3),
    st.binary(max_size=5),
    st.just(float("nan")),
    st.just(float("inf")),
    st.just(object()),
    st.just(Path("/tmp")),
    st.complex_numbers(),
)
metadata_values = st.one_of(
    st.dictionaries(st.sampled_from(NASTY_KEYS) | st.text(max_size=8), json_values, max_size=4),
    st.dictionaries(st.integers() | st.none() | st.tuples(st.integers()), json_scalars, max_size=2),
    st.dictionaries(st.text(max_size=5), not_json, min_size=1, max_size=2),
    st.none(),
    st.just([1, 2]),
    st.just("not a dict"),
)
where_values = st.one_of(
    st.sampled_from(NASTY_VALUES),
    st.lists(st.sampled_from(NASTY_VALUES), max_size=3),
    json_values,
    not_json,
)
# Keys and values the seed documents really hold, so that many filters match something.
SEED_KEYS = sorted({key for _, meta in SEED_DOCS.values() for key in meta})
SEED_VALUES = [
    v for _, meta in SEED_DOCS.values() for v in meta.values() if not isinstance(v, dict)
]
wheres = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(SEED_KEYS),
        st.sampled_from(SEED_VALUES) | st.lists(st.sampled_from(SEED_VALUES), max_size=3),
        min_size=1,
        max_size=2,
    ),
    st.dictionaries(st.sampled_from(NASTY_KEYS) | st.text(max_size=8), where_values, max_size=3),
    st.dictionaries(st.integers() | st.none(), st.integers(), min_size=1, max_size=1),
    st.just("n = 1 OR 1=1"),
    st.just([("n", 1)]),
)
ks = st.one_of(
    st.integers(min_value=1, max_value=12),
    st.integers(min_value=-3, max_value=12),
    st.sampled_from([10**9, 2**63, 1.5, "3", None, True, float("nan")]),
)


# ---------------------------------------------------------------------------------------------
# The index under test and its snapshot


Snapshot = dict[str, tuple[str, str]]


def _snapshot(db: Path) -> Snapshot:
    """Every stored id -> (text, canonical metadata JSON), read with plain sqlite3."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT id, text, metadata FROM documents").fetchall()
        pairs = con.execute(
            "SELECT count(*) FROM documents d JOIN vectors v ON v.doc = d.rowid"
        ).fetchone()[0]
    finally:
        con.close()
    assert pairs == len(rows), "a document without vectors"
    return {
        doc: (
            zlib.decompress(text).decode("utf-8") if isinstance(text, bytes) else text,
            json.dumps(json.loads(meta), sort_keys=True),
        )
        for doc, text, meta in rows
    }


@pytest.fixture
def index(tmp_path: Path, tiny_encoder: Encoder) -> Iterator[tuple[Index, Path]]:
    """A fresh index holding :data:`SEED_DOCS`, shared by the examples of one test."""
    db = tmp_path / "hostile.db"
    with Index(db, encoder=tiny_encoder) as opened:
        opened.add(
            [text for text, _ in SEED_DOCS.values()],
            ids=list(SEED_DOCS),
            metadata=[meta for _, meta in SEED_DOCS.values()],
        )
        yield opened, db


def _attempt(what: str | None, call: Callable[[], T]) -> tuple[bool, T | EdgeColbertError]:
    """Run ``call``: (True, result), or (False, error) for a project error with a message.

    Any other exception escapes and fails the test: that is the property. The outcome is
    recorded as a hypothesis event (``--hypothesis-show-statistics`` shows the mix) unless
    ``what`` is None (outside a hypothesis test).
    """
    try:
        result = call()
    except EdgeColbertError as error:
        message = str(error)
        assert message.strip(), f"{type(error).__name__} with an empty message"
        if what is not None:
            event(f"{what}: {type(error).__name__}")
        return False, error
    if what is not None:
        event(f"{what}: ok")
    return True, result


def _canonical(value: Any) -> str:
    """JSON with sorted keys, so that equal metadata compares equal as text."""
    return json.dumps(value, sort_keys=True)


def _same_kind(stored: Any, wanted: Any) -> bool:
    """JSON equality as a where filter means it: bools are not numbers, 1 equals 1.0."""
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return isinstance(wanted, bool) and isinstance(stored, bool) and stored == wanted
    if wanted is None:
        return stored is None
    if isinstance(wanted, (int, float)):
        return isinstance(stored, (int, float)) and stored == wanted
    return isinstance(wanted, str) and isinstance(stored, str) and stored == wanted


def _expected_matches(snapshot: Snapshot, where: dict[Any, Any]) -> set[str]:
    """The ids a ``where`` filter must match, evaluated in Python on a snapshot."""
    matched = set()
    for doc, (_, meta_json) in snapshot.items():
        meta = json.loads(meta_json)
        ok = True
        for key, wanted in where.items():
            options = wanted if isinstance(wanted, (list, tuple)) else [wanted]
            if key not in meta or not any(_same_kind(meta[key], option) for option in options):
                ok = False
        if ok:
            matched.add(doc)
    return matched


# ---------------------------------------------------------------------------------------------
# Properties


@PROPERTY
@given(
    batch=st.lists(st.tuples(texts, ids, metadata_values), min_size=1, max_size=4),
    pass_ids=st.booleans(),
    pass_metadata=st.booleans(),
)
def test_add(
    index: tuple[Index, Path],
    batch: list[tuple[str, Any, Any]],
    pass_ids: bool,
    pass_metadata: bool,
) -> None:
    opened, db = index
    before = _snapshot(db)
    batch_texts = [text for text, _, _ in batch]
    batch_ids = [doc for _, doc, _ in batch] if pass_ids else None
    batch_meta = [meta for _, _, meta in batch] if pass_metadata else None
    ok, result = _attempt(
        "add", lambda: opened.add(batch_texts, ids=batch_ids, metadata=batch_meta)
    )
    after = _snapshot(db)
    if not ok:
        assert after == before, f"a failed add changed the index ({result})"
        return
    assert isinstance(result, list) and len(result) == len(batch)
    assert all(isinstance(doc, str) for doc in result)
    # Upsert: the last occurrence of an id in the batch is what is stored.
    last = {doc: i for i, doc in enumerate(result)}
    for doc, i in last.items():
        assert after[doc][0] == batch_texts[i]
        if batch_meta is not None and batch_meta[i] is not None:
            assert after[doc][1] == _canonical(json.loads(_canonical(batch_meta[i])))
        if batch_ids is not None and isinstance(batch_ids[i], int):
            assert doc == str(batch_ids[i]), "int ids are stored as their decimal text"
    unchanged = {d: v for d, v in before.items() if d not in last}
    assert {d: after[d] for d in unchanged} == unchanged
    assert set(after) == set(before) | set(last)


@PROPERTY
@given(
    query=texts | st.sampled_from(["river", "the sea", "a gene", "morning music"]),
    k=ks,
    where=wheres,
    exhaustive=st.booleans(),
)
def test_search(
    index: tuple[Index, Path], query: str, k: Any, where: Any, exhaustive: bool
) -> None:
    opened, db = index
    before = _snapshot(db)
    ok, result = _attempt(
        "search", lambda: opened.search(query, k=k, where=where, exhaustive=exhaustive)
    )
    assert _snapshot(db) == before
    if not ok:
        return
    assert isinstance(result, list) and len(result) <= k
    hits = {hit.id for hit in result}
    assert len(hits) == len(result), "a document came back twice"
    for hit in result:
        assert before[hit.id][0] == hit.text and math.isfinite(hit.score)
    if where:
        matched = _expected_matches(before, where)
        assert hits <= matched, f"hits outside the filter: {hits - matched}"
        if exhaustive and k >= len(matched):
            assert hits == matched, "an exhaustive filtered search missed matching documents"


@PROPERTY
@given(
    doomed=st.lists(ids | st.sampled_from(list(SEED_DOCS)), max_size=4),
    as_single=st.booleans(),
)
def test_delete_get_contains(index: tuple[Index, Path], doomed: list[Any], as_single: bool) -> None:
    opened, db = index
    before = _snapshot(db)
    for doc in doomed:
        ok, got = _attempt("get", partial(opened.get, doc))
        if ok and isinstance(got, Hit):
            assert before[got.id][0] == got.text
        ok, inside = _attempt("in", partial(opened.__contains__, doc))
        assert not ok or isinstance(inside, bool)
    argument: Any = doomed[0] if as_single and doomed else doomed
    ok, removed = _attempt("delete", lambda: opened.delete(argument))
    after = _snapshot(db)
    if not ok:
        assert after == before, f"a failed delete changed the index ({removed})"
        return
    assert isinstance(removed, int) and removed == len(before) - len(after)
    assert set(after) <= set(before)
    assert all(after[d] == before[d] for d in after)
    gone = set(before) - set(after)
    assert gone <= {str(d) for d in (doomed if isinstance(argument, list) else [argument])}
    for doc in gone:  # deleting twice is a no-op, not an error
        assert opened.delete([doc]) == 0 and doc not in opened


def test_filter_values_are_never_sql(index: tuple[Index, Path]) -> None:
    """Classic injections, spelled out, in case the generated examples miss one."""
    opened, db = index
    before = _snapshot(db)
    for where in (
        {"it's": "' OR 1=1 --"},
        {"'; DROP TABLE documents; --": "x"},
        {"n": "1 OR 1=1"},
        {"a.b": 1},
        {"a": {"b": 1}},
    ):
        ok, result = _attempt(None, partial(opened.search, "river", k=10, where=where))
        if ok:
            assert {h.id for h in result} <= _expected_matches(before, where)  # type: ignore[union-attr]
    assert {h.id for h in opened.search("river", k=10, where={"it's": "' OR 1=1 --"})} == {"river"}
    assert {h.id for h in opened.search("sea", k=10, where={"a.b": 1})} == {"river"}
    assert {h.id for h in opened.search("sea", k=10, where={"n": 1})} == {"river", "cell"}
    assert _snapshot(db) == before


# ---------------------------------------------------------------------------------------------
# Files the CLI is asked to index


def _run_cli(model: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``edge-colbert --model MODEL ARGS`` from this checkout in a subprocess."""
    code = "import sys; from edge_colbert.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, "--model", str(model), *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=300,
        check=False,
    )


# Western European text in a legacy 8-bit encoding: not UTF-8, but text (issue 11).
LEGACY_TEXT = "Le café crème du matin, à la française : déjà prêt."


def _bad_files(folder: Path) -> dict[str, Path]:
    """One file (or link) per kind of bad input, beside one good note and one legacy-encoded
    note (``legacy.txt``, which is text and not bad)."""
    folder.mkdir()
    (folder / "good.txt").write_text("a good note about rivers and the sea", encoding="utf-8")
    (folder / "legacy.txt").write_bytes(LEGACY_TEXT.encode("cp1252"))
    bad = {
        "binary": folder / "binary.txt",
        "binary without NUL bytes": folder / "noise.txt",
        "empty": folder / "empty.txt",
        "whitespace only": folder / "blank.md",
        "very large": folder / "huge.txt",
    }
    bad["binary"].write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    # Not UTF-8 and no NUL byte, but control bytes no 8-bit text holds (compressed data).
    noise = random.Random(11)
    bad["binary without NUL bytes"].write_bytes(bytes(noise.randrange(1, 256) for _ in range(4096)))
    bad["empty"].write_bytes(b"")
    bad["whitespace only"].write_text(" \n\t\n", encoding="utf-8")
    with bad["very large"].open("wb") as handle:  # sparse: 200 MB in no time, no disk used
        handle.truncate(200 * 1024 * 1024)
    loop = folder / "loop"
    loop.mkdir()
    (loop / "again").symlink_to(folder, target_is_directory=True)
    (folder / "self.txt").symlink_to(folder / "self.txt")
    (folder / "ping.txt").symlink_to(folder / "pong.txt")
    (folder / "pong.txt").symlink_to(folder / "ping.txt")
    return bad


def test_cli_skips_bad_files_with_one_line_each(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Every bad file is named once with its reason and the run goes on; a legacy-encoded
    note is text: decoded (Windows-1252) where charset-normalizer is installed, else named
    in the summary line's count of files that need the ``files`` extra, never skipped as bad."""
    bad = _bad_files(tmp_path / "notes")
    db = tmp_path / "notes.db"
    result = _run_cli(tiny_model_dir, "index", str(db), str(tmp_path / "notes"))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    for kind, path in bad.items():
        lines = [line for line in skipped if str(path) in line]
        assert len(lines) == 1, f"{kind}: {result.stderr}"
    noise = next(line for line in skipped if str(bad["binary without NUL bytes"]) in line)
    assert "binary file (control byte" in noise, noise
    links = {tmp_path / "notes" / name for name in ("self.txt", "ping.txt", "pong.txt")}
    assert len(skipped) == len(bad) + len(links), result.stderr
    assert all(any(str(link) in line for line in skipped) for link in links), result.stderr
    con = sqlite3.connect(db)
    rows = con.execute("SELECT metadata, text FROM documents").fetchall()
    con.close()
    chunks: dict[str, dict[int, str]] = {}
    for meta, text in rows:
        where = json.loads(meta)
        chunks.setdefault(where["path"], {})[where["chunk"]] = decode_text(text)
    notes = tmp_path / "notes"
    if importlib.util.find_spec("charset_normalizer") is not None:
        assert set(chunks) == {str(notes / "good.txt"), str(notes / "legacy.txt")}
        # The tiny model's window cuts the note into overlapping chunks: each is a piece of
        # the text as written, the first one starts it and the last one ends it.
        legacy = chunks[str(notes / "legacy.txt")]
        assert all(piece in LEGACY_TEXT for piece in legacy.values()), legacy
        assert LEGACY_TEXT.startswith(legacy[0]) and LEGACY_TEXT.endswith(legacy[len(legacy) - 1])
    else:
        assert set(chunks) == {str(notes / "good.txt")}
        assert 'legacy-encoded files need pip install "edge-colbert[files]"' in result.stdout


def test_cli_unreadable_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading the file")
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "good.txt").write_text("a good note about rivers", encoding="utf-8")
    locked = folder / "locked.txt"
    locked.write_text("a secret", encoding="utf-8")
    locked.chmod(0)
    try:
        result = _run_cli(tiny_model_dir, "index", str(tmp_path / "n.db"), str(folder))
    finally:
        locked.chmod(0o644)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if str(locked) in line] != []


def test_cli_missing_path_is_an_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    result = _run_cli(tiny_model_dir, "index", str(tmp_path / "n.db"), str(tmp_path / "nope"))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
