"""Text out of files: each format's sections and where they are, encodings, and the one-line
reasons for files that cannot be read."""

from __future__ import annotations

import codecs
import importlib.util
import tracemalloc
from pathlib import Path

import pytest
from file_fixtures import write_docx, write_encrypted_office, write_epub, write_pdf, write_pptx

from edge_colbert.chunking import UnreadableFileError
from edge_colbert.extract import (
    FilesExtraMissingError,
    Section,
    extract_sections,
    kind_of,
)
from edge_colbert.extract.text import PIECE_CHARS

FILES = 'pip install "edge-colbert[files]"'


def sections(path: Path) -> list[Section]:
    return list(extract_sections(path))


def reason(path: Path) -> str:
    with pytest.raises(UnreadableFileError) as caught:
        sections(path)
    return caught.value.reason


# --- text, Markdown, code -----------------------------------------------------------------


def test_markdown_sections_follow_headings_with_line_numbers_and_ignore_fenced_hashes(
    tmp_path: Path,
) -> None:
    text = (
        "Intro line.\n\n# Install\n\nRun it.\n\n```sh\n# not a heading\n```\n\n"
        "## From source\n\nClone it.\n\n# Use\n\nSearch.\n"
    )
    path = tmp_path / "guide.md"
    path.write_text(text, encoding="utf-8")
    found = sections(path)
    assert [(s.where.get("heading"), s.where["line"]) for s in found] == [
        (None, 1),
        ("Install", 3),
        ("Install > From source", 11),
        ("Use", 15),
    ]
    assert "# not a heading" in found[1].text
    lines = text.split("\n")
    for section in found:  # each section starts at the line it says
        assert lines[section.where["line"] - 1] == section.text.split("\n")[0]


def test_code_sections_start_at_top_level_definitions(tmp_path: Path) -> None:
    body = "    x = 1\n" * 80  # each function is longer than a small section
    source = (
        f"import os\n\n\ndef first():\n{body}\n\nclass Second:\n{body}\n\ndef third():\n    pass\n"
    )
    path = tmp_path / "mod.py"
    path.write_text(source, encoding="utf-8")
    found = sections(path)
    firsts = [s.text.split("\n")[0] for s in found]
    assert firsts == ["import os", "class Second:", "def third():"] or firsts == [
        "import os",
        "def first():",
        "class Second:",
        "def third():",
    ]
    lines = source.split("\n")
    for section in found:
        assert lines[section.where["line"] - 1] == section.text.split("\n")[0]


@pytest.mark.parametrize("suffix", [".py", ".json", ".csv", ".org", ".tex", ".toml", ".go"])
def test_code_and_config_suffixes_have_readers(suffix: str) -> None:
    assert kind_of(f"x{suffix}") in ("code", "text")


def test_utf8_bom_crlf_and_utf16_are_read(tmp_path: Path) -> None:
    (tmp_path / "bom.txt").write_bytes(codecs.BOM_UTF8 + "caf\u00e9\r\nnext".encode())
    (tmp_path / "u16.txt").write_bytes("\u00fcber alles\n".encode("utf-16"))
    assert sections(tmp_path / "bom.txt")[0].text == "caf\u00e9\nnext"
    assert sections(tmp_path / "u16.txt")[0].text == "\u00fcber alles\n"


def test_legacy_8bit_text_is_detected_and_decoded(tmp_path: Path) -> None:
    pytest.importorskip("charset_normalizer", reason=FILES)
    text = (
        "Le caf\u00e9 est pr\u00e8s de la rivi\u00e8re, \u00e0 c\u00f4t\u00e9 du march\u00e9. " * 20
    )
    (tmp_path / "old.txt").write_bytes(text.encode("cp1252"))
    assert sections(tmp_path / "old.txt")[0].text == text
    russian = "Привет, мир! Как дела? Я читаю книгу о реке. " * 5
    (tmp_path / "ru.txt").write_bytes(russian.encode("cp1251"))
    assert sections(tmp_path / "ru.txt")[0].text == russian


def test_without_charset_normalizer_legacy_text_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "charset_normalizer", None)
    (tmp_path / "old.txt").write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(FilesExtraMissingError) as caught:
        sections(tmp_path / "old.txt")
    assert FILES in caught.value.reason


