"""Serve an edge-colbert index from Qdrant: copy it into a multi-vector collection, search it.

``pip install "edge-colbert[qdrant]"``. The same model folder encodes queries on either side:
:func:`push` copies each document (id, text, metadata) and its token vectors from the index
file into a Qdrant collection scored by MaxSim (``MultiVectorConfig(comparator=MAX_SIM)``), and
:func:`search` encodes a query with the :class:`~edge_colbert.encoder.Encoder` and asks Qdrant
for the top ``k``, returning the same :class:`~edge_colbert.index.Hit` objects as
:meth:`Index.search <edge_colbert.index.Index.search>`.

The client decides where the collection lives: ``QdrantClient(":memory:")`` or
``QdrantClient(path=...)`` run Qdrant's local mode in this process, ``QdrantClient(url=...)``
talks to a server; this module makes the same calls on each.

How a push knows what changed, with no bookkeeping in the index file (it is only read):
every point carries the document's ``rowid`` and a ``digest`` of its text, metadata and
codes. The index gives a replaced document a new rowid, never reusing one, so when the
collection was last filled from this very file (its path and inode, recorded in the
collection's metadata with the model), a document whose point holds its rowid is unchanged.
Otherwise (a copied or restored file) digests are compared, which reads every document but
sends only those that differ. Points whose document is gone are deleted. Each batch is an
upsert of its own, so an interrupted push is resumed by pushing again: what arrived is
recognised and skipped.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import re
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edge_colbert._adapters import require

# The two Qdrant errors live in the hierarchy of errors.py; importing them from here works too.
from edge_colbert.errors import (
    CollectionMismatchError,
    InvalidInputError,
    ModelMismatchError,
    QdrantUnavailableError,
)
from edge_colbert.filters import where_clause
from edge_colbert.index import Hit, Index
from edge_colbert.validation import check_k, check_text

if TYPE_CHECKING:
    from qdrant_client import QdrantClient
    from qdrant_client.http import models as qmodels

    from edge_colbert.encoder import Encoder
    from edge_colbert.records import StoredDocument

__all__ = [
    "DEFAULT_BATCH",
    "VECTOR_NAME",
    "CollectionMismatchError",
    "PushReport",
    "QdrantUnavailableError",
    "point_id",
    "push",
    "qdrant_filter",
    "search",
]

logger = logging.getLogger(__name__)

EXTRA = "qdrant"
# The named vector of the collection, so that a collection can hold other vectors beside it.
VECTOR_NAME = "colbert"
# The collection-metadata key under which a push records the model and the source file.
STATE_KEY = "edge_colbert"
# Points per upsert request: about 200 tokens x 64 floats each, a few MB of JSON per request.
DEFAULT_BATCH = 64
# Points read per scroll page when looking for points whose document is gone, and documents
# of the file compared per retrieve request: what a push holds in memory at once.
SCROLL_PAGE = 2048
COMPARE_PAGE = 1024
# Fixed namespace of the point ids: uuid5(namespace, document id) is the same on every machine.
ID_NAMESPACE = uuid.UUID("5c0e7d3e-3b1a-5d0e-9a53-6b6f6c6265f1")
Storage = Literal["float32", "int8"]
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class PushReport:
    """What one :func:`push` did: points sent, points deleted, documents already there."""

    upserted: int
    deleted: int
    unchanged: int


def point_id(doc_id: str) -> str:
    """The Qdrant point id of a document: a UUID5 of its id (Qdrant takes only uints and
    UUIDs as ids). Thread-safe."""
    return str(uuid.uuid5(ID_NAMESPACE, doc_id))


def _models() -> Any:
    """``qdrant_client.http.models``, or MissingExtraError naming the extra."""
    require("qdrant_client", EXTRA)
    return require("qdrant_client.http.models", EXTRA)


def _where_from(client: QdrantClient) -> str:
    """Where the client points, for messages: its URL, host or path."""
    options: Mapping[str, Any] = getattr(client, "init_options", {}) or {}
    for key in ("url", "host", "path", "location"):
        if options.get(key):
            return str(options[key])
    return "the Qdrant client's target"


@contextmanager
def _talking_to(client: QdrantClient, collection: str) -> Iterator[None]:
    """Turn the client's transport and API errors into one clear project error."""
    exceptions = require("qdrant_client.http.exceptions", EXTRA)
    where = _where_from(client)
    try:
        yield
    except exceptions.UnexpectedResponse as error:
        body = " ".join(str(error.content, "utf-8", "replace").split())[:300]
        raise QdrantUnavailableError(
            f"Qdrant at {where} refused a request on collection {collection!r} with HTTP "
            f"{error.status_code}: {body}"
        ) from error
    except exceptions.ResponseHandlingException as error:
        raise QdrantUnavailableError(
            f"cannot reach Qdrant at {where} ({error}); check that the server is running and "
            "the URL (and port 6333) is right."
        ) from error
    except (ConnectionError, TimeoutError) as error:
        raise QdrantUnavailableError(f"cannot reach Qdrant at {where}: {error}") from error
    except Exception as error:
        # With prefer_grpc=True the transport errors are grpc.RpcError (grpc is imported only
        # by the client, so it is recognised by its module rather than imported here).
        if type(error).__module__.split(".")[0] != "grpc":
            raise
        raise QdrantUnavailableError(
            f"Qdrant at {where} failed a gRPC request on collection {collection!r}: "
            f"{' '.join(str(error).split())[:300]}"
        ) from error


