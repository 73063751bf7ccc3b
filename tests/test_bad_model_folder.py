"""Damaged, incomplete or foreign model folders: one clear ModelFolderError, never a crash.

Each case starts from a copy of the tiny model folder and breaks one thing, the way a
half-finished copy, a bad download or a hand edit would. Through the API the Encoder raises
:class:`ModelFolderError` naming the problem; through the CLI the same case is one line on
stderr, exit 1, no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_colbert import ModelFolderError
from edge_colbert.encoder import Encoder
from edge_colbert.manifest import MANIFEST_NAME, checksum_files

ROOT = Path(__file__).resolve().parents[1]

Breaker = Callable[[Path], Path]


def _manifest(folder: Path) -> dict[str, Any]:
    """The folder's manifest as a dict."""
    data: dict[str, Any] = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    return data


def _write_manifest(folder: Path, data: dict[str, Any], *, rehash: bool = False) -> None:
    """Write a manifest; with ``rehash`` its checksums are made to match the files again."""
    if rehash:
        entries = checksum_files(folder, sorted(data["files"]))
        data["files"] = {k: {"sha256": v.sha256, "bytes": v.bytes} for k, v in entries.items()}
    (folder / MANIFEST_NAME).write_text(json.dumps(data), encoding="utf-8")


def _edit(**changes: Any) -> Breaker:
    """A breaker that overwrites manifest fields (checksums left as they were)."""

    def breaker(folder: Path) -> Path:
        data = _manifest(folder)
        data.update(changes)
        _write_manifest(folder, data)
        return folder

    return breaker


def _remove(name: str) -> Breaker:
    """A breaker that deletes one file of the folder."""

    def breaker(folder: Path) -> Path:
        (folder / name).unlink()
        return folder

    return breaker


def _truncate(name: str, *, rehash: bool) -> Breaker:
    """Cut a file in half; with ``rehash`` the manifest is updated so only the content is bad."""

    def breaker(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        if rehash:
            _write_manifest(folder, _manifest(folder), rehash=True)
        return folder

    return breaker


def _flip_byte(folder: Path) -> Path:
    """Same size, one byte changed: only the SHA-256 can notice."""
    path = folder / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return folder


def _garbage_tokenizer(folder: Path) -> Path:
    """A tokenizer.json that is JSON but not a tokenizer, with matching checksums."""
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": 42}', encoding="utf-8")
    _write_manifest(folder, _manifest(folder), rehash=True)
    return folder


def _text(content: str) -> Breaker:
    """A breaker that replaces the manifest with ``content``."""

    def breaker(folder: Path) -> Path:
        (folder / MANIFEST_NAME).write_text(content, encoding="utf-8")
        return folder

    return breaker


def _bytes_manifest(folder: Path) -> Path:
    """A manifest that is not UTF-8 text."""
    (folder / MANIFEST_NAME).write_bytes(b"\xff\xfe\x00garbage")
    return folder


def _a_file(folder: Path) -> Path:
    """The path of a file (a copy of model.onnx) passed where a folder belongs."""
    target = folder.parent / "model.onnx"
    shutil.copy(folder / "model.onnx", target)
    return target


def _missing(folder: Path) -> Path:
    """A path that does not exist."""
    return folder.parent / "no-such-model"


def _wrong_dim(folder: Path) -> Path:
    """A manifest whose ``dim`` is twice the graph's (checksums still match)."""
    data = _manifest(folder)
    data["dim"] = data["dim"] * 2
    _write_manifest(folder, data)
    return folder


def _graph_of_another_shape(folder: Path) -> Path:
    """A valid ONNX graph that is not an encoder: wrong inputs and outputs."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # loadable by the installed onnxruntime: only the shape is wrong
    onnx.save(model, str(folder / "model.onnx"))
    _write_manifest(folder, _manifest(folder), rehash=True)
    return folder


CASES: dict[str, tuple[Breaker, str]] = {
    # name: (how to break the folder, a word the message must contain)
    "missing model.onnx": (_remove("model.onnx"), "model.onnx"),
    "missing tokenizer.json": (_remove("tokenizer.json"), "tokenizer.json"),
    "missing manifest": (_remove(MANIFEST_NAME), MANIFEST_NAME),
    "truncated model.onnx": (_truncate("model.onnx", rehash=False), "truncated"),
    "truncated model.onnx, checksums updated": (_truncate("model.onnx", rehash=True), "onnx"),
    "checksum mismatch": (_flip_byte, "SHA-256"),
    "newer format": (_edit(format_version=99), "upgrade"),
    "another format": (_edit(format="something-else"), "not an edge-colbert manifest"),
    "invalid JSON": (_text('{"format": "edge-colbert-model", '), "JSON"),
    "manifest not UTF-8": (_bytes_manifest, "JSON"),
    "manifest is a list": (_text("[1, 2, 3]"), "JSON object"),
    "field of the wrong type": (_edit(dim="64"), "dim"),
    "negative dim": (_edit(dim=-1), "dim"),
    "missing field": (_edit(mask_token_id=None), "mask_token_id"),
    "unknown marker mode": (_edit(query_marker={"insert": "sideways"}), "sideways"),
    "bad files entry": (_edit(files={"model.onnx": "not an object"}), "checksum"),
    "bad skiplist": (_edit(skiplist_ids=["comma"]), "skiplist_ids"),
    "bad native_dim": (_edit(native_dim="wide"), "native_dim"),
    "bad marker token id": (
        _edit(query_marker={"insert": "after_cls", "token_id": "one"}),
        "query_marker",
    ),
    "languages not a list": (_edit(languages=5), "languages"),
    "variants not an object": (_edit(variants=["model.fp16.onnx"]), "variants"),
    "damaged tokenizer.json": (_garbage_tokenizer, "tokenizer"),
    "graph of another shape": (_graph_of_another_shape, "input"),
    "manifest dim differs from the graph": (_wrong_dim, "dim"),
    "not a folder": (_a_file, "not a folder"),
    "does not exist": (_missing, "does not exist"),
}


@pytest.fixture
def broken(request: pytest.FixtureRequest, tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the tiny model folder, broken as the test's case says."""
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    breaker, _ = CASES[request.param]
    return breaker(folder)


@pytest.mark.parametrize("broken", list(CASES), indirect=True)
def test_encoder_refuses_with_model_folder_error(
    broken: Path, request: pytest.FixtureRequest
) -> None:
    case = request.node.callspec.params["broken"]
    with pytest.raises(ModelFolderError) as caught:
        Encoder(broken, providers=["CPUExecutionProvider"])
    message = str(caught.value)
    assert CASES[case][1].lower() in message.lower(), message
    assert "\n" not in message.strip(), "the message must be one line"


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``edge-colbert ARGS`` from this checkout in a subprocess."""
    code = "import sys; from edge_colbert.cli import main; sys.exit(main())"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


CLI_CASES = ["truncated model.onnx", "newer format", "invalid JSON", "not a folder"]


@pytest.mark.parametrize("broken", CLI_CASES, indirect=True)
def test_cli_says_one_line_and_exits_1(broken: Path, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("a short note about rivers and mountains", encoding="utf-8")
    db = tmp_path / "notes.db"
    result = _run_cli("--model", str(broken), "index", str(db), str(note))
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert not db.exists() or db.stat().st_size == 0 or _no_documents(db)


def _no_documents(db: Path) -> bool:
    """Whether an index file holds no document (the CLI may create it before failing)."""
    con = sqlite3.connect(db)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        return (
            "documents" not in tables
            or con.execute("SELECT count(*) FROM documents").fetchone()[0] == 0
        )
    finally:
        con.close()
