"""Model folders from elsewhere: paths stay inside, identities pin the graph, numbers are
bounded by what the graph accepts, a tokenizer panic is a model-folder error, and a huge
text costs what the window holds, not what the text holds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from tiny_model import build_tiny_model

from edge_colbert import Index
from edge_colbert.encoder import Encoder
from edge_colbert.errors import ModelFolderError, ModelMismatchError
from edge_colbert.manifest import MANIFEST_NAME, checksum_files, load_manifest

ROOT = Path(__file__).resolve().parents[1]


def _copy(tiny_model_dir: Path, tmp_path: Path, name: str = "model") -> Path:
    folder = tmp_path / name
    shutil.copytree(tiny_model_dir, folder)
    return folder


def _rewrite(folder: Path, *, rehash: bool = False, **changes: Any) -> None:
    """Set manifest fields (``...`` deletes one); ``rehash`` makes checksums match again."""
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    if rehash and data.get("files"):
        entries = checksum_files(folder, sorted(data["files"]))
        data["files"] = {k: {"sha256": v.sha256, "bytes": v.bytes} for k, v in entries.items()}
    path.write_text(json.dumps(data), encoding="utf-8")


def _encoder(folder: Path) -> Encoder:
    return Encoder(folder, providers=["CPUExecutionProvider"], threads=1)


# ------------------------------------------------------------------ paths


@pytest.mark.parametrize("where", ["absolute", "parent", "symlink"])
def test_model_file_outside_the_folder_is_refused(
    tiny_model_dir: Path, tmp_path: Path, where: str
) -> None:
    folder = _copy(tiny_model_dir, tmp_path)
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(folder / "model.onnx", outside)
    if where == "absolute":
        name = str(outside)
    elif where == "parent":
        name = "../elsewhere.onnx"
    else:
        (folder / "link.onnx").symlink_to(outside)
        name = "link.onnx"
    _rewrite(folder, model_file=name, files=...)
    with pytest.raises(ModelFolderError, match=r"outside the model folder|not a path inside"):
        load_manifest(folder)
    with pytest.raises(ModelFolderError, match=r"outside the model folder|not a path inside"):
        _encoder(folder)


def test_files_entry_outside_is_refused_without_hashing_or_echoing_its_size(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = _copy(tiny_model_dir, tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("x" * 12345)
    data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    data["files"]["../secret.txt"] = {"sha256": "0" * 64, "bytes": 1}
    (folder / MANIFEST_NAME).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelFolderError, match="outside the model folder") as caught:
        load_manifest(folder)
    assert "12345" not in str(caught.value)


def test_variant_outside_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path)
    _rewrite(folder, variants={"fp16": "/etc/hostname"})
    with pytest.raises(ModelFolderError, match="not a path inside"):
        load_manifest(folder)
    with pytest.raises(ModelFolderError, match="outside the model folder"):
        Encoder(tiny_model_dir, model_file="../../x.onnx")


# --------------------------------------------------------------- identity


def test_two_unchecked_graphs_of_one_name_never_share_an_index(tmp_path: Path) -> None:
    first = build_tiny_model(tmp_path / "a" / "same", seed=1)
    second = build_tiny_model(tmp_path / "b" / "same", seed=2)
    for folder in (first, second):
        _rewrite(folder, files=...)  # no checksums: the identity is computed at open
    one, two = _encoder(first), _encoder(second)
    assert one.manifest.fingerprint == two.manifest.fingerprint == "unchecked"
    assert one.identity != two.identity
    assert "unchecked" not in one.identity
    db = tmp_path / "x.db"
    with Index(db, encoder=one) as index:
        index.add(["the water is cold"], ids=["a"])
    with pytest.raises(ModelMismatchError):
        Index(db, encoder=two)
    # The identity computed from the files equals the one a checksummed manifest gives.
    rehashed = build_tiny_model(tmp_path / "c" / "same", seed=1)
    assert _encoder(rehashed).identity == one.identity


def test_changed_preprocessing_changes_the_identity(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path)
    before = _encoder(folder).identity
    _rewrite(folder, skiplist_ids=[])
    assert _encoder(folder).identity != before
    _rewrite(
        folder,
        skiplist_ids=json.loads((tiny_model_dir / MANIFEST_NAME).read_text())["skiplist_ids"],
        query_maxlen=20,
    )
    assert _encoder(folder).identity == before  # query settings may be tuned


def test_index_written_with_the_legacy_identity_still_opens(
    tiny_encoder: Encoder, tmp_path: Path
) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    with Index(db, encoder=tiny_encoder) as index:
        index.add(["the water is cold"], ids=["a"])
    legacy = tiny_encoder.legacy_identity
    assert legacy is not None and legacy != tiny_encoder.identity
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'model_identity'", (legacy,))
    conn.close()
    with Index(db, encoder=tiny_encoder) as index:
        assert index.search("cold water", k=1)[0].id == "a"


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"query_maxlen": 10**9}, "query_maxlen must be between 1 and 8192"),
        ({"doc_maxlen": 2**40}, "doc_maxlen must be between 1 and 8192"),
        ({"dim": 10**7}, "dim must be between 1 and 8192"),
        ({"mask_token_id": -1}, "mask_token_id must be a token id"),
        ({"pad_token_id": 2**40}, "pad_token_id must be a token id"),
        ({"skiplist_ids": [2**40]}, "skiplist_ids must be at most"),
        (
            {"query_marker": {"insert": "after_cls", "token_id": 10**12}},
            "token_id must be a token id",
        ),
    ],
)
def test_manifest_numbers_are_bounded(
    tiny_model_dir: Path, tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    folder = _copy(tiny_model_dir, tmp_path)
    _rewrite(folder, **changes)
    with pytest.raises(ModelFolderError, match=message):
        _encoder(folder)


def test_token_id_outside_the_vocabulary_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path)
    _rewrite(folder, mask_token_id=50_000)
    with pytest.raises(ModelFolderError, match="outside the tokenizer's vocabulary"):
        _encoder(folder)


def test_window_longer_than_the_graph_accepts_is_refused_at_open(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # The tiny graph's position table holds max(query_maxlen, doc_maxlen) + 8 = 32 rows.
    folder = _copy(tiny_model_dir, tmp_path)
    _rewrite(folder, doc_maxlen=4000)
    with pytest.raises(ModelFolderError, match="the graph failed"):
        _encoder(folder)


def test_query_maxlen_of_a_billion_is_refused_without_allocating(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = _copy(tiny_model_dir, tmp_path)
    _rewrite(folder, query_maxlen=10**9)
    script = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from edge_colbert.encoder import Encoder
        from edge_colbert.errors import ModelFolderError
        try:
            Encoder({str(folder)!r}, providers=["CPUExecutionProvider"])
        except ModelFolderError as error:
            print("refused:", error)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert "refused:" in result.stdout and "query_maxlen" in result.stdout, result.stderr


# ------------------------------------------------------------ tokenizer panic


def test_tokenizer_panic_is_a_model_folder_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path)
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    # Catastrophic backtracking: oniguruma gives up and the Rust side panics.
    tokenizer["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {
                "type": "Split",
                "pattern": {"Regex": "(a+)+b"},
                "behavior": "Isolated",
                "invert": False,
            },
            tokenizer["pre_tokenizer"],
        ],
    }
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    _rewrite(folder, rehash=True)
    encoder = _encoder(folder)
    with pytest.raises(ModelFolderError, match="crashed while tokenizing"):
        encoder.encode_documents(["a" * 50_000 + "c"])
    assert encoder.encode_documents(["the water is cold"])[0].shape[0] > 0


# ------------------------------------------------------------ huge texts


def _full_truncated(encoder: Encoder, text: str) -> list[int]:
    """The document ids the old code gave: tokenize all of it, then truncate."""
    m = encoder.manifest
    tokens = encoder._tokenize([text], m.document_marker, m.doc_maxlen, "document", warn=False)[0]
    return tokens.ids


@pytest.mark.parametrize(
    "text",
    [
        "the water is cold and the sun is hot " * 3000,
        "water " + " " * 200_000 + "cold sun " * 50,  # a long run of whitespace
        "x" * 300_000 + " the water",  # one giant word
        "\x00" * 100 + "the cold water " * 1000,  # characters the normalizer drops
        "the  cold\n\nwater\t" * 2000,
    ],
)
def test_cut_before_tokenizing_gives_the_same_tokens(tiny_encoder: Encoder, text: str) -> None:
    m = tiny_encoder.manifest
    cut = tiny_encoder._tokenize(
        [text], m.document_marker, m.doc_maxlen, "document", warn=False, cut=True
    )[0]
    assert cut.ids == _full_truncated(tiny_encoder, text)


def test_fifty_megabyte_text_is_added_in_bounded_memory(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    script = textwrap.dedent(
        f"""
        import resource, time
        from edge_colbert import Index
        from edge_colbert.encoder import Encoder
        encoder = Encoder({str(tiny_model_dir)!r}, providers=["CPUExecutionProvider"], threads=1)
        text = "the water is cold and the sun is hot " * (50_000_000 // 37)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        with Index({str(tmp_path / "big.db")!r}, encoder=encoder) as index:
            index.add([text], ids=["big"])
            n = index.get("big")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print("MiB", (peak - before) / 1024, "s", time.perf_counter() - start)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    fields = result.stdout.split()
    grown_mib, seconds = float(fields[1]), float(fields[3])
    assert grown_mib < 300, result.stdout
    assert seconds < 60, result.stdout
