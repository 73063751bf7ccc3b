"""Encode many texts on a Ray cluster with the same ONNX model folder.

``pip install "edge-colbert[ray]"``. :func:`encode` turns a Ray Data dataset of texts into
token vectors in a pool of actors: each actor loads one :class:`~edge_colbert.encoder.Encoder`
(one onnxruntime session, ``threads`` intra-op threads) and encodes batch after batch, so the
model is loaded once per actor, not once per batch. Where the vectors go:

- :func:`encode` returns the dataset with a ``vectors`` column; ``.write_parquet(folder)``
  keeps it as Parquet (read a row back with :func:`row_vectors`);
- :func:`write_indexes` writes one edge-colbert index file per actor (a shard each), to be
  searched one by one or copied to Qdrant with :func:`edge_colbert.qdrant.push`;
- :func:`write_qdrant` upserts the encoded rows into a Qdrant collection from the driver.

On a cluster, connect first (``ray.init(address="auto")`` or ``"ray://head:10001"``); the model
folder must be readable at the same path on every node (a shared volume, or bake it into
the image). Without ``ray.init``, Ray starts a local instance on this machine.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from edge_colbert._adapters import require
from edge_colbert.errors import InvalidInputError
from edge_colbert.quantize import dequantize_int8, quantize_int8
from edge_colbert.validation import check_text

if TYPE_CHECKING:
    import ray.data
    from qdrant_client import QdrantClient

__all__ = ["encode", "row_vectors", "write_indexes", "write_qdrant"]

EXTRA = "ray"
# Texts per actor call: the encoder pads per batch of similar lengths inside it.
DEFAULT_BATCH = 64
Storage = Literal["int8", "float32"]
_DTYPES: dict[str, type[np.generic]] = {"int8": np.int8, "float32": np.float32}
# The source write_qdrant records in a collection's metadata (push records its index file).
WRITER = {"writer": "edge_colbert.ray.write_qdrant"}


def _ray_data() -> Any:
    require("ray", EXTRA)
    return require("ray.data", EXTRA)


def _check_dataset(dataset: Any, columns: Sequence[str]) -> None:
    """Refuse a dataset that lacks a needed column, naming the ones it has."""
    if not isinstance(dataset, _ray_data().Dataset):
        raise InvalidInputError(
            f"dataset must be a ray.data.Dataset; got {type(dataset).__name__}. Make one with "
            "ray.data.from_items([{'text': ...}]) or ray.data.read_parquet(...)."
        )
    schema = dataset.schema()
    names = list(schema.names) if schema is not None else []
    for column in columns:
        if column not in names:
            raise InvalidInputError(
                f"the dataset has no column {column!r}; its columns are {names}. Pass "
                "column= (and id_column=) naming the ones that hold the texts and ids."
            )


def _check_knobs(concurrency: int, threads: int, batch_size: int) -> None:
    for name, value in (
        ("concurrency", concurrency),
        ("threads", threads),
        ("batch_size", batch_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"{name} must be a positive integer; got {value!r}.")


def _texts(batch: Mapping[str, Any], column: str) -> list[str]:
    return [check_text(t, f"the {column!r} value {t!r}") for t in batch[column].tolist()]


class _Encode:
    """The actor of :func:`encode`: one Encoder, loaded once, for every batch it is given."""

    def __init__(self, model_dir: str, threads: int, column: str, storage: Storage) -> None:
        from edge_colbert.encoder import Encoder

        self.encoder = Encoder(model_dir, threads=threads)
        self.column = column
        self.storage = storage

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        vectors = self.encoder.encode_documents(_texts(batch, self.column))
        stored = [quantize_int8(v) if self.storage == "int8" else v for v in vectors]
        batch["vectors"] = np.array([v.tobytes() for v in stored], dtype=object)
        batch["n_tokens"] = np.array([len(v) for v in stored], dtype=np.int32)
        batch["dim"] = np.full(len(stored), self.encoder.dim, dtype=np.int32)
        batch["vector_dtype"] = np.array([self.storage] * len(stored), dtype=object)
        return batch


def encode(
    dataset: ray.data.Dataset,
    model_dir: str | Path,
    *,
    column: str = "text",
    concurrency: int = 2,
    threads: int = 1,
    batch_size: int = DEFAULT_BATCH,
    vectors: Storage = "int8",
) -> ray.data.Dataset:
    """Add the token vectors of ``dataset[column]`` as a ``vectors`` column (lazy).

    Every input column is kept; added are ``vectors`` (the bytes of an ``[n_tokens, dim]``
    array of ``vector_dtype``: int8 codes as the index stores them, or float32 as the
    encoder returns them), ``n_tokens``, ``dim`` and ``vector_dtype``. Nothing runs until
    the result is consumed (``write_parquet``, ``iter_rows``, ``materialize``).

    Args:
        dataset: a ``ray.data.Dataset`` with a text column.
        model_dir: the model folder, readable at this path on every node.
        column: the column holding the texts (non-empty strings).
        concurrency: number of encoder actors.
        threads: onnxruntime threads per actor (each actor asks Ray for that many CPUs).
        batch_size: texts per actor call.
        vectors: ``"int8"`` (4x smaller) or ``"float32"``.

    Raises:
        MissingExtraError: ray[data] is not installed.
        InvalidInputError: no such column, a knob below 1, an unknown ``vectors``; an empty
            or non-string text fails the Ray job with the same message.

    Thread-safe: it only builds a plan.
    """
    _check_dataset(dataset, [column])
    _check_knobs(concurrency, threads, batch_size)
    if vectors not in _DTYPES:
        raise InvalidInputError(f"vectors must be 'int8' or 'float32'; got {vectors!r}.")
    from edge_colbert.manifest import load_manifest

    load_manifest(Path(model_dir))  # a bad folder fails here, not in every actor
    result: ray.data.Dataset = dataset.map_batches(
        _Encode,
        fn_constructor_kwargs={
            "model_dir": str(model_dir),
            "threads": threads,
            "column": column,
            "storage": vectors,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=_ray_data().ActorPoolStrategy(size=concurrency),
        num_cpus=threads,
    )
    return result


def row_vectors(row: Mapping[str, Any]) -> npt.NDArray[Any]:
    """The ``[n_tokens, dim]`` array of one row of :func:`encode`'s output (or its Parquet).

    Thread-safe.
    """
    dtype = _DTYPES[str(row["vector_dtype"])]
    return np.frombuffer(row["vectors"], dtype=dtype).reshape(int(row["n_tokens"]), int(row["dim"]))


class _WriteIndex:
    """The actor of :func:`write_indexes`: one Index file (a shard) and its Encoder."""

    def __init__(
        self,
        model_dir: str,
        folder: str,
        threads: int,
        column: str,
        id_column: str | None,
        metadata_columns: Sequence[str],
    ) -> None:
        from edge_colbert.encoder import Encoder
        from edge_colbert.index import Index

        self.path = Path(folder) / f"shard-{uuid.uuid4().hex[:12]}.db"
        self.index = Index(self.path, encoder=Encoder(model_dir, threads=threads))
        self.column = column
        self.id_column = id_column
        self.metadata_columns = list(metadata_columns)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        texts = _texts(batch, self.column)
        ids = None if self.id_column is None else [str(v) for v in batch[self.id_column].tolist()]
        metadata = [
            {key: _plain(batch[key][i]) for key in self.metadata_columns} for i in range(len(texts))
        ]
        added = self.index.add(texts, ids=ids, metadata=metadata)
        return {
            "id": np.array(added, dtype=object),
            "shard": np.array([str(self.path)] * len(added), dtype=object),
        }


def _plain(value: Any) -> Any:
    """A numpy scalar as the plain Python value JSON metadata takes."""
    return value.item() if isinstance(value, np.generic) else value


def write_indexes(
    dataset: ray.data.Dataset,
    model_dir: str | Path,
    folder: str | Path,
    *,
    column: str = "text",
    id_column: str | None = None,
    metadata_columns: Sequence[str] = (),
    concurrency: int = 2,
    threads: int = 1,
    batch_size: int = 256,
) -> list[Path]:
    """Encode and index ``dataset`` into one edge-colbert file per actor, under ``folder``.

    Each actor owns one ``shard-<hex>.db`` and adds its batches to it, so no two processes
    write one file. ``folder`` must be a filesystem every actor writes to (on a cluster, a
    shared volume). Runs the job and returns the shard paths.

    Raises:
        MissingExtraError, InvalidInputError: as :func:`encode` (a missing ``id_column`` or
            metadata column too).

    Thread-safe as far as Ray's driver API is.
    """
    _check_dataset(dataset, [column, *([id_column] if id_column else []), *metadata_columns])
    _check_knobs(concurrency, threads, batch_size)
    Path(folder).mkdir(parents=True, exist_ok=True)
    written = dataset.map_batches(
        _WriteIndex,
        fn_constructor_kwargs={
            "model_dir": str(model_dir),
            "folder": str(Path(folder).resolve()),
            "threads": threads,
            "column": column,
            "id_column": id_column,
            "metadata_columns": list(metadata_columns),
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=_ray_data().ActorPoolStrategy(size=concurrency),
        num_cpus=threads,
    )
    shards = {row["shard"] for row in written.select_columns(["shard"]).iter_rows()}
    return sorted(Path(s) for s in shards)


def write_qdrant(
    encoded: ray.data.Dataset,
    client: QdrantClient,
    collection: str,
    *,
    model_dir: str | Path,
    column: str = "text",
    id_column: str = "id",
    metadata_columns: Sequence[str] = (),
    batch_size: int = 64,
) -> int:
    """Upsert the rows of :func:`encode`'s output into a Qdrant collection; returns the count.

    The collection is made (or checked) as :func:`edge_colbert.qdrant.push` makes it, and the
    points carry the same payload (``id``, ``text``, ``metadata``), so
    :func:`edge_colbert.qdrant.search` serves it. The upload runs from the driver, batch by
    batch, while the actors encode.

    Raises:
        MissingExtraError: ray[data] or qdrant-client is not installed.
        InvalidInputError: the dataset lacks ``vectors`` (run :func:`encode` first), the text
            or id column.
        CollectionMismatchError: as ``push``; also a collection that ``push`` fills from
            an index file (its next push would delete these rows).
        ModelMismatchError, QdrantUnavailableError: as ``push``.

    Not thread-safe for one collection.
    """
    from edge_colbert import qdrant
    from edge_colbert.encoder import Encoder

    _check_dataset(encoded, [])
    schema = encoded.schema()
    if schema is None or "vectors" not in schema.names:
        raise InvalidInputError(
            "the dataset has no 'vectors' column: give write_qdrant the output of "
            "edge_colbert.ray.encode(dataset, model_dir), not the texts."
        )
    _check_dataset(encoded, ["vectors", "n_tokens", "dim", column, id_column, *metadata_columns])
    models = qdrant._models()
    encoder = Encoder(model_dir)
    sent = 0
    with qdrant._talking_to(client, collection):
        state = qdrant._ensure_collection(
            client, collection, encoder.dim, encoder.identity, "float32"
        )
        # Recorded so that a push from an index file refuses to mirror over these rows, and
        # refused where a push mirrors a file here (its next push would delete them).
        qdrant._claim_source(client, collection, state, WRITER, replace=False, mirror=False)
        for batch in encoded.iter_batches(batch_size=batch_size, batch_format="numpy"):
            points = []
            for i in range(len(batch["vectors"])):
                row = {key: batch[key][i] for key in ("vectors", "n_tokens", "dim", "vector_dtype")}
                matrix = row_vectors(row)
                if matrix.dtype == np.int8:
                    matrix = dequantize_int8(matrix)
                doc_id = str(batch[id_column][i])
                points.append(
                    models.PointStruct(
                        id=qdrant.point_id(doc_id),
                        vector={qdrant.VECTOR_NAME: matrix.astype(np.float32).tolist()},
                        payload={
                            "id": doc_id,
                            "text": str(batch[column][i]),
                            "metadata": {k: _plain(batch[k][i]) for k in metadata_columns},
                        },
                    )
                )
            client.upsert(collection, points=points, wait=True)
            sent += len(points)
    return sent
