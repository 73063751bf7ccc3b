"""Cut text into chunks that fit the model's window (finding and reading files is
:mod:`edge_colbert.discovery` and :mod:`edge_colbert.extract`).

A ColBERT model truncates a document at ``doc_maxlen`` tokens, so anything past the window
would be silently unsearchable. :func:`chunk_text` packs whole paragraphs into chunks that fit,
falls back to sentences and then words for a paragraph too long on its own, and repeats the
tail of each chunk at the head of the next so that a passage cut in two stays findable.
Every chunk knows its character offsets in the text it came from.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from edge_colbert.errors import InvalidInputError

logger = logging.getLogger(__name__)

# The largest file `edge-colbert index` reads (see edge_colbert.extract).
MAX_FILE_BYTES = 50 * 1024 * 1024
# Share of the window repeated from the end of one chunk at the start of the next.
DEFAULT_OVERLAP = 0.12

CountTokens = Callable[[list[str]], list[int]]


class UnreadableFileError(InvalidInputError):
    """A file cannot be indexed: binary, encrypted, corrupt, too large, or unreadable.

    ``path`` and ``reason`` are kept apart so that a caller can print one short line.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Chunk:
    """A piece of a text: ``source[start:end] == text``; ``tokens`` as the counter counted
    the whole chunk (0 where not counted)."""

    text: str
    start: int
    end: int
    tokens: int = field(default=0, compare=False)


# ---------------------------------------------------------------------------------------------
# HTML without selectolax (the extract package's fallback)

