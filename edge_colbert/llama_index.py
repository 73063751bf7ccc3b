"""LlamaIndex adapters: a retriever over an edge-colbert :class:`Index` and a MaxSim reranker.

``pip install "edge-colbert[llama-index]"`` (llama-index-core only; no PyTorch).

>>> from llama_index.core.query_engine import RetrieverQueryEngine    # doctest: +SKIP
>>> from edge_colbert.llama_index import EdgeColbertRetriever          # doctest: +SKIP
>>> retriever = EdgeColbertRetriever("notes.db", k=4)                  # doctest: +SKIP
>>> engine = RetrieverQueryEngine.from_args(retriever, llm=llm)        # doctest: +SKIP

Both call the public :class:`~edge_colbert.index.Index` (or
:class:`~edge_colbert.encoder.Encoder`) API only and are as thread-safe as it is; their async
methods run the work in a worker thread (``asyncio.to_thread``) so the event loop is not
blocked. Bad input is an :class:`~edge_colbert.errors.InvalidInputError` (a ``ValueError``)
raised before anything is searched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_colbert._adapters import check_mode, open_index, require, search
from edge_colbert.errors import InvalidInputError
from edge_colbert.validation import check_k

require("llama_index.core", "llama-index")

from llama_index.core.base.base_retriever import BaseRetriever  # noqa: E402
from llama_index.core.callbacks import CallbackManager  # noqa: E402
from llama_index.core.constants import DEFAULT_SIMILARITY_TOP_K  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402
from pydantic import Field, PrivateAttr, model_validator  # noqa: E402

if TYPE_CHECKING:
    from edge_colbert.encoder import Encoder
    from edge_colbert.index import Hit, Index

__all__ = ["EdgeColbertReranker", "EdgeColbertRetriever"]


class EdgeColbertRetriever(BaseRetriever):
    """A LlamaIndex retriever over an edge-colbert index, returning ``NodeWithScore``.

    Args:
        index: an :class:`~edge_colbert.index.Index`, or the path of an index file (opened
            read-only; it must exist).
        encoder: the model for a path (default: the bundled one); ignored for an Index.
        k: nodes per query (default LlamaIndex's ``DEFAULT_SIMILARITY_TOP_K``, 2).
        where: metadata equality filter, as in :meth:`Index.search`.
        mode: search mode, as in :meth:`Index.search` (passed on only when set).
        llm_metadata_keys: the metadata keys LlamaIndex may show the LLM beside each text
            (e.g. ``["path", "heading"]``); None shows all, LlamaIndex's default. File chunks
            carry sizes, times and digests that only fill the prompt.

    Each node is a ``TextNode`` whose ``id_`` is the document id, ``text`` its text and
    ``metadata`` its stored metadata; the score is MaxSim. Thread-safe as the index is.

    Raises:
        InvalidInputError: a bad ``k``, ``where`` or ``mode`` (here, or from the index when
            a query runs), a missing index file.
    """

    def __init__(
        self,
        index: Index | str | Path,
        *,
        encoder: Encoder | None = None,
        k: int = DEFAULT_SIMILARITY_TOP_K,
        where: Mapping[str, Any] | None = None,
        mode: str | None = None,
        llm_metadata_keys: Sequence[str] | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        self.k = check_k(k)
        if isinstance(llm_metadata_keys, str) or not (
            llm_metadata_keys is None
            or (
                isinstance(llm_metadata_keys, Sequence)
                and all(isinstance(key, str) for key in llm_metadata_keys)
            )
        ):
            raise InvalidInputError(
                f"llm_metadata_keys must be a list of metadata keys or None; got "
                f"{llm_metadata_keys!r}."
            )
        self.llm_metadata_keys = None if llm_metadata_keys is None else set(llm_metadata_keys)
        if where is not None and not isinstance(where, Mapping):
            raise InvalidInputError(
                f"where must be a dict of metadata key -> value; got {type(where).__name__}."
            )
        self.where = dict(where) if where is not None else None
        self.mode = check_mode(mode)
        self.index = open_index(index, encoder=encoder, readonly=True)
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """The top-k nodes for the query string (its embedding, if any, is not used)."""
        hits = search(
            self.index, query_bundle.query_str, k=self.k, where=self.where, mode=self.mode
        )
        return [NodeWithScore(node=self._node(hit), score=hit.score) for hit in hits]

    def _node(self, hit: Hit) -> TextNode:
        hidden = (
            []
            if self.llm_metadata_keys is None
            else [key for key in hit.metadata if key not in self.llm_metadata_keys]
        )
        return TextNode(
            id_=hit.id,
            text=hit.text,
            metadata=dict(hit.metadata),
            excluded_llm_metadata_keys=hidden,
        )

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """:meth:`_retrieve` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self._retrieve, query_bundle)


