"""Keep an index in step with files on disk: what ``edge-colbert index`` and ``watch`` do.

Each file becomes chunks (:mod:`edge_colbert.extract` gives sections, :func:`chunk_text`
cuts them to the model's window) with ids ``"{path}#{hash}"``, where ``hash`` is the first
16 hex digits of the chunk text's SHA-256: an edited file re-encodes only the chunks whose
text changed, and the others keep their vectors (their metadata is updated in place). See
:data:`CHUNK_KEYS` for the metadata.

Chunks of many files are gathered into large :meth:`Index.add` calls (:data:`ADD_CHUNKS`),
as the API is used at its best speed; a file's stale chunks are deleted only after its new
ones are committed. A crash loses at most the batch in flight, and the next run redoes any
file whose stored chunks are incomplete or out of date.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_colbert.chunking import UnreadableFileError, chunk_text
from edge_colbert.discovery import (
    DEFAULT_RULES,
    FOLDER,
    NAMED,
    Found,
    Rules,
    check_paths,
    walk,
    walk_folder,
)
from edge_colbert.extract import MAX_FILE_BYTES, FilesExtraMissingError, extract_sections
from edge_colbert.validation import metadata_json

if TYPE_CHECKING:
    from tqdm import tqdm

    from edge_colbert.encoder import Encoder
    from edge_colbert.index import Index

logger = logging.getLogger(__name__)

# Chunks per Index.add call: the API's own encoder batch, so the folder path encodes at the
# API's speed; small enough that Ctrl-C or a crash loses at most a minute or so of work.
ADD_CHUNKS = 1024
# The metadata of every chunk `index` stores. `chunks` (the file's chunk count) is on the
# file's last chunk only: the file is complete when chunks 0..chunks-1 are all there.
CHUNK_KEYS = (
    *("path", "origin", "chunk", "size", "mtime", "mtime_ns", "indexed"),
    *("page", "slide", "chapter", "heading", "line", "end_line", "chunks", "path_hex"),
)
# Reclaim free pages (VACUUM) when at least this share of the file is free after a run.
RECLAIM_SHARE = 0.25
RECLAIM_MIN_BYTES = 1 << 20
# SQLite's own side files are never documents.
_SIDE_SUFFIXES = ("", "-wal", "-shm", "-journal")

OnSkip = Callable[[Path, str], None]


@dataclass
class StoredFile:
    """The chunks the index holds of one file: metadata by id. Not thread-safe (a plain
    record; read it from one thread or copy it)."""

    chunks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        """How the file came in: ``folder`` (walked) or ``named``; ``folder`` when unknown."""
        origins = {meta.get("origin") for meta in self.chunks.values()}
        return NAMED if origins == {NAMED} else FOLDER

    def disk_path(self, key: str) -> str | bytes:
        """Where the file is on disk (its raw bytes when the name is not valid UTF-8)."""
        for meta in self.chunks.values():
            raw = meta.get("path_hex")
            if isinstance(raw, str):
                try:
                    return bytes.fromhex(raw)
                except ValueError:
                    break
        return key

    def current(self, size: int, mtime_ns: int, origin: str) -> bool:
        """Whether the stored chunks are complete and were made from a file of this size and
        modification time (so the file need not be read again)."""
        metas = list(self.chunks.values())
        counts = {m["chunks"] for m in metas if isinstance(m.get("chunks"), int)}
        if len(counts) != 1 or len(metas) != next(iter(counts)):
            return False
        numbers = {m.get("chunk") for m in metas}
        return (
            numbers == set(range(len(metas)))
            and all(m.get("size") == size and m.get("mtime_ns") == mtime_ns for m in metas)
            and self.origin == origin
        )

    @property
    def indexed(self) -> float:
        """When the newest of its chunks was encoded (Unix time)."""
        times = [m.get("indexed") for m in self.chunks.values()]
        return max((t for t in times if isinstance(t, (int, float))), default=0.0)

    @property
    def mtime(self) -> float:
        """The file's modification time when it was last read."""
        times = [m.get("mtime") for m in self.chunks.values()]
        return max((t for t in times if isinstance(t, (int, float))), default=0.0)


