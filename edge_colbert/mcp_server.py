"""A Model Context Protocol server over edge-colbert indexes, for local assistants.

``pip install "edge-colbert[mcp]"``, then ``edge-colbert mcp notes.db [more.db ...]``: an MCP
server (the official ``mcp`` SDK, 2.x) on stdin/stdout with the tools

- ``search(query, k, mode, where)``: the best passages across the served indexes;
- ``get_document(id, db)``: one stored document by id;
- ``index_paths(paths, db)``: only with ``--allow-write``; adds or updates files and folders
  as ``edge-colbert index`` does.

Without ``--allow-write`` every index is opened read-only (SQLite ``mode=ro``), so nothing a
client sends can change a file; a call to ``index_paths`` is refused with a message saying
how to allow it. Every bad argument (wrong type, ``k`` out of range, unknown mode, missing id)
comes back as the protocol's tool error (``isError: true``) with one clear message; the
server keeps running. See docs/rag.md for registering it with a desktop assistant.

This module deliberately has no ``from __future__ import annotations``: the SDK reads the
tool functions' annotations (built inside :func:`build_server`) to make their JSON schemas.
"""

import argparse
import functools
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from edge_colbert._adapters import MissingExtraError, check_mode, open_index
from edge_colbert._adapters import search as search_index
from edge_colbert.errors import EdgeColbertError, InvalidInputError
from edge_colbert.validation import as_id

if TYPE_CHECKING:
    from edge_colbert.encoder import Encoder
    from edge_colbert.index import Hit, Index

__all__ = ["MAX_K", "LocalIndexes", "build_server", "register"]

logger = logging.getLogger(__name__)

SERVER_NAME = "edge-colbert"
MAX_K = 50  # results per search: enough context for an assistant, small enough to send
INSTRUCTIONS = (
    "Search the user's local documents (ColBERT retrieval over edge-colbert index files). "
    "Call search with the question in plain words; each hit has an id, a score, the passage "
    "text, its metadata (for files: path and chunk) and the index file (db) it came from. "
    "Call get_document with a hit's id for the whole stored passage."
)
WRITE_REFUSED = (
    "index_paths is switched off: this server was started read-only. To let the assistant "
    "add files, restart it as `edge-colbert mcp --allow-write DB...`."
)

_Fn = TypeVar("_Fn", bound=Callable[..., Any])


class LocalIndexes:
    """The indexes one server serves, and the tools' logic in plain Python.

    Args:
        dbs: index files; they must exist unless ``allow_write`` (then a missing one is
            created).
        encoder: the model (one for all; each index checks it is the one it was built with).
        allow_write: open the indexes writable and allow :meth:`index_paths`.

    Thread-safe as :class:`~edge_colbert.index.Index` is: the SDK runs each tool call in a
    worker thread, so searches run concurrently and writes are serialized by the index.

    Raises:
        InvalidInputError: no index, a missing file (read-only), the same file twice.
    """

    def __init__(self, dbs: Sequence[str | Path], *, encoder: "Encoder", allow_write: bool) -> None:
        if not dbs:
            raise InvalidInputError("give at least one index file to serve.")
        paths = [Path(db).expanduser().absolute() for db in dbs]
        if len(set(paths)) != len(paths):
            raise InvalidInputError("the same index file is given twice; give each once.")
        self.allow_write = allow_write
        self.encoder = encoder
        self.indexes: dict[str, Index] = {}
        try:
            for path in paths:
                self.indexes[str(path)] = open_index(
                    path, encoder=encoder, readonly=not allow_write
                )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close every index."""
        for index in self.indexes.values():
            index.close()

    def _index(self, db: str | None) -> tuple[str, "Index"]:
        """The index named ``db`` (its path as served, or its file name); the first if None."""
        if db is None:
            return next(iter(self.indexes.items()))
        for path, index in self.indexes.items():
            if db in (path, Path(path).name):
                return path, index
        raise InvalidInputError(
            f"db {db!r} is not served here; the served index files are {list(self.indexes)}."
        )

    def search(
        self,
        query: str,
        k: int = 5,
        mode: str | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """The ``k`` best hits over every served index (MaxSim scores, comparable across
        indexes of one model), best first."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidInputError(f"k must be a whole number from 1 to {MAX_K}; got {k!r}.")
        mode = check_mode(mode)
        found: list[tuple[str, Hit]] = []
        for path, index in self.indexes.items():
            found += [
                (path, hit) for hit in search_index(index, query, k=k, where=where, mode=mode)
            ]
        found.sort(key=lambda item: -item[1].score)
        return [_hit_json(hit, db) for db, hit in found[:k]]

    def get_document(self, doc_id: str, db: str | None = None) -> dict[str, Any]:
        """The stored document ``doc_id`` (from ``db``, or the first index holding it)."""
        key = as_id(doc_id, "the id")
        places = [self._index(db)] if db is not None else list(self.indexes.items())
        for path, index in places:
            hit = index.get(key)
            if hit is not None:
                return _hit_json(hit, path)
        raise InvalidInputError(
            f"no document with id {key!r} in {[path for path, _ in places]}; ids come from "
            "search results."
        )

    def index_paths(self, paths: Sequence[str], db: str | None = None) -> dict[str, Any]:
        """Add or update the files under ``paths`` (absolute) in ``db`` (default: the first
        served index), as ``edge-colbert index`` does; returns the counts."""
        if not self.allow_write:
            raise InvalidInputError(WRITE_REFUSED)
        if isinstance(paths, str) or not paths:
            raise InvalidInputError("paths must be a non-empty list of absolute paths.")
        targets = [Path(p).expanduser() for p in paths]
        relative = [str(p) for p in targets if not p.is_absolute()]
        if relative:
            raise InvalidInputError(
                f"paths must be absolute (the server's working folder is not the user's); "
                f"got {relative}."
            )
        from edge_colbert.sync import sync_files

        path, index = self._index(db)
        skipped: list[str] = []
        report = sync_files(
            index,
            self.encoder,
            targets,
            exclude=[Path(p) for p in self.indexes],
            on_skip=lambda skipped_path, reason: skipped.append(f"{skipped_path}: {reason}"),
        )
        counts = {
            name: getattr(report, name)
            for name in ("indexed", "chunks", "unchanged", "skipped", "removed")
        }
        return {"db": path, **counts, "skipped_files": skipped[:20]}


