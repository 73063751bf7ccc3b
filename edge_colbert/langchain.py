"""LangChain adapters: a retriever and a vector store over an edge-colbert :class:`Index`.

``pip install "edge-colbert[langchain]"`` (langchain-core only; no PyTorch).

>>> from edge_colbert.langchain import EdgeColbertRetriever     # doctest: +SKIP
>>> retriever = EdgeColbertRetriever(index="notes.db", k=4)     # doctest: +SKIP
>>> retriever.invoke("how are writes made safe?")               # doctest: +SKIP

Both adapters call the public :class:`~edge_colbert.index.Index` API only, so they are as
thread-safe as the index: one index may serve many threads, and LangChain's async methods,
which run the sync ones in its executor threads, search the same index concurrently. Every
bad input is an :class:`~edge_colbert.errors.InvalidInputError` (a ``ValueError``) raised
before anything is encoded or written, so nothing stored changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_colbert._adapters import check_mode, open_index, require, search
from edge_colbert.errors import InvalidInputError
from edge_colbert.validation import check_k

require("langchain_core", "langchain")

from langchain_core.callbacks import (  # noqa: E402
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.runnables.config import run_in_executor  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402
from pydantic import ConfigDict, field_validator, model_validator  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge_colbert.encoder import Encoder
    from edge_colbert.index import Hit, Index

__all__ = ["EdgeColbertRetriever", "EdgeColbertVectorStore"]

DEFAULT_K = 4  # LangChain's own default number of documents
# Per-call overrides accepted by invoke(query, **kwargs) and similarity_search(..., **kwargs).
_SEARCH_KWARGS = frozenset({"k", "where", "mode"})

NO_SINGLE_VECTOR = (
    "edge-colbert is a multi-vector (ColBERT) store: a query is one vector per token and a "
    "document a bag of token vectors scored by MaxSim, so there is no single query vector to "
    "search by and no single document vector for {what}. Use similarity_search(query) instead."
)


def _document(hit: Hit, *, with_score: bool) -> Document:
    """A LangChain Document from a hit: ``id`` set; metadata the stored one, plus (for the
    retriever) ``id`` and ``score``, which overwrite stored keys of those names."""
    metadata = dict(hit.metadata)
    if with_score:
        metadata["id"] = hit.id
        metadata["score"] = hit.score
    return Document(page_content=hit.text, metadata=metadata, id=hit.id)


def _search_options(
    defaults: Mapping[str, Any], overrides: Mapping[str, Any]
) -> tuple[int, Mapping[str, Any] | None, str | None]:
    """``(k, where, mode)``: the per-call ``overrides`` over the ``defaults``, checked."""
    unknown = sorted(set(overrides) - _SEARCH_KWARGS)
    if unknown:
        raise InvalidInputError(
            f"unknown search option(s) {unknown}; the edge-colbert retriever takes k, where "
            "and mode."
        )
    options = {**defaults, **overrides}
    where = options.get("where")
    if where is not None and not isinstance(where, Mapping):
        raise InvalidInputError(
            f"where must be a dict of metadata key -> value; got {type(where).__name__}."
        )
    return check_k(options.get("k", DEFAULT_K)), where, check_mode(options.get("mode"))


class EdgeColbertRetriever(BaseRetriever):
    """A LangChain retriever over an edge-colbert index.

    Args:
        index: an :class:`~edge_colbert.index.Index`, or the path of an index file (opened
            read-only; it must exist).
        encoder: the model for a path (default: the bundled one); ignored for an Index.
        k: documents per query (default 4); ``invoke(query, k=...)`` overrides it.
        where: metadata equality filter, as in :meth:`Index.search`.
        mode: search mode, as in :meth:`Index.search` (passed on only when set).

    Each :class:`~langchain_core.documents.Document` has ``id`` set, and ``metadata`` holds
    the stored metadata plus ``id`` and ``score`` (the MaxSim score). Thread-safe as the index
    is; ``ainvoke`` runs the search in LangChain's executor so the event loop is not blocked.

    Raises (from ``invoke``): InvalidInputError for an empty query, ``k < 1``, an unknown mode
    or a filter the index cannot apply.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: Any
    # Declared so that type checkers accept EdgeColbertRetriever(index=path, encoder=...);
    # _open uses it to open a path (an Encoder; Any, as pydantic cannot check that class).
    encoder: Any = None
    k: int = DEFAULT_K
    where: dict[str, Any] | None = None
    mode: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _open(cls, data: Any) -> Any:
        """Open a path as a read-only Index (with the given or the bundled encoder)."""
        if isinstance(data, dict) and "index" in data:
            data = dict(data)
            data["index"] = open_index(data["index"], encoder=data.get("encoder"), readonly=True)
        return data

    @field_validator("k", mode="before")
    @classmethod
    def _check_k(cls, k: Any) -> int:
        return check_k(k)

    @field_validator("mode", mode="before")
    @classmethod
    def _check_mode(cls, mode: Any) -> str | None:
        return check_mode(mode)

    def _defaults(self) -> dict[str, Any]:
        return {"k": self.k, "where": self.where, "mode": self.mode}

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        """The top-k documents for ``query`` (``k``, ``where``, ``mode`` may be overridden)."""
        k, where, mode = _search_options(self._defaults(), kwargs)
        hits = search(self.index, query, k=k, where=where, mode=mode)
        return [_document(hit, with_score=True) for hit in hits]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        """The search runs in LangChain's executor (a worker thread), so a slow query does
        not stall the event loop; the index is thread-safe, so that is all it takes."""
        return await run_in_executor(
            None,
            self._get_relevant_documents,
            query,
            run_manager=run_manager.get_sync(),
            **kwargs,
        )


