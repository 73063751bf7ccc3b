"""HTML pages as their main text, one section per heading, without navigation.

With selectolax (``files`` extra, ``selectolax.lexbor``) the page's main content is found
(``[role=main]``, ``<main>``, ``<article>``, Sphinx's ``div.body``, else ``<body>``) and
navigation, headers, footers, sidebars, scripts, styles, forms and Sphinx's ``¶`` links are
dropped; each ``<h1>``-``<h4>`` starts a section whose ``heading`` is the path of headings
above it. Without selectolax the standard library's parser gives the visible text of the
whole page as one section (navigation included).

Thread-safe: no state is kept between calls.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from edge_colbert.chunking import html_to_text
from edge_colbert.extract import Section

if TYPE_CHECKING:
    from selectolax.lexbor import LexborNode

# What is never the page's own text: chrome, code that runs, and Sphinx's navigation.
DROPPED = ", ".join(
    (
        *("script", "style", "noscript", "template", "svg", "iframe", "form", "button"),
        *("nav", "header", "footer", "aside", "head"),
        *("[role=navigation]", "[role=banner]", "[role=contentinfo]", "[role=search]"),
        *("div.sphinxsidebar", "div.related", "div.footer", "a.headerlink", "div.navigation"),
        *("#searchbox", ".skip-link", ".breadcrumb", ".breadcrumbs"),
    )
)
MAIN = ("[role=main]", "main", "article", "div.body", "div.document", "body")
SECTION_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4}
_BLOCKS = frozenset(
    {
        *("address", "blockquote", "dd", "details", "div", "dl", "dt", "figcaption", "figure"),
        *("h5", "h6", "hr", "li", "ol", "p", "pre", "section", "summary", "table", "tr", "ul"),
        *("caption", "tbody", "thead", "tfoot", "br", "article", "main"),
    }
)
_SPACE = re.compile(r"\s+")


def html_sections(markup: str, *, path: Path | None = None) -> Iterator[Section]:
    """The main text of an HTML page as sections, one per heading.

    Args:
        markup: the page.
        path: for messages only.
    """
    del path  # sections carry no path; the caller knows it
    try:
        from selectolax.lexbor import LexborHTMLParser
    except ImportError:
        text = html_to_text(markup)
        if text:
            yield Section(text, {})
        return
    tree = LexborHTMLParser(markup)
    title_node = tree.css_first("title")
    title = _clean(title_node.text()) if title_node is not None else ""
    main = next((node for node in map(tree.css_first, MAIN) if node is not None), None)
    if main is None:
        main = tree.root
    if main is None:
        return
    for node in main.css(DROPPED):
        node.decompose()
    yield from _walk(main, title)


def _clean(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def _walk(root: LexborNode, title: str) -> Iterator[Section]:
    """Depth-first over the tree without recursion (pages nest deep), gathering text and
    cutting a section at each heading."""
    headings: list[tuple[int, str]] = []
    parts: list[str] = []
    pre = 0
    # Whether text has come since the last heading: a heading followed at once by another
    # (a title over its first subsection) stays at the head of the next section instead of
    # becoming a chunk of its own.
    body = False

    def section() -> Section | None:
        text = _paragraphs("".join(parts))
        heading = " > ".join(t for _, t in headings) or title
        return Section(text, {"heading": heading} if heading else {}) if text else None

    # Items: a node to enter, or a tag name whose element ends (closing a block or <pre>).
    stack: list[LexborNode | str] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if item == "pre":
                pre -= 1
            parts.append("\n\n" if item != "cell" else " ")
            continue
        if item.is_text_node:
            text = item.text_content or ""
            parts.append(text if pre else _SPACE.sub(" ", text))
            body = body or bool(text.strip())
            continue
        tag = item.tag or ""
        if tag in SECTION_HEADINGS:
            if body:
                done = section()
                if done is not None:
                    yield done
                parts.clear()
            body = False
            level = SECTION_HEADINGS[tag]
            while headings and headings[-1][0] >= level:
                headings.pop()
            text = _clean(item.text(deep=True))
            if text:
                headings.append((level, text))
                parts.append(text + "\n\n")
            continue
        if not item.is_element_node and not item.is_document_node:
            continue  # comments
        if tag == "pre":
            pre += 1
            stack.append("pre")
        elif tag in _BLOCKS:
            parts.append("\n\n")
            stack.append(tag)
        elif tag in ("td", "th"):
            stack.append("cell")
        stack.extend(reversed(list(item.iter(include_text=True))))
    done = section()
    if done is not None:
        yield done


def _paragraphs(text: str) -> str:
    """Lines stripped, at most one blank line between paragraphs, no blank start or end."""
    lines = [line.strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