# ------------------------------------------------------------------------------ collection


def _payload_key(key: str) -> str:
    """The payload path of metadata ``key``: ``metadata.key``, quoted when it holds dots or
    other characters a JSON path would read as structure."""
    if _PLAIN_KEY.match(key):
        return f"metadata.{key}"
    return f'metadata."{key}"'


def _source_of(index: Index) -> dict[str, Any]:
    """The file a push reads, as recorded in the collection: path, device and inode (a file
    replaced at the same path gets another inode, so its rowids are not trusted), and the
    coding of its vectors (a residual file's retraining re-codes every document under the
    same rowids, so a new centroid version is compared by digest)."""
    path = index.path.resolve()
    status = path.stat()
    codec = index.store.residual_codec()
    coding = "int8" if codec is None else f"residual{codec.nbits} v{codec.version}"
    return {"path": str(path), "device": status.st_dev, "inode": status.st_ino, "coding": coding}


def _describe(source: Mapping[str, Any] | None) -> str:
    """A recorded source, for messages."""
    if not source:
        return "a writer that recorded no source (an older edge-colbert)"
    if "path" in source:
        return f"the index file {source['path']} (inode {source.get('inode')})"
    return str(source.get("writer", source))


def _same_file(recorded: Mapping[str, Any], source: Mapping[str, Any]) -> bool:
    """Whether ``recorded`` names the file ``source`` describes: the same path (the file
    rewritten in place, e.g. by ``repair``) or the same inode on the same device (the file
    moved)."""
    if "path" not in recorded:
        return False
    if recorded["path"] == source["path"]:
        return True
    same_device = recorded.get("device", source["device"]) == source["device"]
    return bool(same_device and recorded.get("inode") == source["inode"])


def _claim_source(
    client: QdrantClient,
    collection: str,
    state: Mapping[str, Any],
    source: Mapping[str, Any],
    *,
    replace: bool,
    mirror: bool,
) -> bool:
    """Check that ``source`` may write into ``collection`` and record it there.

    A push mirrors one file (it deletes every point the file does not hold), so a collection
    that holds points from another file, or from :func:`edge_colbert.ray.write_qdrant`, is
    refused unless ``replace``. ``mirror`` is False for an additive writer (write_qdrant),
    which is refused a collection a push mirrors a file into (the next push would delete its
    rows). Returns whether the collection's points were pushed from this very file (and
    coding) by pushes that completed, so that their rowids can be trusted; when not, the
    source is recorded as incomplete until :func:`_complete` (an interrupted push from a new
    source then resumes by digest, not by rowids the old points may share).
    """
    held = client.count(collection, exact=True).count
    recorded = state.get("source")
    if held and not replace:
        if mirror and not (recorded and _same_file(recorded, source)):
            raise CollectionMismatchError(
                f"collection {collection!r} holds {held} points written from "
                f"{_describe(recorded)}, not from {_describe(source)}; a push makes the "
                f"collection mirror one file, so it would delete the points this file does "
                "not hold. Push into another collection, or pass replace=True (CLI: "
                "--replace) if this file is meant to take its place (a copy or a restored "
                "backup of it: only the differences are sent)."
            )
        if not mirror and recorded != source:
            raise CollectionMismatchError(
                f"collection {collection!r} holds {held} points pushed from "
                f"{_describe(recorded)}; the next push from it would delete the rows written "
                "now. Write into another collection."
            )
    trusted = held == 0 or (recorded == source and state.get("complete", False) is True)
    if recorded != source or state.get("complete") is not trusted:
        # Recorded before anything is sent, so that a resumed push is still from "this" source.
        metadata = {**state, "source": source, "complete": trusted}
        client.update_collection(collection, metadata={STATE_KEY: metadata})
    return trusted