_BLOCK_TAGS = frozenset(
    {
        *("address", "article", "aside", "blockquote", "body", "caption", "dd", "details"),
        *("dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form"),
        *("h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "html", "li", "main", "nav"),
        *("ol", "p", "pre", "section", "summary", "table", "tbody", "thead", "tfoot", "tr"),
        "ul",
    }
)
_HIDDEN_TAGS = frozenset({"script", "style", "template", "noscript", "head", "svg"})


class _VisibleText(HTMLParser):
    """Collects the text a browser shows, with blank lines between blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        self.pre = 0
        self.title: list[str] = []
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        if tag in _HIDDEN_TAGS:
            self.hidden += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
            if tag == "pre":
                self.pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if tag in _HIDDEN_TAGS:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
            return
        if self.hidden:
            return
        if self.pre:
            self.parts.append(data)
        else:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(markup: str) -> str:
    """The visible text of an HTML page, with its ``<title>`` as the first paragraph."""
    parser = _VisibleText()
    parser.feed(markup)
    parser.close()
    body = "".join(parser.parts)
    lines = [line.strip() for line in body.split("\n")]
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    title = " ".join("".join(parser.title).split())
    if title and not body.startswith(title):
        body = f"{title}\n\n{body}" if body else title
    return body


# ---------------------------------------------------------------------------------------------
# Chunking

_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")
# A sentence ends at . ! ? (or their CJK forms) and closing quotes/brackets before whitespace,
# or at a single line break inside a paragraph (list items, verse, headings over text).
_SENTENCE_BREAK = re.compile(r"(?<=[.!?。！？…])[\"')\]»”’]*\s+|\n\s*")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int
    paragraph: int


def _spans(text: str, start: int, end: int, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """The stripped pieces of ``text[start:end]`` between matches of ``pattern``."""
    pieces: list[tuple[int, int]] = []
    position = start
    for match in pattern.finditer(text, start, end):
        pieces.append((position, match.start()))
        position = match.end()
    pieces.append((position, end))
    out = []
    for a, b in pieces:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            out.append((a, b))
    return out


def _count(count_tokens: CountTokens, texts: list[str]) -> list[int]:
    """Call the counter, and check that it gave one count per text."""
    counts = list(count_tokens(texts))
    if len(counts) != len(texts):
        raise InvalidInputError(
            f"count_tokens returned {len(counts)} counts for {len(texts)} texts; it must "
            "return one count per text, such as Encoder.count_document_tokens does."
        )
    return counts


def _overhead(count_tokens: CountTokens) -> int:
    """Tokens the counter adds to any text ([CLS], marker, [SEP]): a one-letter word's count
    less one. An underestimate is caught by the final check of every chunk."""
    return max(0, _count(count_tokens, ["a"])[0] - 1)


def chunk_text(
    text: str,
    *,
    max_tokens: int,
    count_tokens: CountTokens,
    overlap_tokens: int | None = None,
) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``max_tokens`` tokens each, as counted by
    ``count_tokens``.

    Args:
        text: the text; offsets of the chunks index into it.
        max_tokens: the most tokens ``count_tokens`` may report for one chunk. With
            ``Encoder.count_document_tokens``, which counts [CLS], the marker and [SEP], this is
            the model's ``doc_maxlen``.
        count_tokens: counts the tokens of each text of a list; called a few times per text
            with long lists, never once per paragraph.
        overlap_tokens: how many tokens of the end of a chunk (whole sentences) are repeated at
            the start of the next; default 12% of the window. 0 turns overlap off.

    Paragraphs (separated by blank lines) are kept whole when they fit; a chunk ends at a
    paragraph break where it can, else at a sentence end, else between words.

    Raises:
        InvalidInputError: ``max_tokens`` leaves no room for text.
    """
    overhead = _overhead(count_tokens)
    budget = max_tokens - overhead
    if budget < 1:
        raise InvalidInputError(
            f"max_tokens={max_tokens} leaves no room for text once the {overhead} special "
            "tokens are counted; use a window of at least "
            f"{overhead + 8} tokens."
        )
    if overlap_tokens is None:
        overlap_tokens = int(DEFAULT_OVERLAP * budget)
    overlap_tokens = max(0, min(overlap_tokens, budget // 2))
    return _chunk_range(text, 0, len(text), budget, overhead, overlap_tokens, count_tokens, 0)


def _chunk_range(
    text: str,
    start: int,
    end: int,
    budget: int,
    overhead: int,
    overlap: int,
    count_tokens: CountTokens,
    depth: int,
) -> list[Chunk]:
    units = _units(text, start, end, budget, overhead, count_tokens)
    if not units:
        return []
    groups = _pack(units, budget, overlap)
    chunks = [
        Chunk(text[units[a].start : units[b].end], units[a].start, units[b].end) for a, b in groups
    ]
    # Token counts are not exactly additive for every tokenizer (BPE merges across a join),
    # so each chunk is checked whole, and one that overflows is cut again with less room.
    counts = _count(count_tokens, [chunk.text for chunk in chunks])
    checked: list[Chunk] = []
    for chunk, count in zip(chunks, counts, strict=True):
        excess = count - (budget + overhead)
        if excess <= 0 or depth >= 4 or chunk.end - chunk.start <= 1:
            checked.append(Chunk(chunk.text, chunk.start, chunk.end, count))
            continue
        smaller = max(1, budget - excess - depth - 1)
        checked.extend(
            _chunk_range(
                text,
                chunk.start,
                chunk.end,
                smaller,
                overhead,
                min(overlap, smaller // 2),
                count_tokens,
                depth + 1,
            )
        )
    return checked


def _units(
    text: str, start: int, end: int, budget: int, overhead: int, count_tokens: CountTokens
) -> list[_Unit]:
    """Sentences of the paragraphs, each within ``budget``; over-long ones cut into words,
    and over-long words into characters."""
    sentences: list[tuple[int, int, int]] = []
    for number, (p_start, p_end) in enumerate(_spans(text, start, end, _PARAGRAPH_BREAK)):
        sentences.extend((a, b, number) for a, b in _spans(text, p_start, p_end, _SENTENCE_BREAK))
    if not sentences:
        return []
    counts = _count(count_tokens, [text[a:b] for a, b, _ in sentences])
    units: list[_Unit] = []
    too_long: list[tuple[int, int, int]] = []
    for (a, b, number), count in zip(sentences, counts, strict=True):
        tokens = max(1, count - overhead)
        if tokens <= budget:
            units.append(_Unit(a, b, tokens, number))
        else:
            too_long.append((a, b, number))
    if too_long:
        units.extend(_word_units(text, too_long, budget, overhead, count_tokens))
        units.sort(key=lambda unit: unit.start)
    return units


def _word_units(
    text: str,
    sentences: list[tuple[int, int, int]],
    budget: int,
    overhead: int,
    count_tokens: CountTokens,
) -> list[_Unit]:
    words = [
        (match.start(), match.end(), number)
        for a, b, number in sentences
        for match in _WORD.finditer(text, a, b)
    ]
    counts = _count(count_tokens, [text[a:b] for a, b, _ in words])
    units: list[_Unit] = []
    # A byte-level tokenizer may spend up to 4 tokens on one character.
    piece = max(1, budget // 4)
    for (a, b, number), count in zip(words, counts, strict=True):
        tokens = max(1, count - overhead)
        if tokens <= budget:
            units.append(_Unit(a, b, tokens, number))
            continue
        for cut in range(a, b, piece):
            units.append(_Unit(cut, min(b, cut + piece), budget, number))
    # Words become sentence-sized runs again, so that packing and overlap stay cheap.
    return _merge_runs(units, budget)


def _merge_runs(units: list[_Unit], budget: int) -> list[_Unit]:
    merged: list[_Unit] = []
    for unit in units:
        last = merged[-1] if merged else None
        share = max(1, budget // 8)
        if (
            last is not None
            and last.paragraph == unit.paragraph
            and last.tokens + unit.tokens <= share
        ):
            merged[-1] = _Unit(last.start, unit.end, last.tokens + unit.tokens, unit.paragraph)
        else:
            merged.append(unit)
    return merged


def _pack(units: Sequence[_Unit], budget: int, overlap: int) -> list[tuple[int, int]]:
    """Group consecutive units into chunks: (first, last) unit indices, inclusive."""
    groups: list[tuple[int, int]] = []
    first = 0
    while first < len(units):
        total = 0
        last = first
        while last < len(units) and total + units[last].tokens <= budget:
            total += units[last].tokens
            last += 1
        last = max(last - 1, first)
        if last + 1 < len(units) and last > first:
            # End at a paragraph break when one lies in the back half of the chunk.
            for cut in range(last, first, -1):
                if units[cut].paragraph != units[cut + 1].paragraph:
                    if sum(u.tokens for u in units[first : cut + 1]) * 2 >= total:
                        last = cut
                    break
        groups.append((first, last))
        if last + 1 >= len(units):
            break
        first = _overlap_start(units, first, last, overlap, budget)
    return groups


def _overlap_start(units: Sequence[_Unit], first: int, last: int, overlap: int, budget: int) -> int:
    """Where the next chunk starts: the trailing units of this one that fit in ``overlap``
    and leave room for the next unit, or the next unit itself."""
    following = units[last + 1].tokens
    start = last + 1
    total = 0
    while start - 1 > first:
        candidate = units[start - 1].tokens
        if total + candidate > overlap or total + candidate + following > budget:
            break
        total += candidate
        start -= 1
    return start
