"""EPUB e-books: the chapters of the spine, in reading order, through the HTML reader.

Read with :mod:`zipfile` and the standard library's XML parser (whose expat refuses entity
expansion bombs); no e-book library is needed. Thread-safe: no state is kept between calls.
"""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

from edge_colbert.chunking import UnreadableFileError
from edge_colbert.extract import Section
from edge_colbert.extract.html import html_sections

_CONTAINER = "META-INF/container.xml"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def epub_sections(file: Path, *, max_bytes: int) -> Iterator[Section]:
    """The chapters of the spine as sections, ``chapter`` numbered from 1 in reading order.

    Args:
        file: the .epub file.
        max_bytes: the most bytes one chapter may inflate to (a zip bomb is refused).

    Raises:
        UnreadableFileError: not a zip, no container or package file, encrypted (DRM), or a
            chapter over ``max_bytes``.
    """
    try:
        book = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError) as error:
        raise UnreadableFileError(file, f"corrupt or not an EPUB ({error})") from error
    with book:
        names = set(book.namelist())
        if "META-INF/encryption.xml" in names:
            raise UnreadableFileError(file, "encrypted EPUB (DRM); it cannot be read")
        spine = _spine(file, book, names, max_bytes)
        for number, name in enumerate(spine, start=1):
            markup = _read(file, book, name, max_bytes).decode("utf-8", errors="replace")
            for section in html_sections(markup):
                yield Section(section.text, {"chapter": number, **section.where})


def _read(file: Path, book: zipfile.ZipFile, name: str, max_bytes: int) -> bytes:
    try:
        info = book.getinfo(name)
        if info.file_size > max_bytes:
            raise UnreadableFileError(
                file, f"{name} inflates to {info.file_size / 1e6:.0f} MB, over the limit"
            )
        with book.open(info) as member:
            data = member.read(max_bytes + 1)
    except (KeyError, zipfile.BadZipFile, OSError, RuntimeError) as error:
        raise UnreadableFileError(file, f"corrupt EPUB: {name}: {error}") from error
    if len(data) > max_bytes:
        raise UnreadableFileError(file, f"{name} inflates past the limit")
    return data


def _spine(file: Path, book: zipfile.ZipFile, names: set[str], max_bytes: int) -> list[str]:
    """The archive names of the spine's documents, in reading order."""
    if _CONTAINER not in names:
        raise UnreadableFileError(file, f"not an EPUB: no {_CONTAINER}")
    try:
        container = ElementTree.fromstring(_read(file, book, _CONTAINER, max_bytes))
        rootfile = next(
            (el.get("full-path") for el in container.iter() if _local(el.tag) == "rootfile"),
            None,
        )
        if not rootfile:
            raise UnreadableFileError(file, "not an EPUB: the container names no package")
        package = ElementTree.fromstring(_read(file, book, rootfile, max_bytes))
    except ElementTree.ParseError as error:
        raise UnreadableFileError(file, f"corrupt EPUB XML ({error})") from error
    base = posixpath.dirname(rootfile)
    manifest = {
        el.get("id"): posixpath.normpath(posixpath.join(base, el.get("href", "")))
        for el in package.iter()
        if _local(el.tag) == "item"
    }
    order = [
        manifest[ref]
        for el in package.iter()
        if _local(el.tag) == "itemref" and (ref := el.get("idref")) in manifest
    ]
    return [name for name in order if name in names]
