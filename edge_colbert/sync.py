"""Keep an index in step with files on disk: what ``edge-colbert index`` does.

Each file becomes chunks with ids ``"{absolute path}#{n}"`` and metadata ``path``, ``chunk``,
``chunks`` (how many the file has), ``start``/``end`` (character offsets in the file's text),
``mtime`` and ``sha256`` (of the text). A run re-encodes only files whose text changed,
removes chunks past a shrunken file's new count, and removes the chunks of files that are
gone from (or no longer readable under) the paths it was given.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from edge_colbert.chunking import (
    UnreadableFileError,
    chunk_text,
    discover_files,
    read_text_file,
)

if TYPE_CHECKING:
    from edge_colbert.encoder import Encoder
    from edge_colbert.index import Index

logger = logging.getLogger(__name__)

# Chunks sent to Index.add at once: large enough to batch the encoder well, small enough that
# Ctrl-C or a crash loses little work.
ADD_BATCH = 64
# SQLite's own side files are never text to index.
_SIDE_SUFFIXES = ("", "-wal", "-shm", "-journal")


@dataclass
class StoredFile:
    """What the index holds about one file: the ids of its chunks by number, the
    ``chunks`` counts and text hashes they record."""

    ids: dict[int, str] = field(default_factory=dict)
    counts: set[int] = field(default_factory=set)
    hashes: set[str] = field(default_factory=set)

    def matches(self, sha256: str) -> bool:
        """Whether the stored chunks are complete and all of this exact text."""
        return (
            self.hashes == {sha256}
            and len(self.counts) == 1
            and set(self.ids) == set(range(next(iter(self.counts))))
        )


@dataclass
class SyncReport:
    """What a run did, for the summary line."""

    indexed: int = 0
    unchanged: int = 0
    skipped: int = 0
    removed: int = 0
    chunks: int = 0


def _stored_documents(index: Index) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every (id, metadata) of the index."""
    yield from index.metadata()


def stored_files(index: Index) -> dict[str, StoredFile]:
    """The files an index holds chunks of, by their stored absolute path."""
    files: dict[str, StoredFile] = {}
    for doc_id, metadata in _stored_documents(index):
        path, number = metadata.get("path"), metadata.get("chunk")
        if not isinstance(path, str) or not isinstance(number, int):
            continue  # added through the API, not by `index`: not ours to manage
        stored = files.setdefault(path, StoredFile())
        stored.ids[number] = doc_id
        count, sha = metadata.get("chunks"), metadata.get("sha256")
        stored.counts.add(count if isinstance(count, int) else -1)
        stored.hashes.add(sha if isinstance(sha, str) else "")
    return files


def absolute(path: str | os.PathLike[str]) -> str:
    """The absolute, normalized path as text: the key a file is stored under.

    Not ``Path.resolve()``: a file reached through a symbolic link keeps the name the person
    gave, so that its chunks stay under the folder that was indexed.
    """
    return os.path.abspath(path)  # noqa: PTH100


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def sync_files(
    index: Index,
    encoder: Encoder,
    paths: Iterable[str | os.PathLike[str]],
    *,
    exclude: Iterable[Path] = (),
    prune: bool = True,
    progress: bool = False,
    on_skip: Callable[[Path, str], None] | None = None,
) -> SyncReport:
    """Bring the chunks of the text files under ``paths`` up to date in ``index``.

    Args:
        index: an index open for writing.
        encoder: the index's encoder; its window (``doc_maxlen``) sizes the chunks.
        paths: files and folders, as for :func:`discover_files`.
        exclude: files never to index (the index file itself, with its ``-wal``/``-shm``).
        prune: remove the chunks of files under ``paths`` that are gone or unreadable.
        progress: show a tqdm bar on stderr.
        on_skip: called with each file that is skipped and why (empty, binary, not UTF-8...).

    Raises:
        InvalidInputError: a path does not exist.
    """
    given = list(paths)
    found = list(discover_files(given))
    excluded = {absolute(f"{file}{suffix}") for file in exclude for suffix in _SIDE_SUFFIXES}
    roots = [absolute(p) for p in given]
    stored = stored_files(index)
    report = SyncReport()
    batch = _Batch(index)
    seen: set[str] = set()
    kept: set[str] = set()
    bar = tqdm(found, unit="file", disable=not progress, leave=False)
    for file in bar:
        key = absolute(file)
        if key in excluded or key in seen:
            continue
        seen.add(key)
        old = stored.get(key)
        try:
            text = read_text_file(file)
        except UnreadableFileError as error:
            _skip(report, file, error.reason, on_skip)
            continue
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if old is not None and old.matches(sha):
            report.unchanged += 1
            kept.add(key)
            continue
        chunks = chunk_text(
            text, max_tokens=encoder.manifest.doc_maxlen, count_tokens=encoder.count_document_tokens
        )
        if not chunks:
            _skip(report, file, "empty file", on_skip)
            continue
        if old is not None:
            # Chunks past the new count would otherwise survive as stale text.
            batch.delete([i for n, i in old.ids.items() if n >= len(chunks)])
        mtime = file.stat().st_mtime
        for number, chunk in enumerate(chunks):
            batch.add(
                f"{key}#{number}",
                chunk.text,
                {
                    "path": key,
                    "chunk": number,
                    "chunks": len(chunks),
                    "start": chunk.start,
                    "end": chunk.end,
                    "mtime": mtime,
                    "sha256": sha,
                },
            )
        logger.info("%s: %d chunks", file, len(chunks))
        report.indexed += 1
        report.chunks += len(chunks)
        kept.add(key)
    batch.flush()
    bar.close()
    if prune:
        # Gone, now empty or now unreadable: the old chunks no longer say what the file says.
        for path, old in stored.items():
            if _under(path, roots) and path not in kept:
                batch.delete(list(old.ids.values()))
                report.removed += 1
    return report


def _skip(
    report: SyncReport, file: Path, reason: str, on_skip: Callable[[Path, str], None] | None
) -> None:
    report.skipped += 1
    logger.debug("skipped %s: %s", file, reason)
    if on_skip is not None:
        on_skip(file, reason)


class _Batch:
    """Adds in batches of :data:`ADD_BATCH` chunks; deletes right away."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.metadata: list[dict[str, Any]] = []

    def add(self, doc_id: str, text: str, metadata: dict[str, Any]) -> None:
        self.ids.append(doc_id)
        self.texts.append(text)
        self.metadata.append(metadata)
        if len(self.ids) >= ADD_BATCH:
            self.flush()

    def delete(self, ids: list[str]) -> None:
        if ids:
            self.index.delete(ids)

    def flush(self) -> None:
        if self.ids:
            self.index.add(self.texts, ids=self.ids, metadata=self.metadata)
            self.ids, self.texts, self.metadata = [], [], []