def _complete(
    client: QdrantClient, collection: str, state: Mapping[str, Any], source: Mapping[str, Any]
) -> None:
    """Mark the collection as holding exactly ``source``'s documents: the next push from it
    compares rowids."""
    metadata = {**state, "source": source, "complete": True}
    client.update_collection(collection, metadata={STATE_KEY: metadata})


def _vector_params(models: Any, dim: int, storage: Storage) -> Any:
    return models.VectorParams(
        size=dim,
        distance=models.Distance.DOT,
        multivector_config=models.MultiVectorConfig(
            comparator=models.MultiVectorComparator.MAX_SIM
        ),
        # int8: Qdrant keeps the float32 originals on disk and scans int8 copies in RAM.
        on_disk=storage == "int8",
        quantization_config=(
            models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(
                    type=models.ScalarType.INT8, quantile=1.0, always_ram=True
                )
            )
            if storage == "int8"
            else None
        ),
    )


def _storage_of(params: Any, collection_quantization: Any) -> Storage:
    quantization = getattr(params, "quantization_config", None) or collection_quantization
    return "int8" if getattr(quantization, "scalar", None) is not None else "float32"


def _check_collection(
    client: QdrantClient,
    collection: str,
    dim: int,
    model: str,
    storage: Storage | None,
    also: str | None = None,
) -> dict[str, Any]:
    """Refuse a collection that cannot hold this model's vectors; returns its push state."""
    models = _models()
    info = client.get_collection(collection)
    vectors = info.config.params.vectors
    wanted = f"{dim}-d MAX_SIM multi-vectors named {VECTOR_NAME!r}"
    if not isinstance(vectors, Mapping) or VECTOR_NAME not in vectors:
        names = sorted(vectors) if isinstance(vectors, Mapping) else ["(one unnamed vector)"]
        raise CollectionMismatchError(
            f"collection {collection!r} has vectors {names}, but edge-colbert needs {wanted}; "
            "push into a new collection name or delete this one."
        )
    params = vectors[VECTOR_NAME]
    comparator = params.multivector_config.comparator.value if params.multivector_config else "none"
    if params.size != dim or comparator != models.MultiVectorComparator.MAX_SIM.value:
        raise CollectionMismatchError(
            f"collection {collection!r} holds {params.size}-d vectors with multi-vector "
            f"comparator {comparator}, but this index needs {wanted} ({dim}-d, max_sim); push "
            "into a new collection name or delete this one."
        )
    distance = getattr(params.distance, "value", params.distance)
    if distance not in (models.Distance.DOT.value, models.Distance.COSINE.value):
        # The points are unit vectors: dot product and cosine both give the index's MaxSim.
        raise CollectionMismatchError(
            f"collection {collection!r} compares vectors by {distance}, but MaxSim needs "
            f"{models.Distance.DOT.value} (or {models.Distance.COSINE.value}); push into a new "
            "collection name or delete this one."
        )
    have = _storage_of(params, info.config.quantization_config)
    if storage is not None and have != storage:
        raise CollectionMismatchError(
            f"collection {collection!r} stores {have} vectors but {storage} was asked for; "
            f"push with vectors={have!r} or into a new collection."
        )
    state = dict((info.config.metadata or {}).get(STATE_KEY) or {})
    if not state and (info.points_count or 0) > 0:
        raise CollectionMismatchError(
            f"collection {collection!r} holds {info.points_count} points that edge-colbert did "
            "not push; a push deletes points that are not in the index, so it will not touch "
            "this collection. Push into a new collection name."
        )
    if state.get("model") not in (None, model, also or model):
        raise ModelMismatchError(
            f"collection {collection!r} holds vectors of model {state['model']}, but the index "
            f"was written by {model}; push into a new collection or use that model."
        )
    return state


