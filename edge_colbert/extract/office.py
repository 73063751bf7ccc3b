"""Word (.docx) and PowerPoint (.pptx) files, read with python-docx and python-pptx
(``files`` extra).

Thread-safe: each call reads its own file and keeps no state.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from edge_colbert.chunking import UnreadableFileError
from edge_colbert.extract import FilesExtraMissingError, Section

if TYPE_CHECKING:  # the ``files`` extra; imported at run time only when a file needs it
    from docx.document import Document as DocxDocument
    from pptx.presentation import Presentation as PptxPresentation

_Opened = TypeVar("_Opened")

# Paragraphs gathered into one DOCX section before it is cut (a document with no headings).
DOCX_SECTION_CHARS = 64 * 1024
_HEADING_STYLE = re.compile(r"^(?:Heading|Title)\s*(\d*)$", re.IGNORECASE)


# The start of an OLE compound file, which Office's encryption wraps a .docx/.pptx in.
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _open(
    file: Path, *, kind: str, package: str, load: Callable[[], Callable[[str], _Opened]]
) -> _Opened:
    """Open ``file`` with the opener that ``load`` imports from the ``files`` extra.

    Raises:
        FilesExtraMissingError: ``load`` could not import ``package``.
        UnreadableFileError: the opener failed: encrypted, corrupt or not a ``kind`` file.
    """
    try:
        opener = load()
    except ImportError:
        raise FilesExtraMissingError(file, package) from None
    try:
        return opener(str(file))
    except Exception as error:  # python-docx/-pptx raise many types for a bad package
        raise _open_failed(file, error, kind) from error


def _docx_opener() -> Callable[[str], DocxDocument]:
    """python-docx's ``Document``, imported only when a DOCX is read (``files`` extra)."""
    import docx

    return docx.Document


def _pptx_opener() -> Callable[[str], PptxPresentation]:
    """python-pptx's ``Presentation``, imported only when a PPTX is read (``files`` extra)."""
    import pptx

    return pptx.Presentation


def _open_failed(file: Path, error: Exception, kind: str) -> UnreadableFileError:
    try:
        with file.open("rb") as stream:
            head = stream.read(len(OLE_MAGIC))
    except OSError:
        head = b""
    if head == OLE_MAGIC:
        return UnreadableFileError(
            file, f"encrypted {kind} (or the old binary format); save an unprotected copy"
        )
    return UnreadableFileError(file, f"corrupt or not a {kind} file ({type(error).__name__})")


def docx_sections(file: Path) -> Iterator[Section]:
    """A Word document as sections cut at its headings (``heading`` the path of headings
    above), tables read row by row with cells separated by `` | ``.

    Raises:
        FilesExtraMissingError: python-docx is not installed.
        UnreadableFileError: encrypted, corrupt or not a DOCX.
    """
    document = _open(file, kind="DOCX", package="python-docx", load=_docx_opener)
    # python-docx imported fine just now, so its submodules do too.
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    headings: list[tuple[int, str]] = []
    parts: list[str] = []
    size = 0

    def section() -> Section | None:
        text = "\n\n".join(p for p in parts if p.strip())
        heading = " > ".join(t for _, t in headings)
        return Section(text, {"heading": heading} if heading else {}) if text else None

    # Paragraph.style looks the default style up anew on every call (10 ms per paragraph in
    # a profile); the style id in the paragraph's XML and one table of names are enough.
    style_names = {style.style_id: style.name or "" for style in document.styles}
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            properties = block._p.pPr
            style_id = properties.style if properties is not None else None
            match = _HEADING_STYLE.match(style_names.get(style_id or "", ""))
            if match and text:
                done = section()
                if done is not None:
                    yield done
                parts, size = [], 0
                level = int(match.group(1) or 0)
                while headings and headings[-1][0] >= level:
                    headings.pop()
                headings.append((level, text))
            lines = [text]
        elif isinstance(block, Table):
            lines = [_row(row.cells) for row in block.rows]
        else:  # pragma: no cover - iter_inner_content yields only these two
            continue
        parts.extend(lines)
        size += sum(len(line) for line in lines)
        if size >= DOCX_SECTION_CHARS:
            done = section()
            if done is not None:
                yield done
            parts, size = [], 0
    done = section()
    if done is not None:
        yield done


def _row(cells: Any) -> str:
    """A table row as text; merged cells repeat in python-docx, so repeats are dropped."""
    seen: list[str] = []
    for cell in cells:
        text = " ".join(cell.text.split())
        if text and (not seen or seen[-1] != text):
            seen.append(text)
    return " | ".join(seen)


def pptx_sections(file: Path) -> Iterator[Section]:
    """A presentation as one section per slide (``slide`` from 1): the slide's text boxes and
    tables, then its speaker notes; ``heading`` is the slide's title.

    Raises:
        FilesExtraMissingError: python-pptx is not installed.
        UnreadableFileError: encrypted, corrupt or not a PPTX.
    """
    presentation = _open(file, kind="PPTX", package="python-pptx", load=_pptx_opener)
    for number, slide in enumerate(presentation.slides, start=1):
        texts: list[str] = []
        for shape in slide.shapes:
            if getattr(shape, "has_text_frame", False) and shape.text_frame.text.strip():
                texts.append(shape.text_frame.text.strip())
            elif getattr(shape, "has_table", False):
                texts.extend(_row(row.cells) for row in shape.table.rows)
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame
            if notes is not None and notes.text.strip():
                texts.append(notes.text.strip())
        text = "\n\n".join(t for t in texts if t)
        if not text:
            continue
        title_shape = slide.shapes.title
        title = " ".join(title_shape.text_frame.text.split()) if title_shape is not None else ""
        where: dict[str, Any] = {"slide": number}
        if title:
            where["heading"] = title
        yield Section(text, where)