class EdgeColbertVectorStore(VectorStore):
    """A LangChain ``VectorStore`` that is an edge-colbert index: it encodes with its own
    ColBERT model (no ``Embeddings``) and ranks by MaxSim.

    Args:
        index: an :class:`~edge_colbert.index.Index`, or the path of an index file (created
            when absent).
        encoder: the model for a path (default: the bundled one); ignored for an Index.
        mode: default search mode for ``similarity_search`` (passed on only when set).

    Adding a document whose id is stored replaces it (upsert); ``delete`` ignores unknown
    ids. Searching by vector and maximal marginal relevance raise ``NotImplementedError``:
    a multi-vector store has no single query or document vector. Thread-safe as the index
    is; the async methods are LangChain's, which run these in its executor threads.
    """

    def __init__(
        self,
        index: Index | str | Path,
        *,
        encoder: Encoder | None = None,
        mode: str | None = None,
    ) -> None:
        self.index = open_index(index, encoder=encoder, readonly=False)
        self.mode = check_mode(mode)

    @property
    def embeddings(self) -> Embeddings | None:
        """None: the store encodes with its own ColBERT model (``self.index.encoder``)."""
        return None

    # ----------------------------------------------------------------- writes

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[Any, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Encode and store ``texts``; returns their ids (new uuid4 hex ids where an id is
        None or missing). All-or-nothing: every text, id and metadata is checked first.

        Raises:
            InvalidInputError: an empty text, a metadata value that is not JSON (a datetime,
                a set, NaN...), an id repeated in the batch, lengths that do not match.
        """
        if kwargs:
            raise InvalidInputError(
                f"unknown option(s) {sorted(kwargs)}; add_texts takes texts, metadatas and ids."
            )
        if isinstance(texts, (str, bytes)):
            raise InvalidInputError("texts must be a list of strings; got a single string.")
        batch = list(texts)
        doc_ids = None
        if ids is not None:
            if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
                raise InvalidInputError(f"ids must be a list; got {type(ids).__name__}.")
            doc_ids = [uuid.uuid4().hex if doc_id is None else doc_id for doc_id in ids]
        return self.index.add(batch, ids=doc_ids, metadata=metadatas)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete the documents with these ids (unknown ids are ignored); returns True.

        ``ids=None`` is refused rather than read as "delete everything": remove the index
        file for that.
        """
        if kwargs:
            raise InvalidInputError(f"unknown option(s) {sorted(kwargs)}; delete takes ids.")
        if ids is None:
            raise InvalidInputError(
                "delete() needs the ids to delete; nothing was deleted. To empty the store, "
                "delete the index file."
            )
        self.index.delete(ids)
        return True

    # ------------------------------------------------------------------ reads

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents with these ids, in that order; unknown ids are skipped."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise InvalidInputError(f"ids must be a list; got {type(ids).__name__}.")
        found = (self.index.get(doc_id) for doc_id in dict.fromkeys(ids))
        return [_document(hit, with_score=False) for hit in found if hit is not None]

    def similarity_search_with_score(
        self, query: str, k: int = DEFAULT_K, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The top-k ``(document, MaxSim score)`` pairs, best first.

        Keyword arguments: ``filter`` or ``where`` (metadata equality filter) and ``mode``.
        """
        where = kwargs.pop("filter", None)
        if where is not None and "where" in kwargs:
            raise InvalidInputError("give filter or where, not both (they are the same).")
        if where is not None:
            kwargs["where"] = where
        options = {"k": k, "mode": self.mode, **kwargs}
        k, where, mode = _search_options({}, options)
        hits = search(self.index, query, k=k, where=where, mode=mode)
        return [(_document(hit, with_score=False), hit.score) for hit in hits]

    def similarity_search(self, query: str, k: int = DEFAULT_K, **kwargs: Any) -> list[Document]:
        """The top-k documents for ``query`` (metadata exactly as stored, ``id`` set)."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        raise NotImplementedError(
            "MaxSim scores are sums over query tokens, not similarities in [0, 1], so "
            "edge-colbert has no relevance score; use similarity_search_with_score."
        )

    # ------------------------------------------------- what a multi-vector store lacks

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = DEFAULT_K, **kwargs: Any
    ) -> list[Document]:
        """Not available: see :data:`NO_SINGLE_VECTOR`."""
        raise NotImplementedError(NO_SINGLE_VECTOR.format(what="search by vector"))

    async def asimilarity_search_by_vector(
        self, embedding: list[float], k: int = DEFAULT_K, **kwargs: Any
    ) -> list[Document]:
        """Not available: see :data:`NO_SINGLE_VECTOR`."""
        raise NotImplementedError(NO_SINGLE_VECTOR.format(what="search by vector"))

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = DEFAULT_K,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """Not available: see :data:`NO_SINGLE_VECTOR`."""
        raise NotImplementedError(NO_SINGLE_VECTOR.format(what="maximal marginal relevance"))

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = DEFAULT_K,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """Not available: see :data:`NO_SINGLE_VECTOR`."""
        raise NotImplementedError(NO_SINGLE_VECTOR.format(what="maximal marginal relevance"))

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = DEFAULT_K,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """Not available: see :data:`NO_SINGLE_VECTOR`."""
        raise NotImplementedError(NO_SINGLE_VECTOR.format(what="maximal marginal relevance"))

    async def amax_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = DEFAULT_K,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """Not available: see :data:`NO_SINGLE_VECTOR`."""
        raise NotImplementedError(NO_SINGLE_VECTOR.format(what="maximal marginal relevance"))

    # ------------------------------------------------------------ construction

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict[Any, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> EdgeColbertVectorStore:
        """A store at ``path=`` (or on ``index=``) holding ``texts``.

        ``embedding`` must be None: the store encodes with its ColBERT model (``encoder=``,
        default the bundled one). Keyword arguments: ``path`` or ``index``, ``encoder``,
        ``mode``.

        >>> EdgeColbertVectorStore.from_texts(["a", "b"], path="notes.db")  # doctest: +SKIP
        """
        if embedding is not None:
            raise InvalidInputError(
                f"edge-colbert encodes with its own ColBERT model, not a LangChain Embeddings "
                f"({type(embedding).__name__}); pass embedding=None and encoder=Encoder(...)."
            )
        target = kwargs.pop("index", None)
        path = kwargs.pop("path", None)
        if (target is None) == (path is None):
            raise InvalidInputError(
                "from_texts needs where to store the texts: path='notes.db' (an index file) "
                "or index=Index(...), one of the two."
            )
        encoder = kwargs.pop("encoder", None)
        mode = kwargs.pop("mode", None)
        if kwargs:
            raise InvalidInputError(
                f"unknown option(s) {sorted(kwargs)}; from_texts takes path or index, "
                "encoder and mode."
            )
        store = cls(target if target is not None else path, encoder=encoder, mode=mode)
        store.add_texts(texts, metadatas, ids=ids)
        return store
