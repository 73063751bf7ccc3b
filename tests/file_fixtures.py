"""Small documents written at test time: PDF (by hand, a few hundred bytes), DOCX and PPTX
(python-docx / python-pptx), EPUB (zipfile), and broken or encrypted ones."""

from __future__ import annotations

import zipfile
from pathlib import Path

# The start of an OLE compound file: what an encrypted Office document is wrapped in.
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _pdf_string(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def write_pdf(path: Path, pages: list[list[str]], *, encrypted: bool = False) -> Path:
    """A PDF with one page per item, each line drawn in Helvetica (an empty list draws no
    text: a "scanned" page). ``encrypted`` adds a standard security handler whose empty user
    password does not match, so a reader needs a password."""
    objects: list[str] = []
    page_ids = [3 + 2 * n for n in range(len(pages))]
    font_id = 3 + 2 * len(pages)
    objects.append("<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{n} 0 R" for n in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>")
    for number, lines in enumerate(pages):
        content = "BT /F1 11 Tf 14 TL 72 740 Td " + " ".join(
            f"{_pdf_string(line)} Tj T*" for line in lines
        )
        content += " ET"
        objects.append(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> "
            f"/Contents {page_ids[number] + 1} 0 R >>"
        )
        objects.append(f"<< /Length {len(content)} >>\nstream\n{content}\nendstream")
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    trailer_extra = ""
    if encrypted:
        objects.append(
            "<< /Filter /Standard /V 1 /R 2 /O <" + "ab" * 32 + "> /U <" + "cd" * 32 + "> /P -4 >>"
        )
        trailer_extra = f" /Encrypt {len(objects)} 0 R /ID [<{'01' * 16}> <{'01' * 16}>]"
    out = "%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out.encode("latin-1")))
        out += f"{number} 0 obj\n{body}\nendobj\n"
    xref = len(out.encode("latin-1"))
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n"
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{trailer_extra} >>\n"
    out += f"startxref\n{xref}\n%%EOF\n"
    path.write_bytes(out.encode("latin-1"))
    return path


def write_docx(path: Path) -> Path:
    """A Word document with two headings, paragraphs and a table."""
    import docx

    document = docx.Document()
    document.add_heading("Garden notes", level=1)
    document.add_paragraph("Tomatoes need sun and water every morning.")
    document.add_heading("Tools", level=2)
    document.add_paragraph("The spade hangs in the shed.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "rake"
    table.cell(0, 1).text = "green handle"
    table.cell(1, 0).text = "hose"
    table.cell(1, 1).text = "twenty metres"
    document.save(str(path))
    return path


def write_pptx(path: Path) -> Path:
    """A presentation of two slides with titles, body text and speaker notes."""
    import pptx

    presentation = pptx.Presentation()
    for title, body, notes in (
        ("Quarterly plan", "Hire two engineers", "Mention the budget freeze"),
        ("Risks", "The supplier may be late", "Ask about the backup vendor"),
    ):
        slide = presentation.slides.add_slide(presentation.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        slide.notes_slide.notes_text_frame.text = notes
    presentation.save(str(path))
    return path


def write_epub(path: Path, chapters: list[tuple[str, str]]) -> Path:
    """An EPUB whose spine lists the chapters (title, paragraph) in reverse file order, so a
    reader that follows file names instead of the spine gets them wrong."""
    with zipfile.ZipFile(path, "w") as book:
        book.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        book.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?><container version="1.0" '
            'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>",
        )
        items, refs = [], []
        for number, (title, text) in enumerate(chapters):
            name = f"z{len(chapters) - number}.xhtml"
            items.append(f'<item id="c{number}" href="{name}" media-type="application/xhtml+xml"/>')
            refs.append(f'<itemref idref="c{number}"/>')
            book.writestr(
                f"OEBPS/{name}",
                f"<html><head><title>{title}</title></head><body><nav>Contents</nav>"
                f"<h1>{title}</h1><p>{text}</p></body></html>",
            )
        book.writestr(
            "OEBPS/content.opf",
            '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
            f"<manifest>{''.join(items)}</manifest><spine>{''.join(refs)}</spine></package>",
        )
    return path


def write_encrypted_office(path: Path) -> Path:
    """What an encrypted .docx/.pptx looks like to a zip reader: an OLE container."""
    path.write_bytes(OLE_MAGIC + b"\x00" * 504)
    return path