@pytest.mark.parametrize("extra", ["installed", "missing"])
def test_binary_without_nul_bytes_is_binary_with_or_without_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str
) -> None:
    """Not UTF-8, no NUL byte, but control bytes no 8-bit text holds: skipped as binary (not
    sent to the extra), while legacy text with tabs, CRLF and a DOS Ctrl-Z at its end is text."""
    import sys

    if extra == "installed":
        pytest.importorskip("charset_normalizer", reason=FILES)
    else:
        monkeypatch.setitem(sys.modules, "charset_normalizer", None)
    noise = bytes(range(1, 256)) * 8  # compressed data looks like this: every byte value
    (tmp_path / "noise.txt").write_bytes(noise)
    assert reason(tmp_path / "noise.txt") == "binary file (control byte 0x01 at offset 0), not text"
    line = "2024-01-02 the caf\u00e9 opened at nine, the cr\u00e8me was cold\tok\r\n"
    (tmp_path / "old.log").write_bytes((line * 10 + "\x1a").encode("cp1252"))
    if extra == "installed":
        assert sections(tmp_path / "old.log")[0].text == line.replace("\r", "") * 10 + "\x1a"
    else:
        with pytest.raises(FilesExtraMissingError):
            sections(tmp_path / "old.log")


def test_binary_empty_missing_too_large_and_looping_files_give_reasons(tmp_path: Path) -> None:
    (tmp_path / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (tmp_path / "empty.md").write_bytes(b"")
    (tmp_path / "loop.txt").symlink_to(tmp_path / "loop.txt")
    (tmp_path / "big.txt").write_bytes(b"a" * 2000)
    assert reason(tmp_path / "image.txt").startswith("binary file")
    assert reason(tmp_path / "empty.md") == "empty file"
    assert reason(tmp_path / "gone.txt") == "vanished before it could be read"
    assert reason(tmp_path / "loop.txt") == "symbolic link loop"
    with pytest.raises(UnreadableFileError, match="over the 0 MB limit"):
        list(extract_sections(tmp_path / "big.txt", max_bytes=1000))


def test_a_large_text_file_is_read_in_pieces_with_bounded_memory(tmp_path: Path) -> None:
    paragraph = "The quick brown fox jumps over the lazy dog near the river bank. " * 8
    path = tmp_path / "big.txt"
    with path.open("w", encoding="utf-8") as out:
        for _ in range(12_000):  # about 6 MB
            out.write(paragraph + "\n\n")
    tracemalloc.start()
    try:
        total = 0
        count = 0
        for section in extract_sections(path):
            assert len(section.text) <= 2 * PIECE_CHARS + len(paragraph) + 2
            total += len(section.text)
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == path.stat().st_size and count > 10
    assert peak < 8 * PIECE_CHARS * 4  # a few pieces, never the 6 MB file


def test_one_endless_line_is_read_in_pieces(tmp_path: Path) -> None:
    path = tmp_path / "min.json"
    path.write_text('{"a": "' + "x" * (3 * PIECE_CHARS) + '"}', encoding="utf-8")
    found = sections(path)
    assert len(found) >= 2 and all(len(s.text) <= 2 * PIECE_CHARS for s in found)


# --- HTML ---------------------------------------------------------------------------------

SPHINX = """<html><head><title>Glossary &#8212; Python docs</title>
<script>var nav = 1;</script><style>p {}</style></head><body>
<div class="related" role="navigation"><h3>Navigation</h3><ul><li><a>index</a></li>
<li><a>next</a> |</li></ul></div>
<div class="document"><div class="documentwrapper"><div class="body" role="main">
<section id="glossary"><h1>Glossary<a class="headerlink" href="#g">\u00b6</a></h1>
<dl><dt>bytecode</dt><dd><p>Python source code is compiled into bytecode.</p></dd></dl>
<section><h2>Decorators<a class="headerlink">\u00b6</a></h2><p>A function returning
another   function.</p><pre>@wrapper
def f(): ...</pre></section></section></div></div>
<div class="sphinxsidebar" role="navigation"><h3>Previous topic</h3><p>Search</p></div></div>
<div class="footer">\u00a9 Copyright 2001 Python Software Foundation.</div></body></html>"""


def test_html_main_text_without_sphinx_navigation_with_heading_paths(tmp_path: Path) -> None:
    pytest.importorskip("selectolax", reason=FILES)
    path = tmp_path / "glossary.html"
    path.write_text(SPHINX, encoding="utf-8")
    found = sections(path)
    text = "\n".join(s.text for s in found)
    for chrome in ("Navigation", "next", "Previous topic", "Copyright", "var nav", "\u00b6"):
        assert chrome not in text
    assert [s.where.get("heading") for s in found] == ["Glossary", "Glossary > Decorators"]
    assert "Python source code is compiled into bytecode." in found[0].text
    assert "A function returning another function." in found[1].text
    assert "@wrapper\ndef f(): ..." in found[1].text


def test_a_heading_right_over_another_opens_the_next_section(tmp_path: Path) -> None:
    pytest.importorskip("selectolax", reason=FILES)
    path = tmp_path / "page.html"
    path.write_text(
        "<main><h1>Top</h1><h2>First</h2><p>one</p><h2>Second</h2><p>two</p></main>",
        encoding="utf-8",
    )
    assert [(s.text, s.where["heading"]) for s in sections(path)] == [
        ("Top\n\nFirst\n\none", "Top > First"),
        ("Second\n\ntwo", "Top > Second"),
    ]


def test_html_without_selectolax_falls_back_to_visible_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "selectolax.lexbor", None)
    path = tmp_path / "page.htm"
    path.write_text(SPHINX, encoding="utf-8")
    (section,) = sections(path)
    assert "bytecode" in section.text and "var nav" not in section.text


