"""PDF files as one section per page, read with pypdfium2 (``files`` extra).

Thread-safety: pdfium is not thread-safe; pypdfium2 serializes its calls with a global lock,
so calling :func:`pdf_sections` from several threads is safe but not parallel.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from edge_colbert.chunking import UnreadableFileError
from edge_colbert.extract import FilesExtraMissingError, Section


def pdf_sections(file: Path) -> Iterator[Section]:
    """One section per page that has text, ``page`` numbered from 1.

    Raises:
        FilesExtraMissingError: pypdfium2 is not installed.
        UnreadableFileError: encrypted, corrupt, or no page has a text layer (a scan).
    """
    try:
        import pypdfium2 as pdfium  # type: ignore[import-untyped]
    except ImportError:
        raise FilesExtraMissingError(file, "pypdfium2") from None
    try:
        document = pdfium.PdfDocument(file)
    except pdfium.PdfiumError as error:
        raise UnreadableFileError(file, _reason(str(error))) from error
    found = False
    try:
        for number in range(len(document)):
            page = document[number]
            try:
                textpage = page.get_textpage()
                try:
                    text = textpage.get_text_range()
                finally:
                    textpage.close()
            except pdfium.PdfiumError as error:
                raise UnreadableFileError(
                    file, f"page {number + 1}: {_reason(str(error))}"
                ) from error
            finally:
                page.close()
            text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
            if text.strip():
                found = True
                yield Section(text, {"page": number + 1})
    finally:
        document.close()
    if not found:
        raise UnreadableFileError(
            file, "no text layer on any page (a scanned PDF?); run OCR on it first"
        )


def _reason(message: str) -> str:
    """pdfium's load errors, said for a person."""
    lowered = message.lower()
    if "password" in lowered or "security" in lowered:
        return "encrypted PDF (needs a password); save an unprotected copy to index it"
    if "format" in lowered or "file" in lowered:
        return f"corrupt or not a PDF ({message})"
    return message
