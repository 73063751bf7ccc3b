"""edge_colbert.qdrant: push an index into Qdrant (local mode) and search it there.

Qdrant runs in this process through qdrant-client's local mode (``QdrantClient(":memory:")``
or ``path=``), the same client API a server URL uses; no Qdrant server runs on the test
machines, so the URL path is tested only for its "cannot reach" error.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip(
    "qdrant_client", reason='needs the qdrant extra: pip install "edge-colbert[qdrant]"'
)

from qdrant_client import QdrantClient, models

from edge_colbert import Encoder, Index
from edge_colbert.errors import InvalidInputError, ModelMismatchError
from edge_colbert.qdrant import (
    VECTOR_NAME,
    CollectionMismatchError,
    QdrantUnavailableError,
    point_id,
    push,
    search,
)

SCIFACT = Path("/work/shared/data/scifact-dev")
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "river",
    "stone",
    "cloud",
    "paper",
    "light",
    "music",
    "garden",
    "window",
]


def _texts(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) for _ in range(count)]


@pytest.fixture
def index(tmp_path: Path, tiny_encoder: Encoder) -> Index:
    """A small index with typed metadata: ints, floats, strings, bools, nulls, dotted keys."""
    idx = Index(tmp_path / "docs.db", encoder=tiny_encoder)
    texts = _texts(40, seed=1)
    metadata: list[dict[str, Any]] = [
        {
            "n": i % 3,
            "tag": "odd" if i % 2 else "even",
            "flag": i % 4 == 0,
            "score": 0.5 * (i % 2),
            "maybe": None if i % 5 == 0 else "x",
            "a.b": "dotted" if i < 10 else "plain",
            "label": "1" if i % 3 == 1 else "other",
        }
        for i in range(len(texts))
    ]
    idx.add(texts, ids=[f"d{i}" for i in range(len(texts))], metadata=metadata)
    return idx


def _exact(index: Index, query: str, k: int, where: dict[str, Any] | None = None) -> list[Any]:
    """The index's exhaustive MaxSim top-k (semantic only: no full-text fusion)."""
    vectors = index.encoder.encode_queries([query])[0]
    return index.search_vectors(vectors, k, where=where, exhaustive=True)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _collection_state(client: QdrantClient, name: str) -> dict[str, tuple[str, Any, Any]]:
    """id -> (text, metadata, vectors as nested lists) of every point."""
    state: dict[str, tuple[str, Any, Any]] = {}
    offset: Any = None
    while True:
        records, offset = client.scroll(
            name, limit=256, offset=offset, with_payload=True, with_vectors=True
        )
        for record in records:
            payload = record.payload or {}
            assert str(record.id) == point_id(payload["id"])
            vectors = record.vector[VECTOR_NAME] if isinstance(record.vector, dict) else None
            state[payload["id"]] = (payload["text"], payload["metadata"], vectors)
        if offset is None:
            return state


