"""Watch mode: index what changed since the last run, then follow the folders.

Changes come from watchfiles (``files`` extra) in batches: one batch is what changed until
the folders were quiet for ``debounce_ms``. Each batch is reflected by a
:class:`~edge_colbert.sync.FolderSync` update with the same crash guarantees as a run of
``edge-colbert index``. An editor's save (write a temporary file, rename it over the
original) ends as one updated document: what is on disk when the batch is handled counts, so
the temporary file is gone by then and the original is re-read.

Not thread-safe: :func:`watch_folders` is one loop for one thread; stop it from another with
``stop_event``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_colbert.discovery import DEFAULT_RULES, Rules
from edge_colbert.errors import EdgeColbertError
from edge_colbert.extract import FILES_EXTRA_HINT
from edge_colbert.sync import FolderSync, SyncReport, absolute, reclaim_space

if TYPE_CHECKING:
    from edge_colbert.encoder import Encoder
    from edge_colbert.index import Index

logger = logging.getLogger(__name__)

DEFAULT_DEBOUNCE_MS = 400

OnBatch = Callable[[SyncReport, bool], None]


def watch_folders(
    index: Index,
    encoder: Encoder,
    paths: Sequence[Path],
    *,
    rules: Rules = DEFAULT_RULES,
    exclude_files: Iterable[Path] = (),
    on_skip: Callable[[Path, str], None] | None = None,
    on_batch: OnBatch | None = None,
    stop_event: threading.Event | None = None,
    debounce_ms: int = DEFAULT_DEBOUNCE_MS,
    catch_up: bool = True,
) -> None:
    """Index what changed under ``paths`` since the last run (``catch_up``), then reflect
    every later change until ``stop_event`` is set (or Ctrl-C raises KeyboardInterrupt).

    Args:
        index: an index open for writing.
        encoder: its encoder.
        paths: the folders (and files) to follow; they must exist.
        rules: exclude/include globs, as for ``index``.
        exclude_files: files never indexed (the index file itself).
        on_skip: called with each file skipped and why.
        on_batch: called after the catch-up run (``True``) and after each batch (``False``)
            with what it did.
        stop_event: set it to stop the loop within about 50 ms.
        debounce_ms: quiet time that closes a batch.
        catch_up: run a full ``index`` pass first.

    Raises:
        EdgeColbertError: watchfiles is not installed.
    """
    try:
        import watchfiles
    except ImportError:
        raise EdgeColbertError(f"watch mode needs watchfiles: {FILES_EXTRA_HINT}") from None
    excluded = list(exclude_files)
    roots = [Path(absolute(path)) for path in paths]
    if catch_up:
        sync = FolderSync(index, encoder, rules=rules, exclude_files=excluded, on_skip=on_skip)
        report = sync.run(roots, prune=True)
        if report.removed:
            reclaim_space(index)
        if on_batch is not None:
            on_batch(report, True)
    ignored = {absolute(f"{file}{suffix}") for file in excluded for suffix in ("", "-wal", "-shm")}
    ignored |= {f"{name}-journal" for name in ignored}
    default_filter = watchfiles.DefaultFilter()

    def wanted(change: Any, path: str) -> bool:
        return path not in ignored and bool(default_filter(change, path))

    for changes in watchfiles.watch(
        *roots,
        watch_filter=wanted,
        debounce=debounce_ms,
        step=50,
        stop_event=stop_event,
        raise_interrupt=True,
    ):
        changed = {Path(path) for _, path in changes}
        logger.debug("changes: %s", sorted(map(str, changed)))
        sync = FolderSync(index, encoder, rules=rules, exclude_files=excluded, on_skip=on_skip)
        report = sync.update(changed, roots)
        if on_batch is not None:
            on_batch(report, False)