def _hit_json(hit: "Hit", db: str) -> dict[str, Any]:
    score = None if math.isnan(hit.score) else round(float(hit.score), 4)
    return {"id": hit.id, "score": score, "text": hit.text, "metadata": hit.metadata, "db": db}


def _check_sdk() -> None:
    """Raise :class:`MissingExtraError` unless the mcp SDK 2.x is importable (1.x had
    ``FastMCP``, renamed ``MCPServer`` in 2.0)."""
    try:
        import mcp.server.mcpserver  # noqa: F401
    except ModuleNotFoundError:
        raise MissingExtraError(
            "the MCP server needs the mcp SDK 2.x, which is not installed; install it with "
            'pip install -U "edge-colbert[mcp]"'
        ) from None


def build_server(indexes: LocalIndexes) -> Any:
    """An ``mcp.server.mcpserver.MCPServer`` with the tools over ``indexes``.

    Raises:
        MissingExtraError: the mcp extra (SDK 2.x) is not installed.
    """
    _check_sdk()
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from pydantic import Field

    def clear_errors(fn: _Fn) -> _Fn:
        """Our errors become the protocol's tool errors (``isError``), with their message."""

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except (EdgeColbertError, OSError) as error:
                raise ToolError(str(error)) from error

        return wrapper  # type: ignore[return-value]

    class Server(MCPServer):
        async def call_tool(self, name: str, arguments: dict[str, Any], *args: Any) -> Any:
            # Not listed when read-only, but a client may call it anyway: say why it is off.
            if name == "index_paths" and not indexes.allow_write:
                raise ToolError(WRITE_REFUSED)
            return await super().call_tool(name, arguments, *args)

    server = Server(SERVER_NAME, instructions=INSTRUCTIONS, log_level="WARNING")

    @server.tool()
    @clear_errors
    def search(
        query: Annotated[str, Field(description="what to look for, in plain words")],
        k: Annotated[int, Field(strict=True, ge=1, le=MAX_K, description="how many passages")] = 5,
        mode: Annotated[
            str | None,
            Field(description="search mode of the index (e.g. hybrid, semantic); default"),
        ] = None,
        where: Annotated[
            dict[str, Any] | None,
            Field(
                description='metadata equality filter, e.g. {"path": "/abs/notes.md"}; a list '
                "value means any of these"
            ),
        ] = None,
    ) -> list[dict[str, Any]]:
        """Search the local documents; the best passages first, each with id, score, text,
        metadata and the index file (db) it came from."""
        return indexes.search(query, k, mode, where)

    @server.tool()
    @clear_errors
    def get_document(
        id: Annotated[str, Field(description="a document id from a search hit")],
        db: Annotated[
            str | None, Field(description="the hit's db (default: every served index)")
        ] = None,
    ) -> dict[str, Any]:
        """The whole stored document with this id: text and metadata."""
        return indexes.get_document(id, db)

    if indexes.allow_write:

        @server.tool()
        @clear_errors
        def index_paths(
            paths: Annotated[
                list[str], Field(min_length=1, description="absolute paths of files or folders")
            ],
            db: Annotated[
                str | None, Field(description="the index file to add to (default: the first)")
            ] = None,
        ) -> dict[str, Any]:
            """Add or update text files and folders in an index (changed files re-encoded,
            unchanged skipped); returns the counts."""
            return indexes.index_paths(paths, db)

    return server


# ------------------------------------------------------------------------------------ CLI


def register(commands: "argparse._SubParsersAction[Any]", shared: argparse.ArgumentParser) -> None:
    """Add ``edge-colbert mcp`` (imports nothing from the mcp SDK until it runs)."""
    mcp = commands.add_parser(
        "mcp",
        parents=[shared],
        help="serve indexes to a local assistant over MCP (stdio)",
        description="Run a Model Context Protocol server on stdin/stdout with the tools "
        "search, get_document and (with --allow-write) index_paths over DB... Needs the "
        "mcp extra: pip install 'edge-colbert[mcp]'. Register it with your assistant as "
        "shown in docs/rag.md.",
    )
    mcp.add_argument("dbs", metavar="DB", nargs="+", help="index files to serve")
    mcp.add_argument(
        "--allow-write",
        action="store_true",
        help="open the indexes writable and offer the index_paths tool (default: read-only)",
    )
    mcp.set_defaults(func=_run_mcp)


def _run_mcp(args: argparse.Namespace) -> int:
    from edge_colbert.cli import _encoder, _existing_index

    if not args.allow_write:
        for db in args.dbs:
            _existing_index(db)
    _check_sdk()  # before the model is loaded
    indexes = LocalIndexes(args.dbs, encoder=_encoder(args), allow_write=args.allow_write)
    try:
        logger.info(
            "serving %s over MCP on stdio (%s)",
            ", ".join(indexes.indexes),
            "read-write" if args.allow_write else "read-only",
        )
        build_server(indexes).run("stdio")
    finally:
        indexes.close()
    return 0