def _ensure_collection(
    client: QdrantClient, collection: str, dim: int, model: str, storage: Storage
) -> dict[str, Any]:
    """Create the collection if absent, else check it; returns its recorded state (model,
    dimension and, once written, the source)."""
    if client.collection_exists(collection):
        # A collection made by hand (empty) has recorded nothing yet: this model is its model.
        return {
            "model": model,
            "dim": dim,
            **_check_collection(client, collection, dim, model, storage),
        }
    models = _models()
    client.create_collection(
        collection,
        vectors_config={VECTOR_NAME: _vector_params(models, dim, storage)},
        metadata={STATE_KEY: {"model": model, "dim": dim}},
    )
    logger.info("created Qdrant collection %s (%d-d, %s)", collection, dim, storage)
    return {"model": model, "dim": dim}


# ------------------------------------------------------------------------------------ push


def _digest(doc: StoredDocument, codes: np.ndarray[Any, Any]) -> str:
    """A fingerprint of what a point carries: id, text, metadata and the stored codes (int8
    codes or residual records, as bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for part in (doc.id, doc.text, json.dumps(doc.metadata, sort_keys=True, ensure_ascii=False)):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    h.update(np.ascontiguousarray(codes).tobytes())
    return h.hexdigest()


def _batches(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _points(index: Index, rowids: Sequence[int]) -> Iterator[tuple[str, int, str, Any]]:
    """(point id, rowid, digest, PointStruct) for these rowids; rows deleted meanwhile are
    skipped (the next push removes their points)."""
    models = _models()
    docs = index.store.documents(rowids)
    pack = index.store.vectors(rowids)
    for i, rowid in enumerate(pack.rowids.tolist()):
        doc = docs.get(rowid)
        if doc is None:
            continue
        codes = pack.codes[pack.offsets[i] : pack.offsets[i + 1]]
        # pack.document decodes int8 codes and residual records alike (pack.codec says which)
        vectors = pack.document(i) if len(codes) else np.zeros((1, index.store.dim))
        digest = _digest(doc, codes)
        pid = point_id(doc.id)
        yield (
            pid,
            rowid,
            digest,
            models.PointStruct(
                id=pid,
                vector={VECTOR_NAME: vectors.tolist()},
                payload={
                    "id": doc.id,
                    "text": doc.text,
                    "metadata": doc.metadata,
                    "rowid": rowid,
                    "digest": digest,
                },
            ),
        )


def _index_keys(
    client: QdrantClient, collection: str, metadata: Sequence[Mapping[str, Any]], done: set[str]
) -> None:
    """Create payload indexes for the scalar metadata keys in ``metadata`` not yet indexed,
    typed by their values (keyword, bool, integer, float); mixed types get none.

    The same calls go to a server and to local mode, which accepts them and has no payload
    indexes (it scans every point); its warning saying so is silenced here.
    """
    models = _models()
    kinds: dict[str, set[str]] = {}
    for meta in metadata:
        for key, value in meta.items():
            if isinstance(value, bool):
                kind = "bool"
            elif isinstance(value, int):
                kind = "integer"
            elif isinstance(value, float):
                kind = "float"
            elif isinstance(value, str):
                kind = "keyword"
            else:
                kind = "other"
            kinds.setdefault(key, set()).add(kind)
    for key, seen in kinds.items():
        path = _payload_key(key)
        if path in done:
            continue
        done.add(path)
        if seen == {"integer", "float"}:
            seen = {"float"}
        if len(seen) != 1 or "other" in seen:
            continue
        schema = getattr(models.PayloadSchemaType, seen.pop().upper())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            client.create_payload_index(collection, path, field_schema=schema, wait=True)


def push(
    index_or_path: Index | str | os.PathLike[str],
    client: QdrantClient,
    collection: str,
    *,
    batch_size: int = DEFAULT_BATCH,
    vectors: Storage = "float32",
    index_metadata: bool = True,
    replace: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PushReport:
    """Make ``collection`` hold exactly the documents of the index, sending only changes.

    The collection is created when absent (a named ``colbert`` multi-vector of the index's
    dimension, dot product, MaxSim); the index file is only read. Run it again after adding,
    replacing or deleting documents, or after an interruption: it sends what is missing or
    changed and deletes the points of documents that are gone. Memory stays bounded however
    large the file and the collection: both are compared page by page.

    A collection mirrors one file. Points written from another file (another path and
    inode) are refused unless ``replace``, because mirroring this file deletes them.

    Args:
        index_or_path: an open :class:`~edge_colbert.index.Index` or the path of its file
            (opened read-only, no model needed).
        client: a ``qdrant_client.QdrantClient``: ``":memory:"``, ``path=`` or ``url=``.
        collection: the collection name.
        batch_size: points per upsert request.
        vectors: ``"float32"`` (the exact MaxSim of the index) or ``"int8"`` (Qdrant's
            scalar quantization: int8 copies in RAM, float32 originals on disk); fixed when
            the collection is created.
        index_metadata: create payload indexes for the scalar metadata keys found, so
            that ``where`` filters stay fast on a server.
        replace: let this file take the place of the one the collection was pushed from
            (a copy or restored backup of it: only the differences are sent; another file:
            the collection becomes its mirror).
        progress: called with (documents of the file done, documents in the file) after
            each upsert and each page compared.

    Returns:
        A :class:`PushReport`.

    Raises:
        MissingExtraError: qdrant-client is not installed.
        QdrantUnavailableError: the server cannot be reached or refused a request.
        CollectionMismatchError: the collection has another vector size, comparator or
            storage, holds points that edge-colbert did not push, or points pushed from
            another file (without ``replace``).
        ModelMismatchError: the collection holds another model's vectors.
        InvalidInputError: ``batch_size`` < 1 or an unknown ``vectors``.

    Not thread-safe for one collection: run one push per collection at a time.
    """
    _models()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer; got {batch_size!r}.")
    if vectors not in ("float32", "int8"):
        raise InvalidInputError(f"vectors must be 'float32' or 'int8'; got {vectors!r}.")
    if not isinstance(collection, str) or not collection:
        raise InvalidInputError(f"collection must be a non-empty name; got {collection!r}.")
    options = _PushOptions(batch_size, vectors, index_metadata, replace, progress)
    if isinstance(index_or_path, Index):
        with _talking_to(client, collection):
            return _push(index_or_path, client, collection, options)
    with Index(Path(index_or_path), readonly=True) as index, _talking_to(client, collection):
        return _push(index, client, collection, options)


@dataclass(frozen=True)
class _PushOptions:
    batch_size: int
    storage: Storage
    index_metadata: bool
    replace: bool
    progress: Callable[[int, int], None] | None


def _pages_of(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    iterator = iter(items)
    while page := list(itertools.islice(iterator, size)):
        yield page


def _push(index: Index, client: QdrantClient, collection: str, options: _PushOptions) -> PushReport:
    store = index.store
    model, dim = store.model_identity, store.dim
    state = _ensure_collection(client, collection, dim, model, options.storage)
    source = _source_of(index)
    by_rowid = _claim_source(
        client, collection, state, source, replace=options.replace, mirror=True
    )
    done_keys = set((client.get_collection(collection).payload_schema or {}).keys())
    total = store.count()
    done = sent = unchanged = 0
    # The file's ids page by page (Store.ids reads them in pages), each page compared with
    # the points of the same ids: only one page of ids, payloads and points is in memory.
    for ids in _pages_of(store.ids(), COMPARE_PAGE):
        wanted = {point_id(doc_id): rowid for doc_id, rowid in store.rowids_of(ids).items()}
        stored = {
            str(record.id): (
                int((record.payload or {}).get("rowid", -1)),
                str((record.payload or {}).get("digest", "")),
            )
            for record in client.retrieve(
                collection, ids=list(wanted), with_payload=["rowid", "digest"], with_vectors=False
            )
        }
        if by_rowid:
            todo = sorted(r for pid, r in wanted.items() if stored.get(pid, (-1, ""))[0] != r)
        else:
            todo = _changed_by_digest(index, wanted, stored)
        unchanged += len(wanted) - len(todo)
        done += len(wanted) - len(todo)
        for chunk in _batches(todo, options.batch_size):
            points = [point for _, _, _, point in _points(index, chunk)]
            if points:
                if options.index_metadata:
                    metadata = [p.payload["metadata"] for p in points]
                    _index_keys(client, collection, metadata, done_keys)
                client.upsert(collection, points=points, wait=True)
                sent += len(points)
            done += len(chunk)
            if options.progress is not None:
                options.progress(min(done, total), total)
        if options.progress is not None and not todo:
            options.progress(min(done, total), total)
    deleted = _delete_gone(index, client, collection)
    if not by_rowid:
        _complete(client, collection, state, source)
    logger.info(
        "push to %s: %d sent, %d unchanged (compared %s), %d deleted",
        collection,
        sent,
        unchanged,
        "by rowid" if by_rowid else "by digest",
        deleted,
    )
    return PushReport(upserted=sent, deleted=deleted, unchanged=unchanged)


def _delete_gone(index: Index, client: QdrantClient, collection: str) -> int:
    """Delete the points whose document the file no longer holds, a scroll page at a time
    (each page's ids looked up in the file); returns how many."""
    models = _models()
    deleted = 0
    offset: Any = None
    while True:
        records, offset = client.scroll(
            collection, limit=SCROLL_PAGE, offset=offset, with_payload=["id"], with_vectors=False
        )
        doc_of = {str(r.id): str((r.payload or {}).get("id", "")) for r in records}
        present = index.store.rowids_of(sorted(set(doc_of.values())))
        doomed = [
            pid
            for pid, doc_id in doc_of.items()
            if doc_id not in present or point_id(doc_id) != pid
        ]
        if doomed:
            # The next page starts at ``offset``, a point id after every one of this page, so
            # deleting these does not move it.
            client.delete(collection, points_selector=models.PointIdsList(points=doomed), wait=True)
            deleted += len(doomed)
        if offset is None:
            return deleted


def _changed_by_digest(
    index: Index, wanted: Mapping[str, int], stored: Mapping[str, tuple[int, str]]
) -> list[int]:
    """Rowids whose point is missing or carries another digest (reads every document)."""
    have_digest = {pid: digest for pid, (_, digest) in stored.items()}
    todo: list[int] = []
    rowids = sorted(wanted.values())
    for chunk in _batches(rowids, 1024):
        docs = index.store.documents(chunk)
        pack = index.store.vectors(chunk)
        for i, rowid in enumerate(pack.rowids.tolist()):
            doc = docs.get(rowid)
            if doc is None:
                continue
            codes = pack.codes[pack.offsets[i] : pack.offsets[i + 1]]
            if have_digest.get(point_id(doc.id)) != _digest(doc, codes):
                todo.append(rowid)
    return todo


# ---------------------------------------------------------------------------------- search


def _condition(models: Any, key: str, value: Any) -> Any:
    """A Qdrant condition for metadata ``key`` equal to ``value`` with JSON's types kept, as
    :mod:`edge_colbert.filters` compares (numbers by value, ``1`` never equal to ``"1"``)."""
    path = _payload_key(key)
    if value is None:
        return models.IsNullCondition(is_null=models.PayloadField(key=path))
    if isinstance(value, (bool, str)):
        return models.FieldCondition(key=path, match=models.MatchValue(value=value))
    number = float(value) if abs(value) >= 2**63 else value
    return models.FieldCondition(key=path, range=models.Range(gte=number, lte=number))


def qdrant_filter(where: Mapping[str, Any]) -> qmodels.Filter | None:
    """The Qdrant filter for an edge-colbert ``where`` (equality; a list means any of).

    Checked exactly as :meth:`Index.search <edge_colbert.index.Index.search>` checks it, so
    the same ``where`` is refused with the same message. Returns None when some list is
    empty ("any of nothing" matches nothing). Thread-safe.

    Raises:
        InvalidInputError: a key or value :mod:`edge_colbert.filters` refuses.
    """
    models = _models()
    where_clause(where)  # the same checks, with the same messages, as the index applies
    must: list[Any] = []
    for key, value in where.items():
        if isinstance(value, (list, tuple)):
            if not value:
                return None
            must.append(models.Filter(should=[_condition(models, key, v) for v in value]))
        else:
            must.append(_condition(models, key, value))
    result: qmodels.Filter = models.Filter(must=must)
    return result


def search(
    client: QdrantClient,
    collection: str,
    encoder: Encoder,
    query: str,
    k: int = 10,
    where: Mapping[str, Any] | None = None,
    *,
    exact: bool = False,
) -> list[Hit]:
    """The ``k`` documents of highest MaxSim with ``query`` in a collection made by :func:`push`:
    the index's ``search(..., mode="semantic", exhaustive=True)`` (Qdrant has no BM25 side).

    Args:
        client: a ``qdrant_client.QdrantClient``.
        collection: the collection name.
        encoder: the model that wrote the index (checked against the collection).
        query: the question.
        k: how many hits.
        where: metadata filter as in :meth:`Index.search <edge_colbert.index.Index.search>`.
        exact: ask a server for a full scan instead of its HNSW graph (local mode always
            scans).

    Returns:
        :class:`~edge_colbert.index.Hit` objects, best first.

    Raises:
        InvalidInputError: empty query, ``k < 1``, a filter the index would refuse.
        ModelMismatchError: the collection holds another model's vectors.
        CollectionMismatchError, QdrantUnavailableError: as for :func:`push`.

    Thread-safe if the client is (the HTTP client is; one local-mode client is not).
    """
    models = _models()
    check_text(query, "the query")
    k = check_k(k)
    if where is not None and not isinstance(where, Mapping):
        raise InvalidInputError(
            f"where must be a dict of metadata key -> value; got {type(where).__name__}."
        )
    query_filter = qdrant_filter(where) if where else None
    if where and query_filter is None:
        return []
    with _talking_to(client, collection):
        if not client.collection_exists(collection):
            raise CollectionMismatchError(
                f"there is no collection {collection!r} at {_where_from(client)}; create it "
                "with edge_colbert.qdrant.push (or `edge-colbert push`)."
            )
        # An index written before the model identity hashed the preprocessing records the
        # encoder's legacy identity, and so does a collection pushed from it.
        legacy = getattr(encoder, "legacy_identity", None)
        state = _check_collection(
            client, collection, encoder.dim, encoder.identity, None, also=legacy
        )
        if not state:
            raise CollectionMismatchError(
                f"collection {collection!r} was not made by edge-colbert's push."
            )
        vectors = encoder.encode_queries([query])[0]
        response = client.query_points(
            collection,
            query=vectors.astype(np.float32).tolist(),
            using=VECTOR_NAME,
            query_filter=query_filter,
            search_params=models.SearchParams(exact=exact),
            limit=k,
            with_payload=["id", "text", "metadata"],
        )
    hits: list[Hit] = []
    for point in response.points:
        payload = point.payload or {}
        score = float(point.score) if math.isfinite(point.score) else math.nan
        # Qdrant ranks by MaxSim alone: as Index.search(mode="semantic"), score is semantic.
        hits.append(
            Hit(
                str(payload.get("id", "")),
                score,
                str(payload.get("text", "")),
                dict(payload.get("metadata") or {}),
                semantic=score,
            )
        )
    return hits


def open_client(target: str, *, timeout: int | None = None) -> QdrantClient:
    """A client for ``target``: an ``http(s)://`` URL (a server), ``:memory:``, or a folder
    for local mode. The API key of a server is read from ``$QDRANT_API_KEY``.

    Raises:
        MissingExtraError: qdrant-client is not installed.
    """
    module = require("qdrant_client", EXTRA)
    if target.startswith(("http://", "https://")):
        client: QdrantClient = module.QdrantClient(
            url=target,
            api_key=os.environ.get("QDRANT_API_KEY") or None,
            timeout=timeout,
            check_compatibility=False,
        )
        return client
    if target == ":memory:":
        return module.QdrantClient(":memory:")  # type: ignore[no-any-return]
    folder = Path(target)
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(
            f"{target} is a file; give a folder for Qdrant's local mode or an http(s):// URL."
        )
    try:
        return module.QdrantClient(path=str(folder))  # type: ignore[no-any-return]
    except RuntimeError as error:  # the folder is locked by another local-mode client
        raise QdrantUnavailableError(
            f"cannot open Qdrant's local storage {target}: {error}"
        ) from error
