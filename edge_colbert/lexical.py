"""The keyword side of hybrid search: safe FTS5 queries, stopwords, and score fusion.

User text never reaches FTS5 as query syntax: :func:`fts_query` keeps only the words
(``\\w+`` runs, any script) and quotes each one, so ``"``, ``*``, ``NEAR(``, ``AND``, ``-``
or ``:`` are plain text, never operators. A part in double quotes stays a phrase (its words,
re-quoted). :func:`fuse` combines BM25 and MaxSim scores of the same candidates.

:class:`TermFrequencies` leaves out of a query the terms that cannot change its BM25
ranking. Everything else here is pure; everything is thread-safe.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Hashable
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_LEXICAL_WEIGHT",
    "FUSIONS",
    "LOSSLESS_SHARE",
    "MAX_QUERY_TERMS",
    "NORM_DEPTH",
    "STOPWORDS",
    "Fusion",
    "TermFrequencies",
    "fts_match",
    "fts_query",
    "fts_terms",
    "fuse",
    "is_question",
    "is_stopword",
    "query_words",
]

# A 100 KB query would otherwise become an OR of thousands of terms.
MAX_QUERY_TERMS = 64
# Each signal is min-max normalised between its best score and its NORM_DEPTH-th best, so
# the prefilter's candidates and an exhaustive scan give nearly the same scale.
NORM_DEPTH = 100
# Weight of BM25 in the convex combination (chosen on one half of scifact-dev; docs/hybrid.md).
DEFAULT_LEXICAL_WEIGHT = 0.6
RRF_K = 60
# A term held by this share of the documents or more has BM25 weight 0 (clamped to 1e-6).
LOSSLESS_SHARE = 0.5

Fusion = Literal["convex", "rrf"]
FUSIONS: tuple[str, ...] = ("convex", "rrf")

_WORD = re.compile(r"\w+")
_PHRASE = re.compile(r'"([^"]*)"')

# English function words; marking or weighting them says nothing about a match.
_STOPWORD_TEXT = (
    "a about above after again against all am an and any are as at be because been before "
    "being below between both but by can could did do does doing down during each few for "
    "from further had has have having he her here hers herself him himself his how i if "
    "in into is it its itself just me more most my myself no nor not now of off on once "
    "only or other our ours ourselves out over own same she should so some such than that "
    "the their theirs them themselves then there these they this those through to too "
    "under until up very was we were what when where which while who whom why will with "
    "would you your yours yourself yourselves"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
# Words that open a question. In a question, the function words around the topic ("how do
# I", "what if ... while") are rare in a small collection and so win BM25 weight over the
# words that say what is asked (docs/hybrid.md, "Question-style queries").
_QUESTION_OPENERS = frozenset(
    [
        "how",
        "what",
        "why",
        "when",
        "where",
        "who",
        "whom",
        "whose",
        "which",
        "can",
        "could",
        "do",
        "does",
        "did",
        "is",
        "are",
        "was",
        "were",
        "should",
        "would",
        "will",
        "shall",
        "may",
        "might",
    ]
)


def is_stopword(word: str) -> bool:
    """Whether ``word`` is an English stopword or holds no letter or digit."""
    return word.lower() in STOPWORDS or not _WORD.search(word)


def query_words(text: str) -> list[str]:
    """The words of ``text`` (runs of letters, digits and ``_`` in any script), in order."""
    return _WORD.findall(text)


def is_question(text: str) -> bool:
    """Whether ``text`` reads as a question: it ends with ``?`` or opens with a question
    word (how, what, why, can, does, ...)."""
    words = query_words(text)
    return text.rstrip().endswith("?") or bool(words and words[0].lower() in _QUESTION_OPENERS)


def _quote(words: list[str]) -> str:
    # \w runs hold no double quote, so no escaping is needed; FTS5 tokenizes inside.
    return '"' + " ".join(words) + '"'


def fts_query(text: str, *, max_terms: int = MAX_QUERY_TERMS) -> str | None:
    """An FTS5 MATCH expression for ``text``: its :func:`fts_terms` OR-ed; None when
    ``text`` holds no word."""
    terms = fts_terms(text, max_terms=max_terms)
    return fts_match(terms) if terms else None


def fts_match(terms: list[str]) -> str:
    """The FTS5 MATCH expression of :func:`fts_terms` (some of them): the terms OR-ed."""
    return " OR ".join(terms)


def fts_terms(text: str, *, max_terms: int = MAX_QUERY_TERMS) -> list[str]:
    """The FTS5 terms of ``text``: its words and quoted phrases, each one quoted (so no
    operator of FTS5's syntax survives), repeats dropped, at most ``max_terms``; empty when
    ``text`` holds no word.

    In a question (:func:`is_question`) the stopwords outside quoted phrases are left out,
    unless every word is one: "how do I bind the server to another host" looks for
    *bind*, *server*, *another* and *host*.
    """
    question = is_question(text)
    terms: list[str] = []
    seen: set[str] = set()
    position = 0
    pieces: list[tuple[bool, str]] = []
    for found in _PHRASE.finditer(text):
        pieces.append((False, text[position : found.start()]))
        pieces.append((True, found.group(1)))
        position = found.end()
    pieces.append((False, text[position:]))
    content = [w for w in query_words(text) if not is_stopword(w)]
    for is_phrase, piece in pieces:
        words = query_words(piece)
        if question and content and not is_phrase:
            words = [w for w in words if not is_stopword(w)]
        groups = [words] if is_phrase and len(words) > 1 else [[w] for w in words]
        for group in groups:
            term = _quote(group)
            key = term.lower()
            if key not in seen:
                seen.add(key)
                terms.append(term)
    return terms[:max_terms]


def _normalise(scores: npt.NDArray[np.float64], depth: int) -> npt.NDArray[np.float64]:
    """Min-max between the best score and the ``depth``-th best (1 and 0; lower ones go
    below 0)."""
    if scores.size == 0:
        return scores
    ordered = np.sort(scores)[::-1]
    high, low = ordered[0], ordered[min(depth, ordered.size) - 1]
    spread = high - low if high - low > 1e-12 else 1.0
    normalised: npt.NDArray[np.float64] = (scores - low) / spread
    return normalised


def fuse(
    semantic: npt.NDArray[np.float32],
    lexical: npt.NDArray[np.float64],
    *,
    weight: float = DEFAULT_LEXICAL_WEIGHT,
    method: Fusion = "convex",
    depth: int = NORM_DEPTH,
) -> npt.NDArray[np.float64]:
    """Fused scores of candidates with MaxSim scores ``semantic`` and BM25 scores
    ``lexical`` (higher is better; NaN where the document is not among the keyword hits).

    ``convex``: ``weight * bm25' + (1 - weight) * maxsim'``, each min-max normalised
    between its best score and its ``depth``-th best (BM25: or 0, no match, when there are
    fewer keyword hits; a NaN BM25 counts as that low end). ``rrf``: reciprocal rank fusion,
    ``1 / (60 + rank)`` summed over the two rankings (NaN: no lexical term).
    """
    sem = np.asarray(semantic, dtype=np.float64)
    lex = np.asarray(lexical, dtype=np.float64)
    matched = ~np.isnan(lex)
    if method == "rrf":
        fused = np.zeros(sem.size)
        sem_rank = np.empty(sem.size)
        sem_rank[np.argsort(-sem, kind="stable")] = np.arange(sem.size, dtype=np.float64)
        fused += 1.0 / (RRF_K + 1 + sem_rank)
        if matched.any():
            lex_rank = np.full(sem.size, np.inf)
            hits = np.flatnonzero(matched)
            lex_rank[hits[np.argsort(-lex[hits], kind="stable")]] = np.arange(
                hits.size, dtype=np.float64
            )
            fused += np.where(matched, 1.0 / (RRF_K + 1 + lex_rank), 0.0)
        return fused
    sem_norm = _normalise(sem, depth)
    if not matched.any():
        return (1.0 - weight) * sem_norm
    kept = np.sort(lex[matched])[::-1]
    high = float(kept[0])
    # The depth-th keyword hit's score, or 0 (no match) when there are fewer hits.
    low = float(kept[depth - 1]) if kept.size >= depth else 0.0
    filled = np.where(matched, lex, low)
    spread = high - low if high - low > 1e-12 else 1.0
    lex_norm = (filled - low) / spread
    fused_convex: npt.NDArray[np.float64] = weight * lex_norm + (1.0 - weight) * sem_norm
    return fused_convex


class TermFrequencies:
    """How many documents hold each FTS5 term, remembered for one state of the collection,
    to leave out of a keyword query the terms that say little about which document to pick.

    FTS5's ``bm25()`` gives a term held by ``n`` of ``N`` documents the weight
    ``log((N - n + 0.5) / (n + 0.5))`` and clamps it to 1e-6 where that is not positive,
    i.e. where ``2n >= N``: such a term adds at most a few millionths to a score, yet FTS5
    scores and sorts every document it matches, and on scifact-dev the words like *the* and
    *of* took half the time of a claim's keyword search (docs/hybrid.md). Leaving out the
    terms held by :data:`LOSSLESS_SHARE` of the documents keeps the ranking. (A lower
    share, 0.25, won 0.002 nDCG@10 on one half of scifact-dev and lost 0.0015 on the other:
    not used.)

    Counts are kept for one collection state (a key that changes with every write) and
    dropped when it changes; counting a term costs one pass over its FTS5 posting list,
    stopped at ``N / 2``. Thread-safe: a lock guards the table, and two threads that count
    the same term at once store the same number.
    """

    def __init__(self, *, capacity: int = 65536) -> None:
        """``capacity``: terms remembered before the table starts over."""
        self._lock = threading.Lock()
        self._state: Hashable = None
        self._documents = 0
        self._counts: dict[str, int] = {}
        self._capacity = capacity

    def informative(
        self,
        terms: list[str],
        *,
        share: float = LOSSLESS_SHARE,
        state: Hashable,
        documents: Callable[[], int],
        holding: Callable[[str, int], int],
    ) -> list[str]:
        """``terms`` without those held by ``share`` of the documents or more (all of them
        when none of the rest occurs).

        Args:
            terms: FTS5 terms (:func:`fts_terms`).
            share: the least share of the documents that makes a term uninformative (at
                most :data:`LOSSLESS_SHARE`, counted no further).
            state: identifies the collection's contents; counts made under another state
                are forgotten.
            documents: counts the documents (called once per state).
            holding: ``holding(term, limit)`` counts the documents holding ``term``,
                stopping at ``limit``.
        """
        if len(terms) < 2:
            return terms
        with self._lock:
            if state != self._state or len(self._counts) > self._capacity:
                self._state, self._documents, self._counts = state, documents(), {}
            total = self._documents
            known = {t: self._counts[t] for t in terms if t in self._counts}
        ceiling = math.ceil(total * LOSSLESS_SHARE)  # counted no further: never dropped above
        counted = {t: known[t] if t in known else holding(t, ceiling) for t in terms}
        with self._lock:
            if state == self._state:
                self._counts.update(counted)
        limit = max(1, math.ceil(total * share))
        kept = [t for t in terms if counted[t] < limit]
        return kept if any(counted[t] for t in kept) else terms