@dataclass
class SyncReport:
    """What a run did, for the summary line. Not thread-safe (a plain record)."""

    indexed: int = 0
    unchanged: int = 0
    skipped: int = 0
    removed: int = 0
    chunks: int = 0
    reused: int = 0
    tokens: int = 0
    needs_extra: int = 0
    encode_seconds: float = 0.0


def stored_files(index: Index) -> dict[str, StoredFile]:
    """The files an index holds chunks of, by their stored path (chunks added through the
    API, without ``path`` and ``chunk`` metadata, are not files and are left out)."""
    files: dict[str, StoredFile] = {}
    for doc_id, metadata in index.metadata():
        path, number = metadata.get("path"), metadata.get("chunk")
        if isinstance(path, str) and isinstance(number, int) and not isinstance(number, bool):
            files.setdefault(path, StoredFile()).chunks[doc_id] = metadata
    return files


def absolute(path: str | os.PathLike[str]) -> str:
    """The absolute, normalized path as text: the key a file is stored under.

    Not ``Path.resolve()``: a file reached through a symbolic link keeps the name the person
    gave, so that its chunks stay under the folder that was indexed. A name that is not valid
    UTF-8 shows its bad bytes as ``\\xNN`` (see :func:`stored_name`).
    """
    return stored_name(os.path.abspath(path))[0]  # noqa: PTH100