# --- documents ----------------------------------------------------------------------------


def test_pdf_pages_are_numbered_and_blank_pages_skipped(tmp_path: Path) -> None:
    pytest.importorskip("pypdfium2", reason=FILES)
    path = write_pdf(tmp_path / "a.pdf", [["Solar panels (on roofs)", "save money"], [], ["Wind"]])
    assert [(s.where, s.text.split()) for s in sections(path)] == [
        ({"page": 1}, ["Solar", "panels", "(on", "roofs)", "save", "money"]),
        ({"page": 3}, ["Wind"]),
    ]


def test_bad_pdfs_give_one_reason_each(tmp_path: Path) -> None:
    pytest.importorskip("pypdfium2", reason=FILES)
    encrypted = write_pdf(tmp_path / "locked.pdf", [["secret"]], encrypted=True)
    scanned = write_pdf(tmp_path / "scan.pdf", [[], []])
    corrupt = tmp_path / "broken.pdf"
    corrupt.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ntruncated")
    assert reason(encrypted).startswith("encrypted PDF")
    assert reason(scanned).startswith("no text layer on any page")
    assert reason(corrupt).startswith("corrupt or not a PDF")


def test_docx_headings_paragraphs_and_tables(tmp_path: Path) -> None:
    pytest.importorskip("docx", reason=FILES)
    found = sections(write_docx(tmp_path / "garden.docx"))
    assert [s.where for s in found] == [
        {"heading": "Garden notes"},
        {"heading": "Garden notes > Tools"},
    ]
    assert "Tomatoes need sun" in found[0].text
    assert "rake | green handle" in found[1].text and "hose | twenty metres" in found[1].text


def test_pptx_slides_with_notes(tmp_path: Path) -> None:
    pytest.importorskip("pptx", reason=FILES)
    found = sections(write_pptx(tmp_path / "plan.pptx"))
    assert [s.where for s in found] == [
        {"slide": 1, "heading": "Quarterly plan"},
        {"slide": 2, "heading": "Risks"},
    ]
    assert "Hire two engineers" in found[0].text and "budget freeze" in found[0].text


def test_encrypted_and_corrupt_office_files(tmp_path: Path) -> None:
    pytest.importorskip("docx", reason=FILES)
    pytest.importorskip("pptx", reason=FILES)
    assert reason(write_encrypted_office(tmp_path / "locked.docx")).startswith("encrypted DOCX")
    (tmp_path / "broken.pptx").write_bytes(b"PK\x03\x04 not really a zip")
    assert reason(tmp_path / "broken.pptx").startswith("corrupt or not a PPTX")


def test_office_files_without_the_extra_name_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    for module in ("pypdfium2", "docx", "pptx"):
        monkeypatch.setitem(sys.modules, module, None)
    for name in ("a.pdf", "a.docx", "a.pptx"):
        (tmp_path / name).write_bytes(b"whatever")
        with pytest.raises(FilesExtraMissingError) as caught:
            sections(tmp_path / name)
        assert caught.value.reason.endswith(FILES)


def test_epub_chapters_follow_the_spine(tmp_path: Path) -> None:
    path = write_epub(
        tmp_path / "book.epub", [("Departure", "The ship left at dawn."), ("Storm", "Waves.")]
    )
    found = sections(path)
    assert [s.where["chapter"] for s in found] == [1, 2]
    assert "The ship left at dawn." in found[0].text and "Waves." in found[1].text
    if importlib.util.find_spec("selectolax") is not None:  # heading paths need selectolax
        assert [s.where.get("heading") for s in found] == ["Departure", "Storm"]


def test_bad_epubs(tmp_path: Path) -> None:
    (tmp_path / "a.epub").write_bytes(b"not a zip")
    assert reason(tmp_path / "a.epub").startswith("corrupt or not an EPUB")
    import zipfile

    with zipfile.ZipFile(tmp_path / "drm.epub", "w") as book:
        book.writestr("META-INF/container.xml", "<container/>")
        book.writestr("META-INF/encryption.xml", "<encryption/>")
    assert reason(tmp_path / "drm.epub").startswith("encrypted EPUB")
