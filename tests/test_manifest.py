"""A model folder is read only when it is complete, intact and of a format this version reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tiny_model import build_tiny_model

from edge_colbert.errors import ModelFolderError
from edge_colbert.manifest import MANIFEST_NAME, Manifest, Marker, load_manifest


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A fresh tiny model folder a test may damage."""
    return build_tiny_model(tmp_path / "model")


def _edit(folder: Path, **changes: Any) -> None:
    """Rewrite fields of the manifest (a value of ``...`` deletes the field)."""
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    path.write_text(json.dumps(data), encoding="utf-8")


def test_round_trip_keeps_every_field(folder: Path) -> None:
    manifest = load_manifest(folder)
    assert isinstance(manifest, Manifest)
    assert manifest.query_marker == Marker("after_cls", "[unused0]", 1)
    assert manifest.document_marker == Marker("after_cls", "[unused1]", 2)
    assert (manifest.dim, manifest.query_maxlen, manifest.doc_maxlen) == (16, 16, 24)
    assert manifest.do_query_expansion and not manifest.attend_to_expansion_tokens
    assert len(manifest.skiplist_ids) == 32  # ASCII punctuation
    assert set(manifest.files) == {"model.onnx", "tokenizer.json"}
    assert manifest.identity.startswith(
        f"tiny-colbert (16-d, {manifest.files['model.onnx'].sha256[:12]}, "
    )
    data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert manifest.to_json() == data


@pytest.mark.parametrize(
    "field", ["dim", "query_maxlen", "mask_token_id", "skiplist_ids", "do_query_expansion", "name"]
)
def test_missing_field_is_named(folder: Path, field: str) -> None:
    _edit(folder, **{field: ...})
    with pytest.raises(ModelFolderError, match=f"lacks the field '{field}'"):
        load_manifest(folder)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dim": "64"}, "'dim' must be int"),
        ({"dim": True}, "'dim' must be int"),
        ({"doc_maxlen": 0}, "doc_maxlen must be between 1 and 8192"),
        ({"skiplist_ids": ["."]}, "skiplist_ids must be at most .* token ids"),
        ({"files": {"model.onnx": {"sha256": "x"}}}, "checksum entry of 'model.onnx'"),
        ({"quantization": "int3"}, "quantization 'int3' is unknown"),
        ({"query_marker": {"insert": "before_sep", "token_id": 1}}, "before_sep"),
        ({"query_marker": {"insert": "after_cls"}}, "needs its token_id"),
        ({"format": "something-else"}, "not an edge-colbert manifest"),
    ],
)
def test_malformed_fields_are_refused(folder: Path, changes: dict[str, Any], message: str) -> None:
    _edit(folder, **changes)
    with pytest.raises(ModelFolderError, match=message):
        load_manifest(folder)


def test_newer_format_version_asks_for_an_upgrade(folder: Path) -> None:
    _edit(folder, format_version=99)
    with pytest.raises(ModelFolderError, match=r"format version 99.*upgrade edge-colbert"):
        load_manifest(folder)


def test_changed_model_file_fails_the_checksum(folder: Path) -> None:
    data = bytearray((folder / "model.onnx").read_bytes())
    data[100] ^= 0x01
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match="SHA-256"):
        load_manifest(folder)
    assert load_manifest(folder, verify_checksums=False).name == "tiny-colbert"


def test_truncated_model_file_reports_both_sizes(folder: Path) -> None:
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFolderError, match=rf"{len(data) // 2} bytes.*records {len(data)}"):
        load_manifest(folder)


def test_missing_tokenizer_is_named(folder: Path) -> None:
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelFolderError, match=r"lacks tokenizer\.json"):
        load_manifest(folder)


def test_missing_graph_is_named(folder: Path) -> None:
    (folder / "model.onnx").unlink()
    with pytest.raises(ModelFolderError, match=r"lacks model\.onnx"):
        load_manifest(folder)


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="does not exist or is not a folder"):
        load_manifest(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(ModelFolderError, match="not a folder"):
        load_manifest(tmp_path / "file.txt")


def test_folder_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match=r"no edge_colbert\.json"):
        load_manifest(tmp_path)


def test_manifest_that_is_not_json(folder: Path) -> None:
    (folder / MANIFEST_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelFolderError, match="not valid JSON"):
        load_manifest(folder)
    (folder / MANIFEST_NAME).write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ModelFolderError, match="JSON object"):
        load_manifest(folder)