class _Recording(QdrantClient):
    """A real local-mode client that records the keyword arguments of some calls (a spy:
    every call still runs in Qdrant's local mode)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def retrieve(self, collection_name: str, **kwargs: Any) -> Any:  # type: ignore[override]
        self.calls.append(("retrieve", kwargs))
        return super().retrieve(collection_name, **kwargs)

    def scroll(self, collection_name: str, **kwargs: Any) -> Any:  # type: ignore[override]
        self.calls.append(("scroll", kwargs))
        return super().scroll(collection_name, **kwargs)

    def create_payload_index(  # type: ignore[override]
        self, collection_name: str, field_name: str, **kwargs: Any
    ) -> Any:
        self.calls.append(("create_payload_index", {"field_name": field_name, **kwargs}))
        return super().create_payload_index(collection_name, field_name, **kwargs)


def _assert_equal_to_file(client: QdrantClient, name: str, idx: Index) -> None:
    state = _collection_state(client, name)
    assert sorted(state) == sorted(idx)
    for doc_id, (text, metadata, vectors) in state.items():
        stored = idx.store.get(doc_id)
        assert stored is not None
        assert text == stored.text
        assert metadata == stored.metadata
        floats = idx.store.vectors([stored.rowid]).floats()  # int8 or residual codes
        np.testing.assert_allclose(np.asarray(vectors), floats, atol=1e-6)


def test_search_matches_the_index_with_filters(index: Index, tiny_encoder: Encoder) -> None:
    client = QdrantClient(":memory:")
    report = push(index, client, "docs")
    assert (report.upserted, report.deleted, report.unchanged) == (40, 0, 0)
    filters: list[dict[str, Any] | None] = [
        None,
        {"tag": "odd"},
        {"n": [0, 2]},
        {"n": 1, "tag": "odd"},
        {"flag": True},
        {"score": 0.5},
        {"score": 0},  # 0 matches 0.0 as the index's JSON comparison does
        {"maybe": None},
        {"a.b": "dotted"},
        {"label": "1"},  # the string "1", never the number 1
        {"n": "1"},  # no document holds the string "1" under n
        {"tag": []},  # any of nothing
    ]
    for where in filters:
        for query in ("river stone", "music garden light"):
            want = _exact(index, query, 7, where)
            got = search(client, "docs", tiny_encoder, query, k=7, where=where)
            assert [h.id for h in got] == [h.id for h in want], where
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=1e-5)
            assert [(h.text, h.metadata) for h in got] == [(h.text, h.metadata) for h in want]


def test_second_push_sends_only_changes_and_mirrors_the_file(
    index: Index, tiny_encoder: Encoder
) -> None:
    client = QdrantClient(":memory:")
    push(index, client, "docs", batch_size=7)
    again = push(index, client, "docs")
    assert (again.upserted, again.deleted, again.unchanged) == (0, 0, 40)

    index.add(_texts(5, seed=2), ids=[f"new{i}" for i in range(5)])  # added
    index.add(["stone paper cloud"], ids=["d3"], metadata=[{"tag": "changed"}])  # upserted
    index.delete(["d0", "d1", "d2"])  # deleted
    report = push(index, client, "docs", batch_size=4)
    assert (report.upserted, report.deleted, report.unchanged) == (6, 3, 36)
    _assert_equal_to_file(client, "docs", index)
    hits = search(client, "docs", tiny_encoder, "stone paper cloud", k=3, where={"tag": "changed"})
    assert [h.id for h in hits] == ["d3"]


@pytest.mark.parametrize("codec", ["residual4", "residual2"])
def test_a_residual_file_is_pushed_decoded_and_again_after_retraining(
    tmp_path: Path, tiny_encoder: Encoder, codec: str
) -> None:
    """Residual records are sent decoded (the same floats the file's search scores), and a
    retraining, which re-codes every document under the same rowids, is noticed: the next
    push compares digests and re-sends the re-coded documents."""
    texts = _texts(200, seed=5)
    client = QdrantClient(":memory:")
    with Index(tmp_path / "r.db", encoder=tiny_encoder, codec=codec, train_tokens=300) as idx:
        idx.add(texts[:40], ids=[f"d{i}" for i in range(40)])
        version = idx.info()["centroid_version"]
        assert version >= 1 and idx.store.vectors([1]).codec is not None
        assert push(idx, client, "r").upserted == 40
        _assert_equal_to_file(client, "r", idx)
        for query in ("river stone", "music garden light"):
            want = _exact(idx, query, 7)
            got = search(client, "r", tiny_encoder, query, k=7)
            assert [h.id for h in got] == [h.id for h in want]
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=1e-5)
        idx.add(texts[40:], ids=[f"d{i}" for i in range(40, 200)])
        assert idx.info()["centroid_version"] > version  # retrained: every document re-coded
        report = push(idx, client, "r")
        assert report.upserted + report.unchanged == 200 and report.upserted > 160
        _assert_equal_to_file(client, "r", idx)
        assert push(idx, client, "r").unchanged == 200


def test_an_interrupted_replace_resumes_by_digest(index: Index, tiny_encoder: Encoder) -> None:
    """Another file's documents can share the old points' rowids: a replace that is cut off
    must not resume by rowid (it would keep the old points of the same rowids)."""
    client = QdrantClient(":memory:")
    push(index, client, "docs")
    other = Index(index.path.parent / "other.db", encoder=tiny_encoder)
    # the same ids, other texts, the same rowids 1..40 as the first file
    other.add(_texts(40, seed=7), ids=[f"d{i}" for i in range(40)])

    def stop(done: int, total: int) -> None:
        if done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        push(other, client, "docs", replace=True, batch_size=4, progress=stop)
    report = push(other, client, "docs")  # the same source as the cut-off push: no replace
    assert report.upserted == 40 - 8
    _assert_equal_to_file(client, "docs", other)
    assert push(other, client, "docs").unchanged == 40


def test_interrupted_push_resumes(index: Index) -> None:
    client = QdrantClient(":memory:")

    def stop_after_two(sent: int, total: int) -> None:
        if sent >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        push(index, client, "docs", batch_size=5, progress=stop_after_two)
    assert client.count("docs").count == 10
    report = push(index, client, "docs", batch_size=5)
    assert (report.upserted, report.unchanged) == (30, 10)
    _assert_equal_to_file(client, "docs", index)


def test_payload_indexes_are_requested_in_every_mode(index: Index) -> None:
    """Local mode accepts create_payload_index (and keeps no index), so the calls a server
    gets are made here too; each one's arguments must build the client's own REST request
    body and gRPC field type, which is what the URL path sends."""
    from qdrant_client.conversions.conversion import RestToGrpc

    client = _Recording(":memory:")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # local mode's "no effect" warning is silenced
        push(index, client, "docs")
    made = {
        kw["field_name"]: kw["field_schema"]
        for name, kw in client.calls
        if name == "create_payload_index"
    }
    kinds = models.PayloadSchemaType
    assert made == {
        "metadata.n": kinds.INTEGER,
        "metadata.tag": kinds.KEYWORD,
        "metadata.flag": kinds.BOOL,
        "metadata.score": kinds.FLOAT,
        'metadata."a.b"': kinds.KEYWORD,
        "metadata.label": kinds.KEYWORD,
    }  # "maybe" mixes null and strings: no index
    for field, schema in made.items():
        body = models.CreateFieldIndex(field_name=field, field_schema=schema)
        assert body.model_dump(mode="json")["field_schema"] == schema.value
        RestToGrpc.convert_payload_schema_type(schema)
    assert all(kw["wait"] is True for name, kw in client.calls if name == "create_payload_index")

    client.calls.clear()
    push(index, client, "plain", index_metadata=False)
    assert not [name for name, _ in client.calls if name == "create_payload_index"]


def test_a_copied_file_is_refused_then_compared_by_digest_with_replace(
    index: Index, tmp_path: Path
) -> None:
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    push(index, client, "docs")
    copy = tmp_path / "copy.db"
    index.close()
    shutil.copy(index.path, copy)
    with Index(copy, readonly=True) as reopened:
        with pytest.raises(CollectionMismatchError, match=r"40 points written from .*docs\.db"):
            push(reopened, client, "docs")
        report = push(reopened, client, "docs", replace=True)
        assert (report.upserted, report.unchanged, report.deleted) == (0, 40, 0)
        # the copy is now the collection's source: its next push compares rowids
        assert push(reopened, client, "docs").unchanged == 40
    client.close()


def test_another_file_is_refused_and_a_moved_file_is_the_same(
    index: Index, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    """A collection mirrors one file: pushing a second shard into it would delete the first
    shard's points, so it is refused with both files named and nothing changed."""
    client = QdrantClient(":memory:")
    push(index, client, "docs")
    other = Index(tmp_path / "shard2.db", encoder=tiny_encoder)
    other.add(_texts(3, seed=9), ids=["s0", "s1", "s2"])
    with pytest.raises(
        CollectionMismatchError,
        match=r"holds 40 points written from the index file .*docs\.db .*not from the "
        r"index file .*shard2\.db.*--replace",
    ):
        push(other, client, "docs")
    assert client.count("docs").count == 40
    _assert_equal_to_file(client, "docs", index)

    index.close()
    moved = tmp_path / "moved" / "docs.db"
    moved.parent.mkdir()
    index.path.rename(moved)  # same inode: the same file, rowids still trusted
    with Index(moved, readonly=True) as reopened:
        report = push(reopened, client, "docs")
        assert (report.upserted, report.unchanged, report.deleted) == (0, 40, 0)
    report = push(other, client, "docs", replace=True)
    assert (report.upserted, report.unchanged, report.deleted) == (3, 0, 40)
    _assert_equal_to_file(client, "docs", other)


def test_push_pages_through_the_file_and_the_collection(
    index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With pages of 7 documents and 5 points, no request carries more than one page and a
    push after adds, upserts and deletes spread over the pages still mirrors the file."""
    from edge_colbert import qdrant

    monkeypatch.setattr(qdrant, "COMPARE_PAGE", 7)
    monkeypatch.setattr(qdrant, "SCROLL_PAGE", 5)
    client = _Recording(":memory:")
    first = push(index, client, "docs", batch_size=3)
    assert (first.upserted, first.unchanged) == (40, 0)
    index.add(_texts(9, seed=3), ids=[f"new{i}" for i in range(9)])
    index.add(["garden window"] * 3, ids=["d5", "d17", "d33"])
    index.delete([f"d{i}" for i in range(0, 40, 4)])
    client.calls.clear()
    report = push(index, client, "docs", batch_size=3)
    retrieved = [len(kw["ids"]) for name, kw in client.calls if name == "retrieve"]
    scrolled = [kw["limit"] for name, kw in client.calls if name == "scroll"]
    assert (report.upserted, report.deleted, report.unchanged) == (12, 10, 27)
    assert max(retrieved) <= 7 and sum(retrieved) == len(index) == 39
    assert len(scrolled) >= 8 and set(scrolled) == {5}  # 49 points before the deletions
    _assert_equal_to_file(client, "docs", index)

    # the same paging when rowids are not trusted: forget the source, compare digests
    config = client.get_collection("docs").config.metadata or {}
    state = {k: v for k, v in config["edge_colbert"].items() if k != "source"}
    client.update_collection("docs", metadata={"edge_colbert": state})
    with pytest.raises(CollectionMismatchError, match="recorded no source"):
        push(index, client, "docs")
    client.calls.clear()
    again = push(index, client, "docs", replace=True)
    assert (again.upserted, again.deleted, again.unchanged) == (0, 0, 39)
    assert max(len(kw["ids"]) for name, kw in client.calls if name == "retrieve") <= 7


def test_the_index_file_is_only_read(index: Index, tmp_path: Path) -> None:
    path = index.path
    index.close()
    before = _digest(path)
    client = QdrantClient(":memory:")
    push(path, client, "docs")
    push(str(path), client, "docs")
    assert _digest(path) == before


def test_int8_collection_uses_scalar_quantization(index: Index, tiny_encoder: Encoder) -> None:
    client = QdrantClient(":memory:")
    push(index, client, "q8", vectors="int8")
    params = client.get_collection("q8").config.params.vectors[VECTOR_NAME]  # type: ignore[index]
    quantization = params.quantization_config
    assert isinstance(quantization, models.ScalarQuantization)
    assert quantization.scalar.type == models.ScalarType.INT8
    # local mode scores the float32 originals, so the ranking is the index's
    want = _exact(index, "river stone", 5)
    assert [h.id for h in search(client, "q8", tiny_encoder, "river stone", k=5)] == [
        h.id for h in want
    ]
    with pytest.raises(CollectionMismatchError, match="stores int8 vectors but float32"):
        push(index, client, "q8", vectors="float32")


# ------------------------------------------------------------------------------ bad input


def test_collection_of_another_size_or_comparator_is_refused(index: Index) -> None:
    client = QdrantClient(":memory:")
    multi = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
    client.create_collection(
        "wide",
        vectors_config={
            VECTOR_NAME: models.VectorParams(
                size=128, distance=models.Distance.DOT, multivector_config=multi
            )
        },
    )
    client.create_collection(
        "single",
        vectors_config={VECTOR_NAME: models.VectorParams(size=16, distance=models.Distance.DOT)},
    )
    client.create_collection(
        "unnamed", vectors_config=models.VectorParams(size=16, distance=models.Distance.DOT)
    )
    client.create_collection(
        "euclid",
        vectors_config={
            VECTOR_NAME: models.VectorParams(
                size=index.store.dim, distance=models.Distance.EUCLID, multivector_config=multi
            )
        },
    )
    before = _digest(index.path)
    dim = index.store.dim
    with pytest.raises(CollectionMismatchError, match=rf"128-d .* needs .*{dim}-d"):
        push(index, client, "wide")
    with pytest.raises(CollectionMismatchError, match=r"comparator none.*max_sim"):
        push(index, client, "single")
    with pytest.raises(CollectionMismatchError, match="unnamed"):
        push(index, client, "unnamed")
    with pytest.raises(CollectionMismatchError, match=r"by Euclid, but MaxSim needs Dot"):
        push(index, client, "euclid")
    assert _digest(index.path) == before
    assert client.count("wide").count == 0


def test_an_empty_collection_made_by_hand_is_filled(index: Index, tiny_encoder: Encoder) -> None:
    """A collection created beforehand with the right vectors (and any HNSW, sharding or
    replication settings a server needs) is taken as it is."""
    client = QdrantClient(":memory:")
    multi = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
    client.create_collection(
        "mine",
        vectors_config={
            VECTOR_NAME: models.VectorParams(
                size=index.store.dim,
                distance=models.Distance.DOT,
                multivector_config=multi,
                hnsw_config=models.HnswConfigDiff(m=0),
            )
        },
    )
    assert push(index, client, "mine").upserted == 40
    want = [h.id for h in _exact(index, "cloud paper", 5)]
    assert [h.id for h in search(client, "mine", tiny_encoder, "cloud paper", k=5)] == want


def test_foreign_points_and_another_model_are_refused(
    index: Index, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    client = QdrantClient(":memory:")
    multi = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
    dim = index.store.dim
    client.create_collection(
        "theirs",
        vectors_config={
            VECTOR_NAME: models.VectorParams(
                size=dim, distance=models.Distance.DOT, multivector_config=multi
            )
        },
    )
    client.upsert(
        "theirs", [models.PointStruct(id=1, vector={VECTOR_NAME: [[0.1] * dim]}, payload={})]
    )
    with pytest.raises(CollectionMismatchError, match="1 points that edge-colbert did not push"):
        push(index, client, "theirs")
    assert client.count("theirs").count == 1

    push(index, client, "docs")
    client.update_collection("docs", metadata={"edge_colbert": {"model": "another-model"}})
    with pytest.raises(ModelMismatchError, match="another-model"):
        search(client, "docs", tiny_encoder, "river")
    with pytest.raises(ModelMismatchError, match="another-model"):
        push(index, client, "docs")


def test_unreachable_server_is_one_clear_error(index: Index) -> None:
    client = QdrantClient(url="http://127.0.0.1:9", timeout=2, check_compatibility=False)
    before = _digest(index.path)
    with pytest.raises(
        QdrantUnavailableError, match=r"cannot reach Qdrant at http://127\.0\.0\.1:9"
    ):
        push(index, client, "docs")
    assert _digest(index.path) == before


def test_bad_arguments(index: Index, tiny_encoder: Encoder) -> None:
    client = QdrantClient(":memory:")
    with pytest.raises(InvalidInputError, match="batch_size"):
        push(index, client, "docs", batch_size=0)
    with pytest.raises(InvalidInputError, match="vectors must be"):
        push(index, client, "docs", vectors="int4")  # type: ignore[arg-type]
    push(index, client, "docs")
    with pytest.raises(InvalidInputError, match="double quote"):
        search(client, "docs", tiny_encoder, "river", where={'a"b': 1})
    with pytest.raises(InvalidInputError, match="k must be"):
        search(client, "docs", tiny_encoder, "river", k=0)
    with pytest.raises(CollectionMismatchError, match="no collection 'nope'"):
        search(client, "docs" if False else "nope", tiny_encoder, "river")


def test_missing_extra_names_the_install(monkeypatch: pytest.MonkeyPatch, index: Index) -> None:
    from edge_colbert._adapters import MissingExtraError

    monkeypatch.setitem(sys.modules, "qdrant_client", None)
    with pytest.raises(MissingExtraError, match=r'pip install "edge-colbert\[qdrant\]"'):
        push(index, object(), "docs")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_colbert", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_push_local_folder_and_errors(index: Index, tmp_path: Path) -> None:
    model = str(index.encoder.model_dir)
    index.close()
    target = tmp_path / "qdrant"
    done = _cli(
        "--model", model, "push", str(index.path), "--qdrant", str(target), "--collection", "c"
    )
    assert done.returncode == 0, done.stderr
    assert "40 sent, 0 unchanged, 0 deleted" in done.stdout
    again = _cli("push", str(index.path), "--qdrant", str(target), "--collection", "c")
    assert "0 sent, 40 unchanged" in again.stdout
    copy = tmp_path / "copy.db"
    shutil.copy(index.path, copy)
    refused = _cli("push", str(copy), "--qdrant", str(target), "--collection", "c")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("edge-colbert: error: collection 'c' holds 40 points")
    assert refused.stderr.count("\n") == 1 and "--replace" in refused.stderr
    replaced = _cli("push", str(copy), "--qdrant", str(target), "--collection", "c", "--replace")
    assert "0 sent, 40 unchanged, 0 deleted" in replaced.stdout, replaced.stderr
    client = QdrantClient(path=str(target))
    assert client.count("c").count == 40
    locked = _cli("push", str(index.path), "--qdrant", str(target), "--collection", "c")
    assert locked.returncode == 1
    assert "cannot open Qdrant's local storage" in locked.stderr
    assert "Traceback" not in locked.stderr
    client.close()

    down = _cli(
        "push",
        str(index.path),
        "--qdrant",
        "http://127.0.0.1:9",
        "--collection",
        "c",
        "--timeout",
        "2",
    )
    assert down.returncode == 1
    assert down.stderr.startswith("edge-colbert: error: cannot reach Qdrant at http://127.0.0.1:9")
    assert "Traceback" not in down.stderr
    missing = _cli("push", str(tmp_path / "none.db"), "--qdrant", str(target), "--collection", "c")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


# ------------------------------------------------------------------- SciFact, bundled model


@pytest.mark.slow
def test_scifact_subset_top10_matches_exhaustive_maxsim(tmp_path: Path) -> None:
    """A 200-abstract SciFact subset with the bundled model: Qdrant's MaxSim top-10 for 100
    dev queries against edge-colbert's exhaustive top-10 (benchmarks/scale_out.py runs the
    whole corpus)."""
    if not (SCIFACT / "corpus.jsonl").exists():
        pytest.skip(f"SciFact dev is not at {SCIFACT}")
    corpus = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").open()][:200]
    queries = [json.loads(line)["text"] for line in (SCIFACT / "queries.jsonl").open()][:100]
    encoder = Encoder()
    idx = Index(tmp_path / "scifact.db", encoder=encoder)
    idx.add(
        [(d["title"] + " " + d["text"]).strip() for d in corpus], ids=[d["_id"] for d in corpus]
    )
    client = QdrantClient(":memory:")
    push(idx, client, "scifact")
    overlaps = []
    for query in queries:
        want = {h.id for h in _exact(idx, query, 10)}
        got = {h.id for h in search(client, "scifact", encoder, query, k=10)}
        overlaps.append(len(want & got) / 10)
    assert float(np.mean(overlaps)) >= 0.99


def test_pushed_points_rank_the_same_in_qdrants_own_engine(
    index: Index, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    """The points a push writes, loaded into qdrant-edge-py (Qdrant's embedded Rust engine,
    the server's scoring code), rank as the index's exhaustive MaxSim does."""
    qe = pytest.importorskip("qdrant_edge", reason="optional: pip install qdrant-edge-py")
    client = QdrantClient(":memory:")
    push(index, client, "docs")
    config = qe.EdgeConfig(
        vectors={
            VECTOR_NAME: qe.EdgeVectorParams(
                size=index.store.dim,
                distance=qe.Distance.Dot,
                multivector_config=qe.MultiVectorConfig(comparator=qe.MultiVectorComparator.MaxSim),
            )
        }
    )
    shard = qe.EdgeShard.create(str(tmp_path / "edge"), config)
    records, _ = client.scroll("docs", limit=100, with_payload=True, with_vectors=True)
    shard.update(
        qe.UpdateOperation.upsert_points(
            [qe.Point(id=str(r.id), vector=r.vector, payload=r.payload) for r in records]
        )
    )
    for query in ("river stone", "music garden light"):
        vectors = tiny_encoder.encode_queries([query])[0]
        request = qe.QueryRequest(
            limit=7,
            query=qe.Query.Nearest(vectors.tolist(), using=VECTOR_NAME),
            params=qe.SearchParams(exact=True),
            with_payload=True,
        )
        got = [p.payload["id"] for p in shard.query(request)]
        assert got == [h.id for h in _exact(index, query, 7)]
    shard.close()
