"""The FastAPI application of ``edge-colbert serve``: the JSON API and the search page.

Routes are plain ``def`` functions, so FastAPI runs them in its thread pool: several searches
proceed at once on the one thread-safe :class:`~edge_colbert.index.Index`. Every error is
answered as ``{"error": "one line that says what to do"}`` with a 4xx status; the
OpenAPI page is at ``/docs``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from importlib import resources
from typing import Any, Literal

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from edge_colbert import __version__
from edge_colbert.errors import EdgeColbertError, IndexBusyError, InvalidInputError
from edge_colbert.server.service import MAX_K, SearchService, parse_where

__all__ = ["PAGE_POLICY", "create_app", "page_html"]

logger = logging.getLogger(__name__)

# The page may talk to this server only: no CDN, fonts or anything else from the internet.
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


class Span(BaseModel):
    """Characters ``text[start:end]`` of a hit."""

    start: int
    end: int


class SearchHit(BaseModel):
    """One ranked chunk."""

    rank: int = Field(description="1 for the best hit")
    id: str
    score: float | None = Field(description="the search score (MaxSim for semantic search)")
    weak: bool | None = Field(
        description="MaxSim per query token under the calibrated weak-match bar (null: no "
        "MaxSim computed, keyword search)"
    )
    text: str = Field(description="the whole chunk")
    passage: Span = Field(description="the part of text worth showing (about 240 characters)")
    highlights: list[Span] = Field(description="words of text that matched the query")
    metadata: dict[str, Any]
    path: str | None = Field(description="the file the chunk comes from, if any")
    place: str | None = Field(description="page, slide, lines or chapter in that file")
    heading: str | None = Field(description="the heading path above the chunk")
    location: str | None = Field(description="place and heading, for a person")
    file_url: str | None = Field(description="file:// link to the file")


class SearchResponse(BaseModel):
    """The answer of ``/api/search``."""

    query: str
    k: int
    mode: str
    hits: list[SearchHit]
    took_ms: float


class DocumentResponse(BaseModel):
    """One stored chunk."""

    id: str
    text: str
    metadata: dict[str, Any]
    path: str | None
    place: str | None
    heading: str | None
    location: str | None
    file_url: str | None


class ErrorResponse(BaseModel):
    """Every error the API answers."""

    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "a bad query, filter or mode"},
    422: {"model": ErrorResponse, "description": "a parameter of the wrong type or range"},
}


def page_html() -> str:
    """The search page, shipped as package data (``edge_colbert/server/static/index.html``)."""
    return (
        resources.files("edge_colbert.server")
        .joinpath("static/index.html")
        .read_text(encoding="utf-8")
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        # loc is (where, name): ("query", "k"), ("path", "doc_id").
        name = ".".join(str(part) for part in tuple(item.get("loc", ()))[1:]) or "request"
        given = f" (got {item['input']!r})" if isinstance(item.get("input"), (str, int)) else ""
        parts.append(f"{name}: {item.get('msg', 'invalid')}{given}")
    return "; ".join(parts) or "the request is not valid"


def _host_name(header: str) -> str:
    """The host of a ``Host`` header without its port (``[::1]:8765`` -> ``::1``)."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def create_app(service: SearchService, *, allowed_hosts: Collection[str] | None = None) -> FastAPI:
    """The application serving ``service``.

    Args:
        service: what answers the requests.
        allowed_hosts: the ``Host`` names requests may carry (``None``: any). A server on
            127.0.0.1 passes the loopback names, so that a web page on another site cannot
            reach it through a DNS name rebound to 127.0.0.1.
    """
    app = FastAPI(
        title="edge-colbert",
        version=__version__,
        description="Search one edge-colbert index: ColBERT late interaction, on this machine.",
    )
    page = page_html()
    hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    @app.middleware("http")
    async def check_host(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if hosts is not None and _host_name(request.headers.get("host", "")).lower() not in hosts:
            return _error(
                400, "this server answers only requests addressed to " + ", ".join(sorted(hosts))
            )
        response = await call_next(request)
        if request.url.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(InvalidInputError)
    async def bad_input(_: Request, error: InvalidInputError) -> JSONResponse:
        return _error(400, str(error))

    @app.exception_handler(IndexBusyError)
    async def busy(_: Request, error: IndexBusyError) -> JSONResponse:
        return _error(503, str(error))

    @app.exception_handler(EdgeColbertError)
    async def failed(_: Request, error: EdgeColbertError) -> JSONResponse:
        logger.warning("request failed: %s", error)
        return _error(500, str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(error))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def search_page() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/api/search", response_model=SearchResponse, responses=ERRORS)
    def search(
        q: str = Query(description="what to look for"),
        k: int = Query(10, ge=1, le=MAX_K, description="how many hits"),
        mode: Literal["hybrid", "semantic", "keyword"] | None = Query(
            None, description="ranking; /api/info lists the ones this index serves"
        ),
        where: str | None = Query(
            None,
            description='metadata filter as a JSON object, e.g. {"page": 3}; a list value '
            "means any of",
        ),
        path: str | None = Query(
            None,
            description="only files under this folder (or this file), absolute or "
            "relative to the folder the server was started in",
        ),
        highlight: bool = Query(
            True, description="find the matched words (re-encodes the hits; false is faster)"
        ),
    ) -> dict[str, Any]:
        """The ``k`` best-matching chunks, with their passages and matched words."""
        return service.search(
            q, k=k, mode=mode, where=parse_where(where), path_prefix=path, highlight=highlight
        )

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        """Figures of the index: documents (chunks), files, tokens, model, size, modes."""
        return service.info()

    @app.get(
        "/api/documents/{doc_id:path}",
        response_model=DocumentResponse,
        responses={404: {"model": ErrorResponse, "description": "no chunk has this id"}},
    )
    def document(doc_id: str) -> dict[str, Any]:
        """One chunk by id (ids hold ``/`` and ``#``: percent-encode ``#`` as ``%23``)."""
        found = service.document(doc_id)
        if found is None:
            raise HTTPException(404, f"no document has id {doc_id!r}; ids come from /api/search")
        return found

    return app