class EdgeColbertReranker(BaseNodePostprocessor):
    """Re-scores the nodes it is given by full-precision MaxSim with the query, best first.

    Give ``index=`` (an :class:`~edge_colbert.index.Index`, or a path opened with
    ``encoder=`` or the bundled model; scores come from :meth:`Index.rerank`) or only
    ``encoder=`` (an :class:`~edge_colbert.encoder.Encoder`, no index needed). ``top_n`` keeps
    only the best n (default: all). Each node's text is ``node.get_content()``; a node with
    no text cannot be scored and is kept after the scored ones, with score None. Nothing is
    stored. Thread-safe as the index or encoder is.
    """

    top_n: int | None = Field(default=None, description="keep the best n nodes (None: all)")
    index: Any = Field(default=None, description="an edge_colbert Index, or its path")
    encoder: Any = Field(default=None, description="an edge_colbert Encoder")

    _index: Index | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("index") is None and data.get("encoder") is None:
            raise InvalidInputError(
                "EdgeColbertReranker needs index=Index(...) (or an index path) or "
                "encoder=Encoder(...) to score with."
            )
        top_n = data.get("top_n")
        if top_n is not None:
            check_k(top_n)
        return data

    @classmethod
    def class_name(cls) -> str:
        return "EdgeColbertReranker"

    def model_post_init(self, context: Any, /) -> None:
        """Open a path given as ``index`` (read-only: reranking stores nothing)."""
        if self.index is not None:
            self._index = open_index(self.index, encoder=self.encoder, readonly=True)
            self.index = self._index

    def _scores(self, query: str, texts: Sequence[str]) -> list[tuple[int, float]]:
        """``(position, score)`` best first, ties by position (as :meth:`Index.rerank`)."""
        if self._index is not None:
            return self._index.rerank(query, texts)
        from edge_colbert.maxsim import maxsim_scores
        from edge_colbert.validation import check_text

        check_text(query, "the query")
        clean = [check_text(text, f"text at position {i}") for i, text in enumerate(texts)]
        if not clean:
            return []
        encoder: Encoder = self.encoder
        scores = maxsim_scores(encoder.encode_queries([query])[0], encoder.encode_documents(clean))
        order = sorted(range(len(clean)), key=lambda i: (-float(scores[i]), i))
        return [(i, float(scores[i])) for i in order]

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        """The nodes re-scored and re-ordered by MaxSim (the best ``top_n``)."""
        if query_bundle is None:
            raise InvalidInputError(
                "EdgeColbertReranker needs the query: call postprocess_nodes(nodes, "
                "query_str=...) or use it inside a query engine."
            )
        scorable = [i for i, n in enumerate(nodes) if n.node.get_content().strip()]
        ranked = self._scores(
            query_bundle.query_str, [nodes[i].node.get_content() for i in scorable]
        )
        out = [NodeWithScore(node=nodes[scorable[pos]].node, score=score) for pos, score in ranked]
        kept = set(scorable)
        out += [
            NodeWithScore(node=n.node, score=None) for i, n in enumerate(nodes) if i not in kept
        ]
        return out if self.top_n is None else out[: self.top_n]

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        """:meth:`_postprocess_nodes` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self._postprocess_nodes, nodes, query_bundle)
