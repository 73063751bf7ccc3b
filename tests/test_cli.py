"""The `edge-colbert` command, run in-process on the tiny model, as a person would use it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_colbert import cli
from edge_colbert.highlight import best_passage, mark, merge_spans, widen_to_word
from edge_colbert.index import Index

ROOT = Path(__file__).resolve().parents[1]
# latin1.txt below is decoded where charset-normalizer (the files extra) finds its encoding,
# and skipped (counted as needing the extra) without it.
LEGACY = importlib.util.find_spec("charset_normalizer") is not None
FILES = 4 + LEGACY

RIVER = (
    "The river ran past the old mill.\n\nA boy and his dog walk by the water every "
    "morning.\n\nThe sea is far to the north."
)
SCIENCE = "Cancer risk study.\n\nThe patient data show a gene and a protein in each cell."
FARM = (
    "<html><head><title>Farm</title><script>var horse = 1;</script></head><body>"
    "<h1>The farm</h1><p>A horse and a bird live near the tree &amp; the house.</p></body></html>"
)
MUSIC = "We sing a song and play music at home.\n\nThe children listen and laugh."


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A folder of small notes, with three files `index` must skip and a hidden folder."""
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / ".git").mkdir()
    (notes / "river.md").write_text(RIVER, encoding="utf-8")
    (notes / "science.txt").write_text(SCIENCE, encoding="utf-8")
    (notes / "farm.html").write_text(FARM, encoding="utf-8")
    (notes / "sub" / "music.md").write_text(MUSIC, encoding="utf-8")
    (notes / ".git" / "config.txt").write_text("the river", encoding="utf-8")
    (notes / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR")
    (notes / "latin1.txt").write_bytes("caf\xe9 the river".encode("latin-1"))
    (notes / "empty.md").write_text("  \n\n ", encoding="utf-8")
    return notes


def run(capsys: pytest.CaptureFixture[str], model: Path, *argv: str | Path) -> tuple[int, str, str]:
    code = cli.main(["--model", str(model), *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def ids_of(db: Path) -> set[str]:
    with Index(db, readonly=True) as index:
        return {doc_id for doc_id, _ in index.metadata()}


@pytest.fixture
def indexed(
    corpus: Path, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> Path:
    db = tmp_path / "notes.db"
    code, _, _ = run(capsys, tiny_model_dir, "index", db, corpus)
    assert code == 0
    return db


# --- index --------------------------------------------------------------------------------


def test_index_a_folder_chunks_files_and_skips_bad_ones_with_one_line_each(
    corpus: Path, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("charset_normalizer", reason='pip install "edge-colbert[files]"')
    db = tmp_path / "notes.db"
    code, out, err = run(capsys, tiny_model_dir, "index", db, corpus)
    assert code == 0, err
    # latin1.txt is decoded (charset-normalizer finds its encoding), not skipped.
    assert out.startswith("5 files indexed (")
    assert "0 unchanged, 2 skipped, 0 removed" in out
    skipped = sorted(line for line in err.splitlines() if line.startswith("skipped "))
    assert len(err.splitlines()) == 2, err
    assert skipped[0].startswith(f"skipped {corpus / 'empty.md'}: no text")
    assert skipped[1].startswith(f"skipped {corpus / 'image.txt'}: binary file")
    with Index(db, readonly=True) as index:
        stored = dict(index.metadata())
        paths = {meta["path"] for meta in stored.values()}
        names = ("river.md", "science.txt", "farm.html", "sub/music.md", "latin1.txt")
        assert paths == {str(corpus / name) for name in names}
        # Every chunk's id names its file; text chunks give the lines they span.
        for doc_id, meta in stored.items():
            assert doc_id.startswith(f"{meta['path']}#")
            hit = index.get(doc_id)
            assert hit is not None
            if meta["path"].endswith(".html"):
                assert "var horse" not in hit.text and "<p>" not in hit.text
            elif meta["path"].endswith("latin1.txt"):
                assert hit.text == "caf\xe9 the river"
            else:
                source = Path(meta["path"]).read_text(encoding="utf-8").split("\n")
                lines = "\n".join(source[meta["line"] - 1 : meta["end_line"]])
                assert hit.text in lines and hit.text.split("\n")[0] in source[meta["line"] - 1]
        river = sorted(
            (m["chunk"], m.get("chunks")) for m in stored.values() if "river" in m["path"]
        )
        # RIVER is longer than the tiny model's 24-token window: several chunks, the last
        # of which records the count.
        assert len(river) > 1
        assert river == [(n, None) for n in range(len(river) - 1)] + [(len(river) - 1, len(river))]


def test_reindex_encodes_only_the_changed_file_and_removes_what_is_gone(
    corpus: Path, indexed: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = ids_of(indexed)
    river_ids = {i for i in before if "river.md" in i}
    (corpus / "science.txt").write_text("Snow fell on the mountain.", encoding="utf-8")
    (corpus / "sub" / "music.md").unlink()
    (corpus / "river.md").write_text("The river is short now.", encoding="utf-8")  # shrinks
    code, out, err = run(capsys, tiny_model_dir, "index", indexed, corpus)
    assert code == 0, err
    assert out.startswith(
        f"2 files indexed (2 chunks), {1 + LEGACY} unchanged, 2 skipped, 1 removed"
    )
    after = ids_of(indexed)
    assert not any("music.md" in i for i in after)
    # The shrunken file keeps one chunk; its other chunks are gone.
    new_river = {i for i in after if "river.md" in i}
    assert len(new_river) == 1 and not new_river & river_ids
    with Index(indexed, readonly=True) as index:
        (science,) = [i for i in after if "science.txt" in i]
        hit = index.get(science)
        assert hit is not None and hit.text == "Snow fell on the mountain."
    # A third run finds nothing to do.
    code, out, _ = run(capsys, tiny_model_dir, "index", indexed, corpus)
    assert out.startswith(
        f"0 files indexed (0 chunks), {3 + LEGACY} unchanged, 2 skipped, 0 removed"
    )


def test_reindex_of_one_file_leaves_the_rest_of_the_index_alone(
    corpus: Path, indexed: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = ids_of(indexed)
    code, out, _ = run(capsys, tiny_model_dir, "index", indexed, corpus / "science.txt")
    assert code == 0
    assert out.startswith("0 files indexed (0 chunks), 1 unchanged, 0 skipped, 0 removed")
    assert ids_of(indexed) == before


def test_a_file_that_becomes_unreadable_loses_its_chunks(
    corpus: Path, indexed: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (corpus / "science.txt").write_bytes(b"\x00\x01binary now")
    code, out, err = run(capsys, tiny_model_dir, "-q", "index", indexed, corpus)
    assert code == 0 and out == ""
    assert f"skipped {corpus / 'science.txt'}: binary" in err
    assert not any("science.txt" in i for i in ids_of(indexed))


def test_the_index_file_inside_the_indexed_folder_is_not_indexed(
    corpus: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = corpus / "self.txt"  # a suffix that the folder walk would pick up
    assert run(capsys, tiny_model_dir, "index", db, corpus)[0] == 0
    code, _, err = run(capsys, tiny_model_dir, "index", db, corpus)
    assert code == 0 and "self.txt" not in err
    assert not any("self.txt" in i for i in ids_of(db))


# --- search -------------------------------------------------------------------------------


def test_search_prints_ranked_passages_with_matched_words_in_brackets(
    indexed: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The tiny model's weights are random, so the query repeats a sentence of the notes
    # (its tokens then match themselves) rather than relying on meaning.
    query = "The patient data show a gene and a protein in each cell."
    code, out, err = run(capsys, tiny_model_dir, "search", indexed, query, "-k", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 6
    assert [line[:4] for line in lines[::2]] == [" 1. ", " 2. ", " 3. "]
    scores = [float(line.split()[1]) for line in lines[::2]]
    assert scores == sorted(scores, reverse=True)
    assert "science.txt" in lines[0]
    assert "[protein]" in lines[1] and "[gene]" in lines[1]
    assert "\033[" not in out  # no ANSI codes when stdout is not a terminal


def test_search_json_gives_matches_as_spans_of_the_text(
    indexed: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    query = "A horse and a bird live near the tree"
    code, out, _ = run(capsys, tiny_model_dir, "search", indexed, query, "--json", "-k", "2")
    assert code == 0
    results = json.loads(out)
    assert [r["rank"] for r in results] == [1, 2]
    top = results[0]
    assert set(top) == {
        "rank",
        "id",
        "score",
        "lexical",
        "semantic",
        "weak",
        "text",
        "metadata",
        "matches",
    }
    assert isinstance(top["weak"], bool)  # hybrid computes MaxSim: weak is said
    # Hybrid by default: both signals of a hit that the keyword side found too.
    assert top["lexical"] > 0 and isinstance(top["semantic"], float)
    assert top["metadata"]["path"].endswith("farm.html")
    assert top["id"].startswith(f"{top['metadata']['path']}#")
    assert {m["text"] for m in top["matches"]} >= {"horse", "bird"}
    for result in results:
        for match in result["matches"]:
            assert result["text"][match["start"] : match["end"]] == match["text"]


def test_search_where_filters_on_metadata(
    corpus: Path, indexed: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chdir(corpus)  # `--where path=...` takes a path relative to the working folder
    code, out, _ = run(
        capsys,
        tiny_model_dir,
        "search",
        indexed,
        "river water",
        "--json",
        "--where",
        "path=science.txt",
        "--exhaustive",
    )
    assert code == 0
    results = json.loads(out)
    assert results and {r["metadata"]["path"] for r in results} == {str(corpus / "science.txt")}
    code, out, _ = run(
        capsys, tiny_model_dir, "search", indexed, "river", "--json", "--where", "chunk=0"
    )
    assert {r["metadata"]["chunk"] for r in json.loads(out)} == {0}


def test_search_in_a_terminal_marks_matches_in_bold(
    indexed: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    query = "The patient data show a gene and a protein in each cell."
    code, out, _ = run(capsys, tiny_model_dir, "search", indexed, query, "-k", "1")
    assert code == 0 and "\033[1mprotein\033[0m" in out and "[protein]" not in out


# --- info and delete ----------------------------------------------------------------------


def test_info_reports_counts_model_and_size(
    indexed: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, tiny_model_dir, "info", indexed, "--json")
    assert code == 0
    figures = json.loads(out)
    assert figures["files"] == FILES
    assert figures["path"] == str(indexed)
    with Index(indexed, readonly=True) as index:
        assert figures["documents"] == len(index)
        for key, value in index.info().items():
            assert figures[key] == json.loads(json.dumps(value, default=str))
    code, text, _ = run(capsys, tiny_model_dir, "info", indexed)
    assert code == 0
    assert any(line.split()[:2] == ["files", str(FILES)] for line in text.splitlines())
    assert "tiny-colbert" in text


def test_delete_removes_ids_and_names_unknown_ones(
    corpus: Path, indexed: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (target,) = [i for i in ids_of(indexed) if "science.txt" in i]
    code, out, err = run(capsys, tiny_model_dir, "delete", indexed, target, "nope#9")
    assert code == 1
    assert out.strip() == "deleted 1 of 2 ids"
    assert err.strip() == "not found: nope#9"
    assert target not in ids_of(indexed)
    river = sorted(i for i in ids_of(indexed) if "river.md" in i)[0]
    code, out, err = run(capsys, tiny_model_dir, "delete", indexed, river)
    assert code == 0 and err == ""


# --- errors -------------------------------------------------------------------------------


def _one_error_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("edge-colbert: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err


@pytest.mark.parametrize("command", ["search", "info", "delete"])
def test_a_missing_index_is_an_error_and_is_not_created(
    command: str, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "missing.db"
    extra = {"search": ["query"], "info": [], "delete": ["x#0"]}[command]
    code, out, err = run(capsys, tiny_model_dir, command, db, *extra)
    assert code == 1 and out == ""
    _one_error_line(err, "missing.db does not exist", "edge-colbert index")
    assert not db.exists()


def test_a_file_that_is_not_an_index_is_an_error(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "notes.txt"
    fake.write_text("just text, not SQLite", encoding="utf-8")
    code, _, err = run(capsys, tiny_model_dir, "search", fake, "query")
    assert code == 1
    _one_error_line(err, "notes.txt")
    assert fake.read_text(encoding="utf-8") == "just text, not SQLite"


def test_index_path_that_does_not_exist_fails_before_creating_the_index(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "new.db"
    code, _, err = run(capsys, tiny_model_dir, "index", db, tmp_path / "nowhere")
    assert code == 1
    _one_error_line(err, "nowhere does not exist")
    assert not db.exists()


def test_a_folder_as_the_index_file_is_an_error(
    corpus: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, tiny_model_dir, "index", corpus, corpus)
    assert code == 1
    _one_error_line(err, "is a folder")


def test_a_bad_model_folder_is_one_line(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, tmp_path / "no-model", "index", tmp_path / "x.db", corpus)
    assert code == 1
    _one_error_line(err, "no-model")


def test_another_model_than_the_index_was_written_with_is_refused(
    indexed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tiny_model import build_tiny_model

    other = build_tiny_model(tmp_path / "other", seed=5, name="other-tiny")
    code, _, err = run(capsys, other, "search", indexed, "river")
    assert code == 1
    _one_error_line(err, "other-tiny")


def test_verbose_adds_the_traceback(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, tiny_model_dir, "-v", "info", tmp_path / "missing.db")
    assert code == 1
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("edge-colbert: error:")


@pytest.mark.parametrize(
    "argv",
    [["search"], ["search", "x.db", "q", "-k", "0"], ["info", "x.db", "--bogus"], ["frobnicate"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "usage: edge-colbert" in err and "Traceback" not in err


def test_bad_where_is_an_error(
    indexed: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, tiny_model_dir, "search", indexed, "q", "--where", "nokey")
    assert code == 1
    _one_error_line(err, "KEY=VALUE")


def test_version_and_help_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("edge-colbert ")
    assert cli.main(["search", "--help"]) == 0
    assert "--exhaustive" in capsys.readouterr().out


def test_ctrl_c_exits_130_with_one_line_and_keeps_what_was_committed(
    corpus: Path,
    indexed: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edge_colbert import sync

    before = ids_of(indexed)
    (corpus / "new.md").write_text("A new note about the moon.", encoding="utf-8")

    def interrupted(path: object, **_: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(sync, "extract_sections", interrupted)
    code, _, err = run(capsys, tiny_model_dir, "index", indexed, corpus)
    assert code == 130
    assert err.strip() == "edge-colbert: interrupted"
    assert ids_of(indexed) == before


def test_export_without_pytorch_says_how_to_get_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hide torch (None in sys.modules makes `import torch` fail) and drop any loaded export
    # modules, so the export step is imported afresh as on a runtime-only install.
    monkeypatch.setitem(sys.modules, "torch", None)
    for name in [m for m in sys.modules if m.split(".")[0] == "edge_colbert_export"]:
        monkeypatch.delitem(sys.modules, name)
    code = cli.main(["export", "some/checkpoint", str(tmp_path / "out"), "--dim", "64"])
    err = capsys.readouterr().err
    assert code == 2
    # The missing names come from the export extra in the package metadata (pyproject.toml):
    # torch at least (hidden here), and whatever else this venv lacks.
    prefix, _, rest = err.strip().partition(" (missing: ")
    missing, _, hint = rest.partition("): ")
    assert prefix == "edge-colbert: the export step needs the export extra"
    assert "torch" in missing.split(", ")
    assert hint == 'pip install "edge-colbert[export]"'
    assert not (tmp_path / "out").exists()


def test_console_command_exits_1_without_a_traceback(tmp_path: Path) -> None:
    """The real entry point, in a fresh interpreter: a mistyped index path."""
    result = subprocess.run(
        [sys.executable, "-m", "edge_colbert", "search", str(tmp_path / "typo.db"), "query"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"edge-colbert: error: index file {tmp_path / 'typo.db'} does not exist; create it "
        f"with `edge-colbert index {tmp_path / 'typo.db'} PATH...`"
    ]
    assert not (tmp_path / "typo.db").exists()


def test_shared_options_also_work_after_the_command(
    corpus: Path, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "late.db"
    code = cli.main(
        ["index", str(db), str(corpus / "river.md"), "--model", str(tiny_model_dir), "-q"]
    )
    out, err = capsys.readouterr()
    assert code == 0 and out == "" and err == ""
    ids = ids_of(db)
    assert len(ids) == 2 and all(i.startswith(f"{corpus / 'river.md'}#") for i in ids)


def test_an_empty_query_is_an_error(
    indexed: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, tiny_model_dir, "search", indexed, "   ")
    assert code == 1
    _one_error_line(err, "the query is empty")


# --- the passage and its marks ------------------------------------------------------------


def test_token_spans_widen_to_words_and_merge() -> None:
    text = "walking quickly, fast-moving"
    assert widen_to_word(text, (4, 7)) == (0, 7)  # "##ing" -> "walking"
    assert widen_to_word(text, (17, 18)) == (17, 21)  # "f" -> "fast", not across the hyphen
    assert merge_spans([(8, 15), (0, 7), (3, 5), (7, 8)]) == [(0, 15)]


def test_best_passage_centres_on_the_most_matches_and_cuts_at_words() -> None:
    words = [f"w{i:03d}" for i in range(200)]
    text = " ".join(words)
    spans = [(text.index(w), text.index(w) + 4) for w in ("w150", "w152", "w155", "w010")]
    start, end = best_passage(text, spans, width=100)
    assert end - start <= 100
    assert start == 0 or text[start - 1] == " "
    assert end == len(text) or text[end] == " "
    assert all(start <= a and b <= end for a, b in spans[:3])
    shown = mark(text, spans, start, end, style="brackets")
    assert shown.startswith("…") and shown.endswith("…")
    assert "[w150]" in shown and "[w155]" in shown and "w010" not in shown
    assert mark("a b", [(0, 1)], 0, 3, style="none") == "a b"


@pytest.mark.export
def test_export_passes_its_own_options_through(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An option only the export step knows reaches its parser (which rejects a bad value)."""
    reason = 'needs the export extra: pip install "edge-colbert[export]"'
    pytest.importorskip("torch", reason=reason)
    pytest.importorskip("transformers", reason=reason)
    code = cli.main(["export", "ckpt", str(tmp_path / "out"), "--target", "bogus"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--target" in err and "bogus" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# --- search: the weak-match cue and several databases ---------------------------------------


def _bundled_model() -> Path:
    from edge_colbert.encoder import default_model_dir

    folder = default_model_dir()
    if not (folder / "model.onnx").exists() and not any(folder.glob("*.onnx")):
        pytest.skip(f"the bundled model is not available at {folder}")
    return folder


@pytest.fixture(scope="module")
def docs_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An index of two of the project's own docs, written with the bundled model (the weak
    bar was calibrated for it; the tiny model's scores say nothing)."""
    model = _bundled_model()
    db = tmp_path_factory.mktemp("docs") / "docs.db"
    code = cli.main(
        [
            "-q",
            "--model",
            str(model),
            "index",
            str(db),
            *(str(ROOT / "docs" / n) for n in ("server.md", "hybrid.md")),
        ]
    )
    assert code == 0
    return db, model


@pytest.mark.parametrize("mode", ["semantic", "hybrid"])
def test_search_marks_weak_matches_for_an_unrelated_query_and_not_for_a_relevant_one(
    docs_db: tuple[Path, Path], mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db, model = docs_db
    unrelated = "zebra crossing protocol for llama migrations"
    code, out, _ = run(capsys, model, "search", db, unrelated, "-k", "3", "--mode", mode)
    assert code == 0
    results = [line for line in out.splitlines() if line[:3].strip().rstrip(".").isdigit()]
    assert len(results) == 3 and all(line.endswith("(weak match)") for line in results), out
    assert "no hit is a good match" in out
    code, out, _ = run(capsys, model, "-q", "search", db, unrelated, "-k", "3", "--mode", mode)
    assert "no hit is a good match" not in out and "(weak match)" in out

    relevant = "how do I bind the server to another host"
    code, out, _ = run(capsys, model, "search", db, relevant, "-k", "3", "--mode", mode, "--json")
    hits = json.loads(out)
    assert hits[0]["weak"] is False, hits[0]
    code, out, _ = run(capsys, model, "search", db, relevant, "-k", "3", "--mode", mode)
    first = out.splitlines()[0]
    assert "(weak match)" not in first and "no hit is a good match" not in out
    code, out, _ = run(capsys, model, "search", db, unrelated, "-k", "3", "--mode", mode, "--json")
    assert [hit["weak"] for hit in json.loads(out)] == [True, True, True]
    assert "db" not in json.loads(out)[0]  # one database: no db field


def test_keyword_search_says_nothing_about_weakness(
    indexed: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, tiny_model_dir, "search", indexed, "river", "--mode", "keyword", "--json"
    )
    assert code == 0
    hits = json.loads(out)
    assert hits and all(hit["weak"] is None for hit in hits)


@pytest.fixture
def two_dbs(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, Path]:
    """Two indexes of different notes, both about rivers in part, so that a river query's
    best hits are split between them."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "river.md").write_text(RIVER, encoding="utf-8")
    (first / "music.md").write_text(MUSIC, encoding="utf-8")
    (second / "water.md").write_text(
        "The river water is cold.\n\nThe dog can swim in the river.", encoding="utf-8"
    )
    (second / "science.txt").write_text(SCIENCE, encoding="utf-8")
    dbs = tmp_path / "one.db", tmp_path / "two.db"
    for db, folder in zip(dbs, (first, second), strict=True):
        code, _, _ = run(capsys, tiny_model_dir, "-q", "index", db, folder)
        assert code == 0
    return dbs


def _json_search(
    capsys: pytest.CaptureFixture[str], model: Path, *argv: str | Path
) -> list[dict[str, object]]:
    code, out, err = run(capsys, model, "search", *argv, "--json")
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", ["semantic", "hybrid", "keyword"])
def test_search_merges_several_databases(
    two_dbs: tuple[Path, Path], tiny_model_dir: Path, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    query, k = "the river water", 4
    alone = [
        _json_search(capsys, tiny_model_dir, db, query, "-k", str(k), "--mode", mode)
        for db in two_dbs
    ]
    merged = _json_search(capsys, tiny_model_dir, *two_dbs, query, "-k", str(k), "--mode", mode)
    assert len(merged) == k
    assert {hit["db"] for hit in merged} == {str(db) for db in two_dbs}  # split between both
    pool = [
        (str(db), rank, hit)
        for db, hits in zip(two_dbs, alone, strict=True)
        for rank, hit in enumerate(hits, start=1)
    ]
    if mode == "semantic":  # MaxSim is comparable across files of one model: by score
        expected = sorted(pool, key=lambda item: -float(item[2]["score"]))  # type: ignore[arg-type]
        scores = [float(hit["score"]) for hit in merged]  # type: ignore[arg-type]
        assert scores == sorted(scores, reverse=True)
    else:  # reciprocal rank fusion: each file's rank first, then the score
        expected = sorted(pool, key=lambda item: (item[1], -float(item[2]["score"])))  # type: ignore[arg-type]
    assert [(hit["db"], hit["id"]) for hit in merged] == [
        (db, hit["id"]) for db, _, hit in expected[:k]
    ]
    assert [hit["rank"] for hit in merged] == list(range(1, k + 1))
    code, out, _ = run(capsys, tiny_model_dir, "search", *two_dbs, query, "-k", "2", "--mode", mode)
    assert code == 0
    heads = [line for line in out.splitlines() if not line.startswith("    ")]
    assert all(("one.db: " in line) or ("two.db: " in line) for line in heads[:2]), out


def test_search_refuses_databases_of_two_models_in_one_line(
    two_dbs: tuple[Path, Path],
    tmp_path: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = tmp_path / "other.db"
    notes = tmp_path / "other"
    notes.mkdir()
    (notes / "river.md").write_text(RIVER, encoding="utf-8")
    code, _, _ = run(capsys, _bundled_model(), "-q", "index", other, notes)
    assert code == 0
    code, out, err = run(capsys, tiny_model_dir, "search", two_dbs[0], other, "river")
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-colbert: error:"), err
    assert str(two_dbs[0]) in lines[0] and str(other) in lines[0] and "same model" in lines[0]
