"""The MCP server, spawned as the real ``edge-colbert mcp`` command and driven by the mcp
SDK's own ``ClientSession`` over stdio (no mock), with the bundled model."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "mcp.server.mcpserver", reason='needs the mcp extra (SDK 2.x): pip install "edge-colbert[mcp]"'
)

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from edge_colbert import Encoder, Index

ROOT = Path(__file__).resolve().parent.parent
CORPUS = {
    "wal": "Writes are SQLite transactions in WAL mode, so a crash loses at most one batch.",
    "prefilter": "A usearch centroid prefilter narrows a search to candidate documents.",
    "onnx": "The runtime encodes with onnxruntime and never imports PyTorch.",
}
QUESTION = "what happens to my data after a crash?"

Session = Callable[[ClientSession], Awaitable[None]]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mcp") / "docs.db"
    with Index(path, encoder=Encoder()) as index:
        index.add(list(CORPUS.values()), ids=list(CORPUS), metadata=[{"topic": k} for k in CORPUS])
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _with_server(args: list[str], body: Session) -> None:
    """Spawn ``python -m edge_colbert mcp ARGS`` and run ``body`` on an initialized session."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "edge_colbert", "mcp", *args],
        env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")},
        cwd=str(ROOT),
    )

    async def run() -> None:
        async with (
            stdio_client(params) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            await body(session)

    asyncio.run(asyncio.wait_for(run(), timeout=120))


def _text(result: Any) -> str:
    return "".join(getattr(part, "text", "") for part in result.content)


def _data(result: Any) -> Any:
    assert not result.is_error, _text(result)
    structured = result.structured_content
    if structured is not None:
        return structured.get("result", structured)
    return json.loads(_text(result))


def test_read_only_server_searches_and_refuses_bad_calls(db: Path) -> None:
    before = _digest(db)
    with Index(db, encoder=Encoder(), readonly=True) as index:
        expected = [(h.id, round(h.score, 4)) for h in index.search(QUESTION, 2)]

    async def body(session: ClientSession) -> None:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(tools) == {"search", "get_document"}
        assert {"query", "k", "mode", "where"} <= set(tools["search"].input_schema["properties"])

        hits = _data(await session.call_tool("search", {"query": QUESTION, "k": 2}))
        assert [(h["id"], h["score"]) for h in hits] == expected
        assert hits[0]["metadata"] == {"topic": "wal"} and hits[0]["db"] == str(db)
        assert hits[0]["text"] == CORPUS["wal"]

        only = _data(
            await session.call_tool("search", {"query": QUESTION, "where": {"topic": "onnx"}})
        )
        assert [h["id"] for h in only] == ["onnx"]

        doc = _data(await session.call_tool("get_document", {"id": "prefilter"}))
        assert doc["text"] == CORPUS["prefilter"] and doc["score"] is None

        # Bad calls: the protocol's tool error with a clear message; the server lives on.
        bad: dict[str, dict[str, Any]] = {
            "k must be|greater than or equal|valid integer": {"query": QUESTION, "k": "many"},
            "greater than or equal to 1": {"query": QUESTION, "k": 0},
            "less than or equal to 50": {"query": QUESTION, "k": 10_000},
            "query": {"k": 3},
            "valid dictionary|dict": {"query": QUESTION, "where": "topic=wal"},
            "empty": {"query": "   "},
            "no-such-mode": {"query": QUESTION, "mode": "no-such-mode"},
        }
        for pattern, arguments in bad.items():
            result = await session.call_tool("search", arguments)
            assert result.is_error, arguments
            assert any(p in _text(result) for p in pattern.split("|")), _text(result)

        missing = await session.call_tool("get_document", {"id": "nope"})
        assert missing.is_error and "no document with id 'nope'" in _text(missing)
        wrong_type = await session.call_tool("get_document", {"id": ["wal"]})
        assert wrong_type.is_error

        write = await session.call_tool("index_paths", {"paths": [str(ROOT / "docs")]})
        assert write.is_error and "--allow-write" in _text(write)

        # Concurrent calls (each runs in a worker thread of the server, on one Index).
        queries = ["crash", "prefilter", "onnxruntime", QUESTION] * 2
        results = await asyncio.gather(
            *(session.call_tool("search", {"query": q, "k": 2}) for q in queries)
        )
        with Index(db, encoder=Encoder(), readonly=True) as index:
            for query, result in zip(queries, results, strict=True):
                assert [h["id"] for h in _data(result)] == [h.id for h in index.search(query, 2)]

        # Still answering after all that.
        assert (
            _data(await session.call_tool("search", {"query": QUESTION, "k": 1}))[0]["id"] == "wal"
        )

    _with_server([str(db)], body)
    assert _digest(db) == before


def test_allow_write_indexes_paths(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "boats.md").write_text("# Boats\n\nThe ferry to the island leaves at noon.\n")
    db = tmp_path / "new.db"

    async def body(session: ClientSession) -> None:
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert tools == {"search", "get_document", "index_paths"}
        relative = await session.call_tool("index_paths", {"paths": ["notes"]})
        assert relative.is_error and "absolute" in _text(relative)
        empty = await session.call_tool("index_paths", {"paths": []})
        assert empty.is_error
        gone = await session.call_tool("index_paths", {"paths": [str(tmp_path / "missing")]})
        assert gone.is_error
        report = _data(await session.call_tool("index_paths", {"paths": [str(notes)]}))
        assert report["indexed"] == 1 and report["chunks"] >= 1 and report["db"] == str(db)
        hits = _data(await session.call_tool("search", {"query": "when does the ferry leave?"}))
        assert "ferry" in hits[0]["text"]
        assert hits[0]["metadata"]["path"] == str(notes / "boats.md")

    _with_server(["--allow-write", str(db)], body)
    assert db.exists()


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    done = subprocess.run(
        [sys.executable, "-m", "edge_colbert", "mcp", str(missing)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"edge-colbert: error: index file {missing} does not exist; create it with "
        f"`edge-colbert index {missing} PATH...`"
    ]
    assert done.stdout == "" and not missing.exists()
