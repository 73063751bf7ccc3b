"""Calibration passages built at run time from the docstrings of the Python standard library.

The projection fit (export/reduce.py) needs thousands of passages to generalize, more than
is worth shipping as text. Every Python installation carries the standard library's
source, and its docstrings are plain English prose (PSF License 2.0; nothing is copied
into this project, they are read from the user's own installation). The sources are read
with `ast`, never imported, so building the set has no side effects.

The set is deterministic for a given Python version: files are walked in sorted order and
passages are chosen by a hash of their text, not by position, so the choice spreads over
the whole library. Docstrings change a little between Python releases, and so does a
projection fitted on them.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import re
import sysconfig
from pathlib import Path

log = logging.getLogger(__name__)

# Folders of the standard library that are tests, tools, vendored code or generated tables,
# not documentation prose.
_SKIPPED_FOLDERS = frozenset(
    {
        "__pycache__",
        "config-3",
        "distutils",
        "encodings",
        "ensurepip",
        "idlelib",
        "lib2to3",
        "pydoc_data",
        "site-packages",
        "dist-packages",
        "test",
        "tests",
        "tkinter",
        "turtledemo",
        "venv",
    }
)
_MIN_WORDS, _MAX_WORDS = 30, 120
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]][.!?])\s+(?=[A-Z])")


def _clean_paragraphs(docstring: str) -> list[str]:
    """The prose paragraphs of a docstring, each on one line.

    Drops doctest lines, option tables, signatures and other lines that are mostly symbols,
    because they are code, not the kind of text the model will index.
    """
    paragraphs: list[str] = []
    for block in re.split(r"\n\s*\n", docstring):
        lines = [line.strip() for line in block.splitlines()]
        if any(line.startswith((">>>", "...", "$ ", "%")) for line in lines):
            continue
        text = " ".join(line for line in lines if line)
        letters = sum(c.isalpha() or c.isspace() for c in text)
        if len(text.split()) < 6 or letters < 0.85 * len(text):
            continue
        paragraphs.append(text)
    return paragraphs


def _chunks(paragraphs: list[str]) -> list[str]:
    """Consecutive paragraphs merged into passages of ``_MIN_WORDS``..``_MAX_WORDS`` words."""
    out: list[str] = []
    current: list[str] = []
    for paragraph in paragraphs:
        words = paragraph.split()
        if current and len(current) + len(words) > _MAX_WORDS:
            out.append(" ".join(current))
            current = []
        current.extend(words[:_MAX_WORDS])
    if current:
        out.append(" ".join(current))
    return [c for c in out if len(c.split()) >= _MIN_WORDS]


def _docstrings(path: Path) -> list[str]:
    """Docstrings of the module, classes and functions in one source file, in file order."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as error:
        log.debug("skipping %s: %s", path, error)
        return []
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docs = [ast.get_docstring(node) for node in ast.walk(tree) if isinstance(node, nodes)]
    return [d for d in docs if d]


def stdlib_root() -> Path:
    """The folder of the running interpreter's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_passages(max_passages: int = 3000, root: Path | None = None) -> list[str]:
    """Up to ``max_passages`` prose passages from the standard library's docstrings.

    Returns an empty list when the installation ships no ``.py`` sources (some embedded
    builds strip them); the caller then falls back to the shipped passages.
    """
    base = root if root is not None else stdlib_root()
    files = [
        p
        for p in sorted(base.rglob("*.py"))
        if not any(
            part in _SKIPPED_FOLDERS or part.startswith("config-")
            for part in p.relative_to(base).parts[:-1]
        )
    ]
    seen: set[str] = set()
    passages: list[str] = []
    for path in files:
        for docstring in _docstrings(path):
            for passage in _chunks(_clean_paragraphs(docstring)):
                if passage not in seen:
                    seen.add(passage)
                    passages.append(passage)
    # Choose by hash so the set spreads over the whole library, then restore file order.
    keyed = sorted(
        range(len(passages)), key=lambda i: hashlib.sha1(passages[i].encode()).hexdigest()
    )
    chosen = sorted(keyed[:max_passages])
    log.info(
        "calibration: %d of %d docstring passages from %d files under %s",
        len(chosen),
        len(passages),
        len(files),
        base,
    )
    return [passages[i] for i in chosen]


def pseudo_queries(passage: str, max_words: int = 24) -> list[str]:
    """Claim-like queries cut from a passage: its first sentence and, when it has three or
    more, its middle one; each at most ``max_words`` words."""
    sentences = [s.strip() for s in _SENTENCE_END.split(passage) if len(s.split()) >= 4]
    picked = sentences[:1]
    if len(sentences) >= 3:
        picked.append(sentences[len(sentences) // 2])
    return [" ".join(s.rstrip(".").split()[:max_words]) for s in picked]
