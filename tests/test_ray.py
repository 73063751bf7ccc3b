"""edge_colbert.ray: encode a Ray Data dataset in encoder actors, into Parquet, index shards or
Qdrant. Ray runs locally (``ray.init(num_cpus=2)``); on a cluster the same calls run after
``ray.init(address=...)`` (docs/scale.md)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason='needs the ray extra: pip install "edge-colbert[ray]"')
pytest.importorskip("ray.data", reason='needs the ray extra: pip install "edge-colbert[ray]"')

from edge_colbert import Encoder, Index  # noqa: E402
from edge_colbert.errors import InvalidInputError  # noqa: E402
from edge_colbert.ray import encode, row_vectors, write_indexes, write_qdrant  # noqa: E402

WORDS = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "paper", "light"]


def _rows(count: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(3)
    return [
        {
            "doc": f"r{i}",
            "text": " ".join(rng.choice(WORDS, size=int(rng.integers(2, 30)))),
            "part": i % 2,
        }
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    # Ray gives its local node 30 s (fixed in ray/_private/node.py) to register; on a heavily
    # loaded machine that can run out, which is no fault of the code under test: retry once.
    for attempt in (1, 2):
        try:
            ray.init(
                num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False
            )
            break
        except Exception as error:
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(error):
                raise
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def test_two_actors_give_the_encoders_vectors(
    local_ray: None, tiny_model_dir: Path, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    rows = _rows(60)
    encoded = encode(
        ray.data.from_items(rows, override_num_blocks=4),
        tiny_model_dir,
        concurrency=2,
        batch_size=16,
        vectors="float32",
    )
    encoded.write_parquet(str(tmp_path / "parquet"))
    got = {
        row["doc"]: row_vectors(row)
        for row in ray.data.read_parquet(str(tmp_path / "parquet")).iter_rows()
    }
    want = tiny_encoder.encode_documents([r["text"] for r in rows])
    assert sorted(got) == sorted(r["doc"] for r in rows)
    for row, expected in zip(rows, want, strict=True):
        vectors = got[row["doc"]]
        assert vectors.shape == expected.shape
        cosines = np.sum(vectors * expected, axis=1) / (
            np.linalg.norm(vectors, axis=1) * np.linalg.norm(expected, axis=1)
        )
        np.testing.assert_allclose(cosines, 1.0, atol=1e-5)

    codes = encode(ray.data.from_items(rows[:8]), tiny_model_dir, concurrency=1)
    first = next(iter(codes.iter_rows()))
    assert row_vectors(first).dtype == np.int8


def test_index_shards_and_qdrant(
    local_ray: None, tiny_model_dir: Path, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    rows = _rows(40)
    shards = write_indexes(
        ray.data.from_items(rows, override_num_blocks=4),
        tiny_model_dir,
        tmp_path / "shards",
        id_column="doc",
        metadata_columns=["part"],
        concurrency=2,
        batch_size=8,
    )
    assert 1 <= len(shards) <= 2
    ids: list[str] = []
    for shard in shards:
        with Index(shard, encoder=tiny_encoder, readonly=True) as index:
            ids.extend(index)
            some = next(iter(index))
            hit = index.get(some)
            assert hit is not None and hit.metadata["part"] in (0, 1)
    assert sorted(ids) == sorted(r["doc"] for r in rows)

    qdrant_client = pytest.importorskip("qdrant_client")
    from edge_colbert.qdrant import search

    client = qdrant_client.QdrantClient(":memory:")
    encoded = encode(ray.data.from_items(rows), tiny_model_dir, concurrency=2, batch_size=8)
    sent = write_qdrant(
        encoded, client, "ray", model_dir=tiny_model_dir, id_column="doc", metadata_columns=["part"]
    )
    assert sent == 40
    reference = Index(tmp_path / "all.db", encoder=tiny_encoder)
    reference.add(
        [r["text"] for r in rows],
        ids=[r["doc"] for r in rows],
        metadata=[{"part": r["part"]} for r in rows],
    )
    for where in (None, {"part": 1}):
        vectors = tiny_encoder.encode_queries(["river stone"])[0]
        want = [h.id for h in reference.search_vectors(vectors, 5, where=where, exhaustive=True)]
        got = [h.id for h in search(client, "ray", tiny_encoder, "river stone", k=5, where=where)]
        assert got == want

    # write_qdrant adds to what it wrote before; a push mirrors one file, so neither takes
    # the other's collection (each would lose rows)
    from edge_colbert.qdrant import CollectionMismatchError, push

    again = write_qdrant(encoded, client, "ray", model_dir=tiny_model_dir, id_column="doc")
    assert again == 40 and client.count("ray").count == 40
    with pytest.raises(CollectionMismatchError, match=r"40 points written from edge_colbert\.ray"):
        push(reference, client, "ray")
    push(reference, client, "pushed")
    with pytest.raises(CollectionMismatchError, match=r"40 points pushed from the index file"):
        write_qdrant(encoded, client, "pushed", model_dir=tiny_model_dir, id_column="doc")
    with pytest.raises(InvalidInputError, match=r"no 'vectors' column.*ray\.encode"):
        write_qdrant(ray.data.from_items(rows), client, "x", model_dir=tiny_model_dir)


def test_bad_input(local_ray: None, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = ray.data.from_items([{"body": "some text"}])
    with pytest.raises(InvalidInputError, match=r"no column 'text'; its columns are \['body'\]"):
        encode(items, tiny_model_dir)
    with pytest.raises(InvalidInputError, match="concurrency must be a positive integer"):
        encode(items, tiny_model_dir, column="body", concurrency=0)
    with pytest.raises(InvalidInputError, match=r"ray\.data\.Dataset"):
        encode([{"text": "x"}], tiny_model_dir)  # type: ignore[arg-type]

    from edge_colbert._adapters import MissingExtraError

    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(MissingExtraError, match=r'pip install "edge-colbert\[ray\]"'):
        encode(items, tiny_model_dir)