def stored_name(path: str) -> tuple[str, str | None]:
    """A file name as it is stored: the text, and the raw bytes in hex when the name is not
    valid UTF-8 (the text then shows each bad byte as ``\\xNN``, and the hex keeps the name
    exactly, so the file can be found again)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(path)
        return raw.decode("utf-8", errors="backslashreplace"), raw.hex()
    return path, None


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


class FolderSync:
    """Brings an index's file chunks up to date, in batches across files.

    Not thread-safe: one instance per writing thread (the index itself may be shared).

    Args:
        index: an index open for writing.
        encoder: the index's encoder; its window (``doc_maxlen``) sizes the chunks.
        rules: exclude/include globs of folder walks.
        exclude_files: files never to index (the index file itself).
        on_skip: called with each file that is skipped and why.
        bar: a tqdm bar counting chunks, or None.
        max_bytes: the largest file read (bigger ones are skipped, named).
        add_chunks: chunks per :meth:`Index.add` call.
    """

    def __init__(
        self,
        index: Index,
        encoder: Encoder,
        *,
        rules: Rules = DEFAULT_RULES,
        exclude_files: Iterable[Path] = (),
        on_skip: OnSkip | None = None,
        bar: tqdm[Any] | None = None,
        max_bytes: int = MAX_FILE_BYTES,
        add_chunks: int = ADD_CHUNKS,
    ) -> None:
        self.index = index
        self.encoder = encoder
        self.rules = rules
        self.excluded = {
            absolute(f"{file}{suffix}") for file in exclude_files for suffix in _SIDE_SUFFIXES
        }
        self.on_skip = on_skip
        self.bar = bar
        self.max_bytes = max_bytes
        self.add_chunks = add_chunks
        self.report = SyncReport()
        self.stored: dict[str, StoredFile] = {}
        self._ids: list[str] = []
        self._texts: list[str] = []
        self._metas: list[dict[str, Any]] = []
        self._tokens = 0
        self._deletes: list[str] = []
        self._updates: dict[str, dict[str, Any]] = {}
        self._file_encoded = False
        self._seen: set[str] = set()  # keys of the files looked at in this run
        self._began = time.perf_counter()

    # ------------------------------------------------------------------ runs

    def run(self, paths: Sequence[Path], *, prune: bool = True) -> SyncReport:
        """Index the files under ``paths`` and (``prune``) forget those that are gone from
        disk, no longer yielded by a walk, or now excluded; a file that was named on an
        earlier command line is kept while it exists and no exclude glob drops it."""
        self.stored = stored_files(self.index)
        self._seen = set()
        found_files = list(walk(paths, self.rules, self._skipped))
        for number, found in enumerate(found_files, start=1):
            if self.bar is not None:  # the bar counts encoded chunks; files read show here
                self.bar.set_description_str(f"file {number}/{len(found_files)}", refresh=False)
            self.file(found)
        if prune:
            roots = [(absolute(path), path) for path in paths]
            for key, old in self.stored.items():
                # A file seen this run is up to date, or was skipped and forgotten already.
                if key not in self._seen and self._prunable(key, old, roots):
                    self.forget(key)
        self.flush()
        return self.report

    def _prunable(self, key: str, old: StoredFile, roots: list[tuple[str, Path]]) -> bool:
        inside = [root for text, root in roots if _under(key, [text])]
        if not inside:
            return False  # outside this run's paths: not looked at
        if not os.path.exists(old.disk_path(key)):  # noqa: PTH110
            return True
        if old.origin == FOLDER:
            return True  # the walk no longer yields it (now excluded, hidden or unreadable)
        root = inside[0]
        relative = os.path.relpath(key, absolute(root)).replace(os.sep, "/")
        return relative != "." and self.rules.excluded(relative)

    def update(self, changed: Iterable[Path], roots: Sequence[Path]) -> SyncReport:
        """Reflect changed paths (watch mode): a file that exists and that a walk of one of
        ``roots`` would yield is indexed; a path that is gone is forgotten, with everything
        stored under it (a deleted or renamed folder); a new folder is walked."""
        self.stored = stored_files(self.index)
        for path in sorted(set(changed)):
            root = next((r for r in roots if r == path or r in path.parents), None)
            if root is None:
                continue
            if path.is_dir():
                if path == root or self.rules.admits_folder(path, root):
                    for found in walk_folder(path, root, self.rules, self._skipped):
                        self.file(found)
            elif path.is_file():
                if path == root or self.rules.admits(path, root):
                    self.file(Found(path, root, NAMED if path == root else FOLDER))
            else:
                gone = absolute(path)
                for key in [k for k in self.stored if _under(k, [gone])]:
                    self.forget(key)
        self.flush()
        return self.report

    # ------------------------------------------------------------------ files

    def file(self, found: Found) -> str | None:
        """Bring one file's chunks up to date; returns its key, or None when skipped."""
        text_key, raw_hex = stored_name(os.path.abspath(found.path))  # noqa: PTH100
        self._file_encoded = False  # set when one of its chunks is queued for encoding
        if text_key in self.excluded:
            return None
        self._seen.add(text_key)
        old = self.stored.get(text_key)
        try:
            info = found.stat if found.stat is not None else found.path.stat()
        except OSError as error:
            self._skip_file(found.path, text_key, old, _reason(error))
            return None
        if old is not None and old.current(info.st_size, info.st_mtime_ns, found.origin):
            self.report.unchanged += 1
            return text_key
        base = {
            "path": text_key,
            "origin": found.origin,
            "size": info.st_size,
            "mtime": info.st_mtime,
            "mtime_ns": info.st_mtime_ns,
        }
        if raw_hex is not None:
            base["path_hex"] = raw_hex
        try:
            new_ids = self._chunks(found.path, text_key, base, old)
        except FilesExtraMissingError as error:
            self.report.needs_extra += 1
            logger.info("skipped %s: %s", found.path, error.reason)
            self._forget_file(text_key, old)
            return None
        except UnreadableFileError as error:
            self._skip_file(found.path, text_key, old, error.reason)
            return None
        if not new_ids:
            self._skip_file(found.path, text_key, old, "no text in it")
            return None
        stale = [] if old is None else [i for i in old.chunks if i not in new_ids]
        self._deletes.extend(stale)
        if stale or self._file_encoded:
            self.report.indexed += 1
        else:
            self.report.unchanged += 1  # same chunks: at most their metadata moved
        return text_key

    def _chunks(
        self, path: Path, key: str, base: dict[str, Any], old: StoredFile | None
    ) -> set[str]:
        """Queue the file's chunks: new texts to encode, known ones to re-describe.

        Each chunk is queued when the next one is known, so that the last one, which carries
        the file's chunk count, is still at hand when the file ends.
        """
        window = self.encoder.manifest.doc_maxlen
        ids: set[str] = set()
        held: tuple[str, str, int, dict[str, Any]] | None = None
        try:
            for section in extract_sections(path, max_bytes=self.max_bytes):
                for chunk in chunk_text(
                    section.text, max_tokens=window, count_tokens=self.encoder.count_document_tokens
                ):
                    digest = hashlib.sha256(chunk.text.encode("utf-8")).hexdigest()[:16]
                    doc_id = f"{key}#{digest}"
                    repeat = 1
                    while doc_id in ids:  # the same text twice in one file
                        repeat += 1
                        doc_id = f"{key}#{digest}-{repeat}"
                    ids.add(doc_id)
                    meta = {
                        **base,
                        **_place(section.where, section.text, chunk.start, chunk.text),
                        "chunk": len(ids) - 1,
                    }
                    if held is not None:
                        self._queue(*held, old)
                    held = (doc_id, chunk.text, chunk.tokens, meta)
        except BaseException:
            # Half a file must not stay: drop what is queued, delete what was committed.
            self._drop_queued(key)
            self._deletes.extend(ids)
            raise
        if held is not None:
            held[3]["chunks"] = len(ids)
            self._queue(*held, old)
        return ids

    def _queue(
        self, doc_id: str, text: str, tokens: int, meta: dict[str, Any], old: StoredFile | None
    ) -> None:
        stored = None if old is None else old.chunks.get(doc_id)
        if stored is not None:
            # Same text, so same vectors: only the metadata may have moved (line, number...).
            meta["indexed"] = stored.get("indexed", 0.0)
            self.report.reused += 1
            if meta != stored:
                self._updates[doc_id] = meta
            return
        if len(self._ids) >= self.add_chunks:
            self.flush()
        meta["indexed"] = round(time.time(), 3)
        self._file_encoded = True
        self._ids.append(doc_id)
        self._texts.append(text)
        self._metas.append(meta)
        self._tokens += tokens

    def _drop_queued(self, key: str) -> None:
        prefix = f"{key}#"
        keep = [i for i, doc_id in enumerate(self._ids) if not doc_id.startswith(prefix)]
        self._ids = [self._ids[i] for i in keep]
        self._texts = [self._texts[i] for i in keep]
        self._metas = [self._metas[i] for i in keep]
        for doc_id in [d for d in self._updates if d.startswith(prefix)]:
            del self._updates[doc_id]

    def _skipped(self, path: Path, reason: str) -> None:
        self.report.skipped += 1
        logger.debug("skipped %s: %s", path, reason)
        if self.on_skip is not None:
            self.on_skip(path, reason)

    def _skip_file(self, path: Path, key: str, old: StoredFile | None, reason: str) -> None:
        """A file that cannot be read now: named, and its old chunks (which no longer say
        what the file says) removed."""
        self._skipped(path, reason)
        self._forget_file(key, old)

    def _forget_file(self, key: str, old: StoredFile | None) -> None:
        if old is not None:
            self._deletes.extend(old.chunks)
            self.report.removed += 1

    def forget(self, key: str) -> None:
        """Remove every chunk of a stored file."""
        self._forget_file(key, self.stored.get(key))

    # ------------------------------------------------------------------ writes

    def flush(self) -> None:
        """Write what is queued: new chunks in one :meth:`Index.add`, then the deletions of
        stale chunks, then metadata updates (each its own transaction, in that order, so a
        crash between them leaves a file that the next run sees as out of date)."""
        if self._ids:
            began = time.perf_counter()
            self.index.add(self._texts, ids=self._ids, metadata=self._metas)
            self.report.encode_seconds += time.perf_counter() - began
            self.report.chunks += len(self._ids)
            self.report.tokens += self._tokens
            if self.bar is not None:
                self.bar.update(len(self._ids))
                elapsed = max(time.perf_counter() - self._began, 1e-9)
                self.bar.set_postfix_str(f"{self.report.tokens / elapsed:,.0f} tokens/s")
            self._ids, self._texts, self._metas, self._tokens = [], [], [], 0
        if self._deletes:
            self.index.delete(list(dict.fromkeys(self._deletes)))
            self._deletes = []
        if self._updates:
            update_metadata(self.index, self._updates)
            self._updates = {}


