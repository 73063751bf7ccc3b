"""Plain text, Markdown and source code: decoded and cut into sections while streaming.

A file is decoded with the encoding found in its first :data:`SAMPLE_BYTES`: a UTF-8 or
UTF-16 byte-order mark, else UTF-8 when the sample is valid UTF-8, else the legacy 8-bit
encoding that charset-normalizer finds (``files`` extra). Lines are then read one at a time
(at most :data:`PIECE_CHARS` characters each, so a file of one endless line is still read
in pieces) and gathered into sections of about :data:`PIECE_CHARS` characters, cut at a blank
line: a 50 MB file is never held whole as text.

Thread-safe: no state is kept between calls.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from edge_colbert.chunking import UnreadableFileError
from edge_colbert.extract import (
    FILES_EXTRA_HINT,
    FilesExtraMissingError,
    Section,
    _os_reason,
    checked_size,
)

SAMPLE_BYTES = 64 * 1024
# Characters gathered into one section before it is cut at the next blank line.
PIECE_CHARS = 256 * 1024
# Markup (HTML) is parsed whole; above this it is refused rather than parsed into a huge tree.
MAX_MARKUP_BYTES = 20 * 1024 * 1024
# How much more "chaos" (charset-normalizer's mess measure) a Windows-1252 reading may show
# than the best candidate and still be preferred.
WESTERN_TOLERANCE = 0.05
# C0 control bytes that text does not hold (tab, line breaks, form feed, Ctrl-Z at the end of
# old DOS files and the escape of coloured logs aside): a file that is not UTF-8 and holds one
# is binary, whatever 8-bit encoding it would be read in.
_BINARY_CONTROL = re.compile(rb"[\x01-\x08\x0e-\x19\x1c-\x1f]")
# A code section reaches this many characters before a top-level definition starts a new one.
CODE_SECTION_CHARS = 600

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")
# A top-level definition in the common languages: where a code section may start.
_DEFINITION = re.compile(
    r"^(?:export\s+|pub(?:\([\w:]+\))?\s+|public\s+|private\s+|static\s+|async\s+)*"
    r"(?:def|class|function|func|fn|impl|struct|enum|trait|interface|type|module|package"
    r"|const|let|var|macro_rules!|template)\b"
    r"|^[A-Za-z_][\w\s\*&:<>,]*\([^;]*\)\s*\{?\s*$"  # a C/Java-style function header
    r"|^\[[^\]]+\]\s*$"  # a TOML/INI table
)


def detect_encoding(file: Path, sample: bytes, *, whole: bool) -> str:
    """The codec to read ``file`` with, from its first bytes.

    Args:
        file: for messages.
        sample: the file's first bytes.
        whole: whether ``sample`` is the whole file (else a multi-byte character may be cut
            at its end).

    Raises:
        UnreadableFileError: binary (NUL bytes; not UTF-8 and holding control bytes; or no
            encoding fits).
        FilesExtraMissingError: not UTF-8, and charset-normalizer is not installed.
    """
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if b"\x00" in sample:
        raise UnreadableFileError(file, "binary file (holds NUL bytes), not text")
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as error:
        if not whole and error.start >= len(sample) - 3 and error.end == len(sample):
            return "utf-8"  # a character cut by the end of the sample
        bad = f"byte 0x{sample[error.start]:02x} at offset {error.start}"
    control = _BINARY_CONTROL.search(sample)
    if control is not None:
        # No 8-bit text encoding uses these bytes for text: binary, with or without the extra.
        raise UnreadableFileError(
            file,
            f"binary file (control byte 0x{control.group()[0]:02x} at offset "
            f"{control.start()}), not text",
        )
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        raise FilesExtraMissingError(file, "charset-normalizer") from None
    results = list(from_bytes(sample))
    if not results:
        raise UnreadableFileError(file, f"binary file, not text in any known encoding ({bad})")
    close = [m for m in results if m.chaos <= results[0].chaos + WESTERN_TOLERANCE]
    # On short Western texts charset-normalizer ranks Baltic or Central European code pages
    # level with (or just above) Windows-1252; when a close candidate reads exactly as
    # Windows-1252 does, take Windows-1252, the legacy encoding most such files are in.
    # Otherwise the close candidate whose text best fits a language wins.
    try:
        western = sample.decode("cp1252")
    except UnicodeDecodeError:
        western = None
    if western is not None and any(str(match) == western for match in close):
        return "cp1252"
    return str(max(close, key=lambda match: match.coherence).encoding)


def open_text(file: Path) -> io.TextIOWrapper:
    """``file`` opened for reading as text with its detected encoding, newlines as ``\\n``.

    Bytes past the sample that do not decode become U+FFFD rather than failing the file
    half-way through.

    Raises:
        UnreadableFileError: cannot be opened, binary, or not text.
    """
    try:
        raw = file.open("rb")
    except OSError as error:
        raise UnreadableFileError(file, _os_reason(error)) from error
    try:
        sample = raw.read(SAMPLE_BYTES)
        encoding = detect_encoding(file, sample, whole=len(sample) < SAMPLE_BYTES)
        raw.seek(0)
    except BaseException:
        raw.close()
        raise
    return io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline=None)


def read_decoded(file: Path, *, max_bytes: int = MAX_MARKUP_BYTES) -> str:
    """The whole text of a (markup) file, decoded as :func:`open_text` does.

    Raises:
        UnreadableFileError: over ``max_bytes``, unreadable, binary or not text.
    """
    checked_size(file, max_bytes, "for one page of markup; split it or save it as text")
    with open_text(file) as stream:
        try:
            return stream.read().lstrip("\ufeff")
        except OSError as error:
            raise UnreadableFileError(file, _os_reason(error)) from error


def _lines(file: Path) -> Iterator[str]:
    """The file's lines (each ending in ``\\n`` but maybe the last), at most
    :data:`PIECE_CHARS` characters each."""
    with open_text(file) as stream:
        while True:
            try:
                line = stream.readline(PIECE_CHARS)
            except OSError as error:
                raise UnreadableFileError(file, _os_reason(error)) from error
            if not line:
                return
            yield line


def _gather(
    file: Path,
    starts_section: Callable[[str, bool, int], dict[str, str] | None],
) -> Iterator[Section]:
    """Sections of ``file``'s lines: a new one where ``starts_section(line, after_blank, size)``
    returns a ``where`` update (e.g. a heading; ``size`` is the
    characters gathered so far), or at a blank line once the current one
    holds :data:`PIECE_CHARS` characters (at any line past twice that)."""
    lines: list[str] = []
    size = 0
    first_line = 1
    where: dict[str, str] = {}
    after_blank = True
    for number, line in enumerate(_lines(file), start=1):
        blank = not line.strip()
        update = None if blank else starts_section(line, after_blank, size)
        cut = update is not None or (size >= PIECE_CHARS and blank) or size >= 2 * PIECE_CHARS
        if cut and lines:
            yield Section("".join(lines), {**where, "line": first_line})
            lines, size, first_line = [], 0, number
        if update is not None:
            where = update
        if not lines:
            first_line = number
        lines.append(line)
        size += len(line)
        after_blank = blank
    if lines:
        yield Section("".join(lines), {**where, "line": first_line})


def text_sections(file: Path) -> Iterator[Section]:
    """A plain-text file as sections (one, unless it is large), with line numbers."""
    return _gather(file, lambda _line, _blank, _size: None)


def markdown_sections(file: Path) -> Iterator[Section]:
    """A Markdown file as one section per heading, ``heading`` the path of headings above
    (``"Install > From source"``); headings inside fenced code blocks are not headings."""
    headings: list[tuple[int, str]] = []
    fence: list[str] = []

    def starts(line: str, _after_blank: bool, _size: int) -> dict[str, str] | None:
        opened = _FENCE.match(line)
        if opened:
            if fence and fence[0] == opened.group(1):
                fence.clear()
            elif not fence:
                fence.append(opened.group(1))
            return None
        if fence:
            return None
        match = _HEADING.match(line.rstrip("\n"))
        if match is None:
            return None
        level, title = len(match.group(1)), match.group(2)
        while headings and headings[-1][0] >= level:
            headings.pop()
        headings.append((level, title))
        return {"heading": " > ".join(text for _, text in headings)}

    return _gather(file, starts)


def code_sections(file: Path) -> Iterator[Section]:
    """Source code or configuration as sections that start at top-level definitions
    (``def``, ``class``, ``func``, ``fn``, a C function header, a TOML table...) after a
    blank line once the section holds :data:`CODE_SECTION_CHARS`, with line numbers; the
    chunker then cuts them at blank lines."""

    def starts(line: str, after_blank: bool, size: int) -> dict[str, str] | None:
        if size < CODE_SECTION_CHARS or not after_blank:
            return None  # small definitions share a section, so chunks are not tiny
        return {} if _DEFINITION.match(line) else None

    return _gather(file, starts)


__all__ = [
    "FILES_EXTRA_HINT",
    "code_sections",
    "detect_encoding",
    "markdown_sections",
    "open_text",
    "read_decoded",
    "text_sections",
]
