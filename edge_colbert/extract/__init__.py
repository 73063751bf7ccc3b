"""Text out of the files a person keeps: PDF, Word, PowerPoint, web pages, e-books, Markdown,
plain text and source code, each as a series of :class:`Section` that say where they are.

:func:`extract_sections` picks the reader by the file's suffix. Readers of PDF, DOCX and PPTX
need the ``files`` extra (``pip install "edge-colbert[files]"``); without it they raise
:class:`FilesExtraMissingError` and the caller skips the file. HTML and EPUB use selectolax
when it is installed and the standard library's parser otherwise; legacy 8-bit text needs
charset-normalizer (also in the extra) to be detected.

Every reader is streaming or bounded: a plain-text file is read in pieces, so no file is held
whole in memory as text more than once (see :data:`MAX_FILE_BYTES`).

All functions here are thread-safe: they keep no state between calls.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_colbert.chunking import MAX_FILE_BYTES, UnreadableFileError

__all__ = [
    "CODE_SUFFIXES",
    "DOCUMENT_SUFFIXES",
    "FILES_EXTRA_HINT",
    "HTML_SUFFIXES",
    "MARKDOWN_SUFFIXES",
    "MAX_FILE_BYTES",
    "PLAIN_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "FilesExtraMissingError",
    "Section",
    "UnreadableFileError",
    "extract_sections",
    "kind_of",
]

FILES_EXTRA_HINT = 'pip install "edge-colbert[files]"'

DOCUMENT_SUFFIXES = frozenset({".pdf", ".docx", ".pptx", ".epub"})
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
PLAIN_SUFFIXES = frozenset({".txt", ".text", ".rst", ".org", ".tex", ".adoc", ".log"})
CODE_SUFFIXES = frozenset(
    {
        *(".py", ".pyi", ".js", ".jsx", ".mjs", ".ts", ".tsx", ".go", ".rs", ".java", ".kt"),
        *(".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".rb", ".php", ".swift", ".scala", ".lua"),
        *(".sh", ".bash", ".zsh", ".ps1", ".sql", ".r", ".pl", ".hs", ".ml", ".el", ".vue"),
        *(".toml", ".yaml", ".yml", ".json", ".jsonl", ".csv", ".tsv", ".ini", ".cfg", ".conf"),
        *(".xml", ".css", ".scss"),
    }
)
SUPPORTED_SUFFIXES = (
    DOCUMENT_SUFFIXES | HTML_SUFFIXES | MARKDOWN_SUFFIXES | PLAIN_SUFFIXES | CODE_SUFFIXES
)


class FilesExtraMissingError(UnreadableFileError):
    """The file's format needs the ``files`` extra, which is not installed (an
    :class:`~edge_colbert.errors.EdgeColbertError`, like every skipped file's reason)."""

    def __init__(self, path: Path, module: str) -> None:
        super().__init__(path, f"needs {module}: {FILES_EXTRA_HINT}")
        self.module = module


@dataclass(frozen=True)
class Section:
    """A run of a file's text and where it is.

    ``where`` holds what locates it for a person: ``page`` (PDF, from 1), ``slide``
    (presentations, from 1), ``chapter`` (EPUB spine position, from 1), ``heading``
    (``"Title > Part"``) and ``line`` (the 1-based line of the first character of ``text`` in
    the file, for text formats only, where chunks can give their own line numbers).
    Thread-safe once made (nothing here changes it).
    """

    text: str
    where: dict[str, Any] = field(default_factory=dict)


def kind_of(path: str | os.PathLike[str]) -> str | None:
    """The reader a file gets by its suffix: ``pdf``, ``docx``, ``pptx``, ``epub``, ``html``,
    ``markdown``, ``code``, ``text``; None for a suffix no reader knows."""
    suffix = Path(path).suffix.lower()
    if suffix in DOCUMENT_SUFFIXES:
        return suffix[1:]
    if suffix in HTML_SUFFIXES:
        return "html"
    if suffix in MARKDOWN_SUFFIXES:
        return "markdown"
    if suffix in CODE_SUFFIXES:
        return "code"
    if suffix in PLAIN_SUFFIXES:
        return "text"
    return None


def checked_size(file: Path, max_bytes: int, over: str) -> int:
    """The size of ``file`` in bytes, refused above ``max_bytes``.

    Raises:
        UnreadableFileError: the file cannot be stat'ed, or is larger than ``max_bytes``
            (``over`` ends the reason: what the limit is for and what to do).
    """
    try:
        size = file.stat().st_size
    except OSError as error:
        raise UnreadableFileError(file, _os_reason(error)) from error
    if size > max_bytes:
        raise UnreadableFileError(
            file, f"{size / 1e6:.1f} MB is over the {max_bytes / 1e6:.0f} MB limit {over}"
        )
    return size


def extract_sections(
    path: str | os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES
) -> Iterator[Section]:
    """The text of a file as sections, read by the reader its suffix names (plain text for
    a suffix no reader knows: a file a person named explicitly).

    Sections are yielded lazily; the file is checked (size, openable) before the first one.

    Raises:
        UnreadableFileError: too large, unreadable, binary, encrypted, corrupt, or without
            text (``reason`` says which); raised at the first ``next()`` or later.
        FilesExtraMissingError: the format needs the ``files`` extra.
    """
    file = Path(path)
    size = checked_size(file, max_bytes, "for one file; split it into smaller files")
    if size == 0:
        raise UnreadableFileError(file, "empty file")
    kind = kind_of(file)
    if kind == "pdf":
        from edge_colbert.extract.pdf import pdf_sections

        return pdf_sections(file)
    if kind == "docx":
        from edge_colbert.extract.office import docx_sections

        return docx_sections(file)
    if kind == "pptx":
        from edge_colbert.extract.office import pptx_sections

        return pptx_sections(file)
    if kind == "epub":
        from edge_colbert.extract.epub import epub_sections

        return epub_sections(file, max_bytes=max_bytes)
    if kind == "html":
        from edge_colbert.extract.html import html_sections
        from edge_colbert.extract.text import read_decoded

        return html_sections(read_decoded(file), path=file)
    from edge_colbert.extract.text import code_sections, markdown_sections, text_sections

    if kind == "markdown":
        return markdown_sections(file)
    if kind == "code":
        return code_sections(file)
    return text_sections(file)


def _os_reason(error: OSError) -> str:
    """A short reason for an OSError: a symbolic link loop, a file gone, no permission."""
    import errno

    if error.errno == errno.ELOOP:
        return "symbolic link loop"
    if error.errno == errno.ENOENT:
        return "vanished before it could be read"
    return error.strerror or str(error)