def _place(where: Mapping[str, Any], section: str, start: int, text: str) -> dict[str, Any]:
    """Where a chunk is: the section's page/slide/heading, and for text formats the lines
    it spans (from the section's first line and the line breaks before the chunk)."""
    place = {key: value for key, value in where.items() if key != "line"}
    first = where.get("line")
    if isinstance(first, int):
        line = first + section.count("\n", 0, start)
        place["line"] = line
        place["end_line"] = line + text.count("\n")
    return place


def update_metadata(index: Index, updates: Mapping[str, Mapping[str, Any]]) -> None:
    """Replace the metadata of stored documents (their text and vectors stay), in one
    transaction; unknown ids are ignored.

    The texts are unchanged, so the vectors, centroid postings and the full-text index stay
    valid; only the JSON column is rewritten.
    """
    rows = [(metadata_json(meta, n), doc_id) for n, (doc_id, meta) in enumerate(updates.items())]
    with index.store.transaction() as conn:
        conn.executemany("UPDATE documents SET metadata = ? WHERE id = ?", rows)


def reclaim_space(index: Index) -> int:
    """Give the file's free pages back to the disk when deletions left at least
    :data:`RECLAIM_SHARE` of it free (``PRAGMA incremental_vacuum`` where the file allows
    it, else ``VACUUM``); returns the bytes given back."""
    conn = index.store.connection
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    if pages == 0 or free < RECLAIM_SHARE * pages or free * page_size < RECLAIM_MIN_BYTES:
        return 0
    before = pages * page_size
    mode = int(conn.execute("PRAGMA auto_vacuum").fetchone()[0])
    conn.execute("PRAGMA incremental_vacuum" if mode == 2 else "VACUUM")
    after = int(conn.execute("PRAGMA page_count").fetchone()[0]) * page_size
    logger.info("gave back %.1f MB of free pages", (before - after) / 1e6)
    return before - after


def _reason(error: OSError) -> str:
    from edge_colbert.extract import _os_reason

    return _os_reason(error)


def sync_files(
    index: Index,
    encoder: Encoder,
    paths: Iterable[str | os.PathLike[str]],
    *,
    exclude: Iterable[Path] = (),
    rules: Rules = DEFAULT_RULES,
    prune: bool = True,
    on_skip: OnSkip | None = None,
    bar: tqdm[Any] | None = None,
) -> SyncReport:
    """Bring the chunks of the files under ``paths`` up to date in ``index``: one
    :class:`FolderSync` run (see there), then free pages given back when many were freed.

    Raises:
        InvalidInputError: a path does not exist (before anything is written).
    """
    given = check_paths(paths)
    sync = FolderSync(index, encoder, rules=rules, exclude_files=exclude, on_skip=on_skip, bar=bar)
    report = sync.run(given, prune=prune)
    if report.removed:
        reclaim_space(index)
    return report


def iter_files(stored: Mapping[str, StoredFile]) -> Iterator[tuple[str, StoredFile]]:
    """The stored files in path order (what ``edge-colbert ls`` lists)."""
    for key in sorted(stored):
        yield key, stored[key]
