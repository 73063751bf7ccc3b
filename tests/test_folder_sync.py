"""Folder indexing (`edge-colbert index`, sync.FolderSync): batching across files, chunk reuse
on edits, what is pruned, names that are not UTF-8, globs and default ignores, the files
extra's summary line, crash safety, and giving space back."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from file_fixtures import write_pdf

from edge_colbert import cli
from edge_colbert.discovery import Rules
from edge_colbert.encoder import Encoder
from edge_colbert.index import Index
from edge_colbert.sync import FolderSync, stored_files, sync_files

WORDS = (
    *("river", "mill", "dog", "water", "sea", "north", "farm", "horse", "bird", "tree"),
    *("house", "song", "music"),
)


def prose(paragraphs: int, seed: int = 0) -> str:
    """Paragraphs of distinct sentences, so every chunk's text differs."""
    out = []
    for p in range(paragraphs):
        words = [WORDS[(seed + p * 7 + i * 3) % len(WORDS)] for i in range(12)]
        out.append(f"Note {seed}-{p}: " + " ".join(words) + ".")
    return "\n\n".join(out) + "\n"


def run_cli(capsys: pytest.CaptureFixture[str], model: Path, *argv: object) -> tuple[int, str, str]:
    code = cli.main(["--model", str(model), *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def files_of(db: Path) -> dict[str, int]:
    with Index(db, readonly=True) as index:
        return {path: len(f.chunks) for path, f in stored_files(index).items()}


@pytest.fixture
def index(tmp_path: Path, tiny_encoder: Encoder) -> Any:
    with Index(tmp_path / "i.db", encoder=tiny_encoder) as opened:
        yield opened


def test_chunks_of_many_files_go_to_the_index_in_few_large_adds(
    tmp_path: Path, index: Index, tiny_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    for n in range(30):
        (folder / f"n{n:02}.md").write_text(prose(3, seed=n), encoding="utf-8")
    calls: list[int] = []
    real_add = Index.add

    def counting_add(self: Index, texts: Any, **kwargs: Any) -> list[str]:
        calls.append(len(texts))
        return real_add(self, texts, **kwargs)

    monkeypatch.setattr(Index, "add", counting_add)
    report = sync_files(index, tiny_encoder, [folder])
    assert report.indexed == 30 and report.chunks == sum(calls) > 30
    assert len(calls) == 1  # one add for all 30 files, not one per file


def test_an_edit_re_encodes_only_the_changed_chunks_and_moves_the_others(
    tmp_path: Path, index: Index, tiny_encoder: Encoder
) -> None:
    path = tmp_path / "long.md"
    paragraphs = prose(12).split("\n\n")
    path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    first = sync_files(index, tiny_encoder, [path])
    before = dict(index.metadata())
    # Insert a paragraph near the start: later chunks keep their text but move down 2 lines.
    paragraphs.insert(1, "An inserted paragraph about the lighthouse.")
    path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    second = sync_files(index, tiny_encoder, [path])
    after = dict(index.metadata())
    assert second.indexed == 1 and 0 < second.chunks < first.chunks
    assert second.reused >= first.chunks - 3
    kept = set(before) & set(after)
    assert len(kept) == second.reused
    lines = path.read_text(encoding="utf-8").split("\n")
    for doc_id, meta in after.items():
        hit = index.get(doc_id)
        assert hit is not None
        assert hit.text.split("\n")[0] in lines[meta["line"] - 1]  # moved chunks say so
        if doc_id in kept:
            assert meta["line"] >= before[doc_id]["line"]
    assert sorted(m["chunk"] for m in after.values()) == list(range(len(after)))
    # An unchanged re-run does not even read the file.
    third = sync_files(index, tiny_encoder, [path])
    assert (third.indexed, third.unchanged, third.chunks) == (0, 1, 0)


def test_a_named_file_survives_later_folder_runs_until_gone_or_excluded(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.md").write_text("Apples grow on trees.", encoding="utf-8")
    todo = folder / "todo.weird"  # a suffix the walk does not read
    todo.write_text("Buy milk and bread.", encoding="utf-8")
    db = tmp_path / "x.db"
    assert run_cli(capsys, tiny_model_dir, "index", db, folder, todo)[0] == 0
    assert set(files_of(db)) == {str(folder / "a.md"), str(todo)}
    code, out, _ = run_cli(capsys, tiny_model_dir, "index", db, folder)
    assert code == 0 and "0 removed" in out
    assert str(todo) in files_of(db)
    with Index(db, readonly=True) as opened:
        assert stored_files(opened)[str(todo)].origin == "named"
    # Excluded by the rules now in force: pruned.
    code, out, _ = run_cli(capsys, tiny_model_dir, "index", db, folder, "--exclude", "*.weird")
    assert "1 removed" in out and str(todo) not in files_of(db)
    # Named again, then deleted from disk: pruned by the next folder run.
    run_cli(capsys, tiny_model_dir, "index", db, todo)
    todo.unlink()
    code, out, _ = run_cli(capsys, tiny_model_dir, "index", db, folder)
    assert "1 removed" in out and set(files_of(db)) == {str(folder / "a.md")}


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse such names")
def test_a_name_that_is_not_utf8_is_stored_with_its_bytes_and_the_rest_is_indexed(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "good.txt").write_text("The good file about rivers.", encoding="utf-8")
    raw = os.fsencode(folder) + b"/caf\xe9.txt"
    Path(os.fsdecode(raw)).write_bytes(b"A note about coffee.")
    db = tmp_path / "x.db"
    code, out, err = run_cli(capsys, tiny_model_dir, "index", db, folder)
    assert code == 0, err
    assert out.startswith("2 files indexed")
    shown = f"{folder}/caf\\xe9.txt"
    with Index(db, readonly=True) as opened:
        stored = stored_files(opened)
        assert set(stored) == {str(folder / "good.txt"), shown}
        (meta,) = stored[shown].chunks.values()
        assert bytes.fromhex(meta["path_hex"]) == raw
    code, out, _ = run_cli(capsys, tiny_model_dir, "ls", db)
    assert "caf\\xe9.txt" in out
    # Unchanged on a re-run (found again by its bytes), pruned once deleted.
    assert "2 unchanged" in run_cli(capsys, tiny_model_dir, "index", db, folder)[1]
    Path(os.fsdecode(raw)).unlink()
    assert "1 removed" in run_cli(capsys, tiny_model_dir, "index", db, folder)[1]
    assert set(files_of(db)) == {str(folder / "good.txt")}


def test_a_file_that_becomes_unreadable_is_named_and_removed_once(
    tmp_path: Path, index: Index, tiny_encoder: Encoder
) -> None:
    (tmp_path / "a.md").write_text("Readable for now.", encoding="utf-8")
    (tmp_path / "b.md").write_text("Stays readable.", encoding="utf-8")
    sync_files(index, tiny_encoder, [tmp_path])
    (tmp_path / "a.md").write_bytes(b"\x00\x01binary now")
    skipped: list[tuple[Path, str]] = []
    report = sync_files(
        index, tiny_encoder, [tmp_path], on_skip=lambda p, r: skipped.append((p, r))
    )
    assert (report.skipped, report.removed, report.unchanged) == (1, 1, 1)
    assert skipped == [(tmp_path / "a.md", "binary file (holds NUL bytes), not text")]
    assert [Path(p).name for p in stored_files(index)] == ["b.md"]


def test_default_ignores_excludes_includes_and_twins(tmp_path: Path, tiny_encoder: Encoder) -> None:
    root = tmp_path / "docs"
    for rel in (
        "guide.html",
        "_sources/guide.rst.txt",
        "node_modules/pkg/readme.md",
        "env2/lib/site.py",
        ".hidden/notes.md",
        "build.log",
        "old/draft.md",
        "keep/draft.md",
        "data.csv",
    ):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"Some text in {rel}.", encoding="utf-8")
    (root / "env2" / "pyvenv.cfg").write_text("home = /usr/bin", encoding="utf-8")
    rules = Rules(exclude=("*.rst.txt", "old/*"), include=("*.log",))
    with Index(tmp_path / "i.db", encoder=tiny_encoder) as opened:
        sync_files(opened, tiny_encoder, [root], rules=rules)
        stored = {Path(p).relative_to(root).as_posix() for p in stored_files(opened)}
    assert stored == {"guide.html", "build.log", "keep/draft.md", "data.csv"}


def test_files_needing_the_extra_are_summed_up_in_one_line(
    tmp_path: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    for n in range(3):
        write_pdf(folder / f"r{n}.pdf", [["Quarterly report"]])
    (folder / "a.md").write_text("Plain notes.", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "pypdfium2", None)
    code, out, err = run_cli(capsys, tiny_model_dir, "index", tmp_path / "x.db", folder)
    assert code == 0 and err == ""
    assert out.startswith("1 file indexed") and out.count("pip install") == 1
    assert out.rstrip().endswith(
        '3 PDF/Office/legacy-encoded files need pip install "edge-colbert[files]"'
    )


def test_documents_get_pages_and_the_search_prints_path_and_page(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pypdfium2", reason='pip install "edge-colbert[files]"')
    folder = tmp_path / "f"
    folder.mkdir()
    write_pdf(folder / "report.pdf", [["The budget"], ["The horse and the bird by the tree"]])
    (folder / "code.py").write_text("import os\n\n\ndef horse():\n    return 'bird'\n")
    db = tmp_path / "x.db"
    assert run_cli(capsys, tiny_model_dir, "index", db, folder)[0] == 0
    with Index(db, readonly=True) as opened:
        metas = [m for _, m in opened.metadata()]
    assert {m.get("page") for m in metas if m["path"].endswith(".pdf")} == {1, 2}
    assert next(m["line"] for m in metas if m["path"].endswith(".py")) == 1
    code, out, _ = run_cli(capsys, tiny_model_dir, "search", db, "horse bird tree", "-k", "3")
    assert code == 0
    assert f"{folder / 'report.pdf'}:2" in out or "report.pdf:2" in out


def test_an_interrupted_run_leaves_no_half_file_behind(
    tmp_path: Path, index: Index, tiny_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "long.md"
    path.write_text(prose(40), encoding="utf-8")
    real_add = Index.add
    adds = []

    def add_then_stop(self: Index, texts: Any, **kwargs: Any) -> list[str]:
        adds.append(len(texts))
        if len(adds) == 2:
            raise KeyboardInterrupt
        return real_add(self, texts, **kwargs)

    monkeypatch.setattr(Index, "add", add_then_stop)
    sync = FolderSync(index, tiny_encoder, add_chunks=4)
    with pytest.raises(KeyboardInterrupt):
        sync.run([path])
    assert 0 < len(index) <= 4  # the first batch committed, the file is incomplete
    monkeypatch.setattr(Index, "add", real_add)
    report = sync_files(index, tiny_encoder, [path])
    assert report.indexed == 1
    (stored,) = stored_files(index).values()
    numbers = sorted(m["chunk"] for m in stored.chunks.values())
    assert numbers == list(range(len(numbers))) and len(numbers) > 4
    again = sync_files(index, tiny_encoder, [path])
    assert again.unchanged == 1 and again.chunks == 0


def test_deleting_most_files_gives_the_space_back(tmp_path: Path, tiny_encoder: Encoder) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    for n in range(60):
        (folder / f"n{n}.md").write_text(prose(20, seed=n), encoding="utf-8")
    db = tmp_path / "i.db"
    with Index(db, encoder=tiny_encoder) as opened:
        sync_files(opened, tiny_encoder, [folder])
    full = db.stat().st_size
    for n in range(55):
        (folder / f"n{n}.md").unlink()
    with Index(db, encoder=tiny_encoder) as opened:
        report = sync_files(opened, tiny_encoder, [folder])
        assert report.removed == 55
    assert db.stat().st_size < full / 2


def test_symlink_loops_and_missing_paths_are_one_line_each(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "ok.md").write_text("Fine text.", encoding="utf-8")
    (folder / "loop.md").symlink_to(folder / "loop.md")
    (folder / "sub").symlink_to(folder)  # a folder loop: walked once, silently
    code, out, err = run_cli(capsys, tiny_model_dir, "index", tmp_path / "x.db", folder)
    assert code == 0 and out.startswith("1 file indexed")
    assert err.strip() == f"skipped {folder / 'loop.md'}: symbolic link loop"
    code, _, err = run_cli(capsys, tiny_model_dir, "index", tmp_path / "x.db", tmp_path / "nope")
    assert code == 1 and err.count("\n") == 1 and "does not exist" in err


def test_ls_lists_files_with_chunk_counts(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "long.md").write_text(prose(6), encoding="utf-8")
    (folder / "short.md").write_text("Short.", encoding="utf-8")
    db = tmp_path / "x.db"
    run_cli(capsys, tiny_model_dir, "index", db, folder)
    code, out, _ = run_cli(capsys, tiny_model_dir, "ls", db, "--json")
    assert code == 0
    import json

    rows = json.loads(out)
    assert [Path(r["path"]).name for r in rows] == ["long.md", "short.md"]
    assert rows[0]["chunks"] > 1 and rows[1]["chunks"] == 1
    assert all(r["indexed"] >= r["mtime"] > 0 and r["origin"] == "folder" for r in rows)
    _, out, _ = run_cli(capsys, tiny_model_dir, "ls", db)
    assert (
        out.splitlines()[-1]
        == f"2 files, {rows[0]['chunks'] + 1} chunks (columns: chunks, modified, indexed, path)"
    )


def test_hit_locations_name_the_line_page_slide_or_chapter_and_heading() -> None:
    from edge_colbert.files_cli import hit_location

    assert hit_location({"path": "/a.md", "line": 42, "heading": "Install > Pip"}) == (
        ":42  (Install > Pip)"
    )
    assert hit_location({"page": 3, "line": 1}) == ":3"
    assert hit_location({"slide": 2, "heading": "Risks"}) == ":2  (Risks)"
    assert hit_location({"chapter": 4}) == ":ch4"
    assert hit_location({"topic": "api"}) == ""
    assert hit_location({"line": True}) == ""


def test_threads_sets_the_encoder_threads(
    tmp_path: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edge_colbert import files_cli

    made: list[int | None] = []
    real = files_cli._encoder

    def spy(args: Any) -> Encoder:
        made.append(args.threads)
        return real(args)

    monkeypatch.setattr(files_cli, "_encoder", spy)
    (tmp_path / "a.md").write_text("Threads test.", encoding="utf-8")
    code, _, err = run_cli(
        capsys, tiny_model_dir, "index", tmp_path / "x.db", tmp_path / "a.md", "--threads", "1"
    )
    assert code == 0, err
    assert made == [1]
    code, _, err = run_cli(
        capsys, tiny_model_dir, "index", tmp_path / "x.db", tmp_path, "--threads", "0"
    )
    assert code == 2 and "--threads: must be at least 1, got 0" in err
