"""What the HTTP API answers, without HTTP: searches with highlights, documents, figures.

:class:`SearchService` wraps one read-only :class:`~edge_colbert.index.Index` and turns its
hits into plain JSON-ready dicts: the passage to show, the character spans of the words that
matched, where in the file the chunk sits and a ``file://`` link to it. Keeping this apart
from FastAPI lets the rules (filters, modes, limits) be tested and reused without a server.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_colbert.errors import InvalidInputError
from edge_colbert.highlight import best_passage
from edge_colbert.index import DEFAULT_MODE, SEARCH_MODES
from edge_colbert.relevance import hit_is_weak
from edge_colbert.server.spans import hit_spans

if TYPE_CHECKING:
    from edge_colbert.encoder import Encoder
    from edge_colbert.index import Hit, Index

__all__ = [
    "MAX_K",
    "MODES",
    "SearchService",
    "heading_label",
    "location_label",
    "parse_where",
    "place_label",
]

# The search modes, as Index.search takes them.
MODES: tuple[str, ...] = tuple(SEARCH_MODES)
# Each hit's vectors are read back and its text tokenized for its highlights, and the whole
# chunk goes into the answer, so k is bounded to keep a request short.
MAX_K = 100
# A path-prefix filter becomes an "any of these paths" filter; past this many files the
# SQL it makes would be long, so the person is asked to narrow the prefix.
MAX_PREFIX_PATHS = 5000
# Seconds the list of indexed paths (for path filters) is reused while the count is the same.
PATHS_SECONDS = 2.0


def parse_where(raw: str | None) -> dict[str, Any] | None:
    """The ``where`` query parameter (a JSON object of metadata key -> value) as a dict.

    Raises:
        InvalidInputError: not JSON, or JSON that is not an object.
    """
    if raw is None or not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise InvalidInputError(
            f"where is not valid JSON ({error.msg} at character {error.pos}); give an object "
            'such as {"path": "/home/me/notes/a.md"} or {"page": 3}.'
        ) from None
    if not isinstance(value, dict):
        raise InvalidInputError(
            f"where must be a JSON object of metadata key -> value; got a JSON "
            f'{type(value).__name__}, e.g. use {{"chunk": 0}}.'
        )
    return value


def _number(value: Any) -> int | None:
    """A positive whole number from metadata, else None (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        return None
    return int(value) if value >= 0 else None


def place_label(metadata: Mapping[str, Any]) -> str | None:
    """Where in its file a chunk is: ``page 3``, ``slide 2``, ``lines 40-57``, ``line 12``
    or ``chapter 4``; None when the metadata says nothing of it."""
    for key in ("page", "slide"):
        number = _number(metadata.get(key))
        if number is not None:
            return f"{key} {number}"
    line, last = _number(metadata.get("line")), _number(metadata.get("end_line"))
    if line is not None:
        return f"lines {line}-{last}" if last is not None and last > line else f"line {line}"
    chapter = _number(metadata.get("chapter"))
    return None if chapter is None else f"chapter {chapter}"


def heading_label(metadata: Mapping[str, Any]) -> str | None:
    """The chunk's heading path (``Install > Linux``), or None."""
    heading = metadata.get("heading")
    if isinstance(heading, list):  # a heading path given as its parts
        heading = " > ".join(str(part) for part in heading if part)
    return heading.strip() or None if isinstance(heading, str) else None


def location_label(metadata: Mapping[str, Any]) -> str | None:
    """Place and heading for a person: ``line 12 · Install > Linux``; None when the metadata
    says nothing of either (text added through the Python API)."""
    parts = [place_label(metadata), heading_label(metadata)]
    return " · ".join(part for part in parts if part) or None


def _where(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The file fields of a hit or document: path, place, heading, location, file URL."""
    path = metadata.get("path")
    return {
        "path": path if isinstance(path, str) else None,
        "place": place_label(metadata),
        "heading": heading_label(metadata),
        "location": location_label(metadata),
        "file_url": _file_url(path),
    }


def _file_url(path: Any) -> str | None:
    """``file://`` URL of an absolute stored path (None for ids without a file)."""
    if not isinstance(path, str) or not Path(path).is_absolute():
        return None
    try:
        return Path(path).as_uri()
    except ValueError:
        return None


class SearchService:
    """Searches, documents and figures of one index, as JSON-ready dicts.

    Thread-safe as far as the index and encoder it holds are: it keeps no per-request
    state, and its one cache (the indexed paths, for prefix filters) is guarded by a lock.

    Args:
        index: the index, normally opened with ``readonly=True``; it follows other
            processes' writes on every search.
        encoder: the index's encoder, used to mark each hit's matched words.
    """

    def __init__(self, index: Index, encoder: Encoder) -> None:
        self.index = index
        self.encoder = encoder
        self.modes, self.default_mode = MODES, DEFAULT_MODE
        self._paths_lock = threading.Lock()
        self._paths: tuple[int, float, list[str]] | None = None

    # ------------------------------------------------------------------ search

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        mode: str | None = None,
        where: Mapping[str, Any] | None = None,
        path_prefix: str | None = None,
        highlight: bool = True,
    ) -> dict[str, Any]:
        """The ``k`` best chunks for ``query`` with their passages and highlights.

        ``highlight=False`` leaves the matched words out (empty ``highlights``), for
        clients that do not show them.

        Raises:
            InvalidInputError: empty query, k out of 1..MAX_K, an unknown mode, a filter it
                cannot apply.
        """
        began = time.perf_counter()
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("the query is empty; give some words to search for (q=...).")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidInputError(f"k must be a whole number from 1 to {MAX_K}; got {k!r}.")
        if mode is not None and mode not in MODES:
            raise InvalidInputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
        filters = dict(where or {})
        if path_prefix is not None and path_prefix.strip():
            filters["path"] = self._paths_under(path_prefix.strip(), filters.get("path"))
        mode = mode or self.default_mode
        query_tokens: int | None = None  # keyword search computes no MaxSim: weak is null
        if mode == "keyword":
            hits = self.index.search(query, k, where=filters or None, mode=mode)
        else:
            vectors = self.encoder.encode_queries([query])[0]
            query_tokens = len(vectors)
            hits = self.index.search_vectors(
                vectors, k, where=filters or None, query=query, mode=mode
            )
        spans = hit_spans(self.index, self.encoder, query, hits) if highlight else [[]] * len(hits)
        return {
            "query": query,
            "k": k,
            "mode": mode,
            "hits": [
                self._hit(rank, hit, found, query_tokens)
                for rank, (hit, found) in enumerate(zip(hits, spans, strict=True), start=1)
            ],
            "took_ms": round((time.perf_counter() - began) * 1000, 1),
        }

    @staticmethod
    def _hit(
        rank: int, hit: Hit, spans: Sequence[tuple[int, int]], query_tokens: int | None
    ) -> dict[str, Any]:
        start, end = best_passage(hit.text, spans)
        return {
            "rank": rank,
            "id": hit.id,
            "score": round(float(hit.score), 4) if math.isfinite(hit.score) else None,
            "weak": hit_is_weak(hit.semantic, query_tokens),
            "text": hit.text,
            "passage": {"start": start, "end": end},
            "highlights": [{"start": a, "end": b} for a, b in spans],
            "metadata": hit.metadata,
            **_where(hit.metadata),
        }

    # ----------------------------------------------------------- path prefixes

    def _paths_under(self, prefix: str, wanted: Any) -> list[str]:
        """The indexed paths under ``prefix`` (a folder or a file; relative ones are taken
        from the server's working folder, as ``index`` stores them), intersected with a
        ``path`` the ``where`` filter already names."""
        root = os.path.abspath(Path(prefix).expanduser())  # noqa: PTH100
        folder = root.rstrip(os.sep) + os.sep
        found = [p for p in self._indexed_paths() if p == root or p.startswith(folder)]
        if wanted is not None:
            allowed = set(wanted) if isinstance(wanted, (list, tuple)) else {wanted}
            found = [p for p in found if p in allowed]
        if len(found) > MAX_PREFIX_PATHS:
            raise InvalidInputError(
                f"path {prefix!r} holds {len(found)} indexed files, more than the "
                f"{MAX_PREFIX_PATHS} a path filter takes; give a deeper folder."
            )
        return found

    def _indexed_paths(self) -> list[str]:
        """Every distinct ``path`` in the metadata; re-read when the chunk count changed or
        after :data:`PATHS_SECONDS` (an edit that keeps the count shows up by then)."""
        with self._paths_lock:
            count, now = len(self.index), time.monotonic()
            cached = self._paths
            if cached is None or cached[0] != count or now - cached[1] > PATHS_SECONDS:
                paths = {
                    meta["path"]
                    for _, meta in self.index.metadata()
                    if isinstance(meta.get("path"), str)
                }
                cached = self._paths = (count, now, sorted(paths))
            return cached[2]

    # ------------------------------------------------------ documents, figures

    def document(self, doc_id: str) -> dict[str, Any] | None:
        """One stored chunk by id, or None."""
        hit = self.index.get(doc_id)
        if hit is None:
            return None
        return {"id": hit.id, "text": hit.text, "metadata": hit.metadata, **_where(hit.metadata)}

    def info(self) -> dict[str, Any]:
        """The index's figures, its file, and the search modes it serves."""
        figures = dict(self.index.info())
        return {
            "path": str(self.index.path),
            **figures,
            "files": len(self._indexed_paths()),
            "modes": list(self.modes),
            "default_mode": self.default_mode,
            "max_k": MAX_K,
        }
