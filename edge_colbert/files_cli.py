"""The folder commands: ``index`` (its run), ``watch`` and ``ls``, and how a hit's place in
its file is printed (``path:line``, ``path:page``).

Imported by ``cli`` at start-up, so nothing heavy is imported at module level.
Thread-safety: the functions keep no state; each command runs in the calling thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_colbert.discovery import Rules
    from edge_colbert.encoder import Encoder
    from edge_colbert.sync import SyncReport

_FILES_HINT = 'pip install "edge-colbert[files]"'


def _at_least_one(value: str) -> int:
    from edge_colbert.cli import _positive_int

    return _positive_int(value)


def add_folder_options(parser: argparse.ArgumentParser) -> None:
    """``--exclude``, ``--include`` and ``--threads``: the options ``index`` and ``watch``
    share."""
    parser.add_argument(
        "--exclude",
        metavar="GLOB",
        action="append",
        default=[],
        help="skip files and folders matching GLOB (repeatable): a name such as "
        "'*.rst.txt' or '_sources', or a path from the folder such as 'old/*'",
    )
    parser.add_argument(
        "--include",
        metavar="GLOB",
        action="append",
        default=[],
        help="also index files matching GLOB whose suffix is not read by default "
        "(repeatable), e.g. '*.log'",
    )
    parser.add_argument(
        "--threads",
        metavar="N",
        type=_at_least_one,
        default=None,
        help="encoder threads (default: onnxruntime's choice, one per core)",
    )


def register(commands: argparse._SubParsersAction[Any], shared: argparse.ArgumentParser) -> None:
    """Add ``watch`` and ``ls``."""
    watch = commands.add_parser(
        "watch",
        parents=[shared],
        help="index folders and keep the index in step with them",
        description="Index what changed under PATH since the last run, then follow it: "
        "created, modified, renamed and deleted files are reflected within seconds, in "
        "batches. Ctrl-C stops; a later watch or index resumes. Needs "
        f"{_FILES_HINT}.",
    )
    watch.add_argument("db", metavar="DB", help="the index file (SQLite)")
    watch.add_argument("paths", metavar="PATH", nargs="+", help="folders or files to follow")
    add_folder_options(watch)
    watch.add_argument(
        "--debounce",
        metavar="MS",
        type=_at_least_one,
        default=400,
        help="quiet milliseconds that close a batch of changes (default 400)",
    )
    watch.set_defaults(func=run_watch)

    ls = commands.add_parser(
        "ls",
        parents=[shared],
        help="list the files in an index",
        description="The files DB holds, with their chunk counts, modification times and "
        "when they were indexed.",
    )
    ls.add_argument("db", metavar="DB", help="the index file")
    ls.add_argument("--json", action="store_true", help="print the list as JSON")
    ls.set_defaults(func=run_ls)


def _rules(args: argparse.Namespace) -> Rules:
    from edge_colbert.discovery import Rules

    return Rules(exclude=tuple(args.exclude), include=tuple(args.include))


def _encoder(args: argparse.Namespace) -> Encoder:
    from edge_colbert.encoder import Encoder

    return Encoder(args.model, threads=args.threads)


def _on_skip(path: Path, reason: str) -> None:
    from tqdm import tqdm

    # tqdm.write keeps the line from tearing a progress bar that is being drawn.
    tqdm.write(f"skipped {_shown(path)}: {reason}", file=sys.stderr)


def _shown(path: Path | str) -> str:
    """A path for a message line; a name that is not UTF-8 shows its bytes as ``\\xNN``."""
    from edge_colbert.sync import stored_name

    return stored_name(str(path))[0]


def summary(report: SyncReport, seconds: float) -> str:
    """The line that ends an ``index`` run (and each ``watch`` batch)."""
    files = "file" if report.indexed == 1 else "files"
    chunks = "chunk" if report.chunks == 1 else "chunks"
    line = (
        f"{report.indexed} {files} indexed ({report.chunks} {chunks}), {report.unchanged} "
        f"unchanged, {report.skipped} skipped, {report.removed} removed in {seconds:.1f} s"
    )
    if report.tokens and seconds > 0:
        line += (
            f" ({report.chunks / seconds:,.1f} chunks/s, {report.tokens / seconds:,.0f} tokens/s)"
        )
    if report.reused:
        line += f"; {report.reused} unchanged chunks kept"
    if report.needs_extra:
        line += f"; {report.needs_extra} PDF/Office/legacy-encoded files need {_FILES_HINT}"
    return line


def run_index(args: argparse.Namespace) -> int:
    """``edge-colbert index DB PATH...``."""
    from tqdm import tqdm

    from edge_colbert.cli import _open_index, _say
    from edge_colbert.discovery import check_paths
    from edge_colbert.errors import InvalidInputError
    from edge_colbert.sync import sync_files

    db = Path(args.db)
    if db.is_dir():
        raise InvalidInputError(f"{args.db} is a folder; give the index a file name, e.g. notes.db")
    paths = check_paths(args.paths)  # a missing PATH fails here, before the file is created
    encoder = _encoder(args)
    began = time.perf_counter()
    bar = tqdm(
        unit="chunk",
        desc="encoding",
        disable=args.quiet or not sys.stderr.isatty(),
        leave=False,
        file=sys.stderr,
    )
    try:
        with _open_index(
            db,
            encoder,
            readonly=False,
            pool_factor=getattr(args, "pool_factor", None),
            codec=getattr(args, "codec", None),
        ) as index:
            report = sync_files(
                index,
                encoder,
                paths,
                exclude=[db],
                rules=_rules(args),
                prune=not args.no_prune,
                on_skip=_on_skip,
                bar=bar,
            )
    finally:
        bar.close()
    _say(args, summary(report, time.perf_counter() - began))
    return 0


def run_watch(args: argparse.Namespace) -> int:
    """``edge-colbert watch DB PATH...``: runs until Ctrl-C (exit 0)."""
    import importlib.util

    from edge_colbert.cli import _open_index, _say, _warn
    from edge_colbert.discovery import check_paths
    from edge_colbert.errors import EdgeColbertError, InvalidInputError
    from edge_colbert.watch import watch_folders

    db = Path(args.db)
    if db.is_dir():
        raise InvalidInputError(f"{args.db} is a folder; give the index a file name, e.g. notes.db")
    paths = check_paths(args.paths)
    if importlib.util.find_spec("watchfiles") is None:  # before the index file is created
        raise EdgeColbertError(f"watch mode needs watchfiles: {_FILES_HINT}")
    encoder = _encoder(args)
    began = [time.perf_counter()]

    def on_batch(report: SyncReport, first: bool) -> None:
        seconds = time.perf_counter() - began[0]
        if first:
            _say(args, summary(report, seconds))
            _say(args, f"watching {', '.join(map(_shown, paths))} (Ctrl-C stops)")
        elif report.indexed or report.removed or report.skipped:
            _say(args, f"{time.strftime('%H:%M:%S')}  {summary(report, seconds)}")
        sys.stdout.flush()
        began[0] = time.perf_counter()

    with _open_index(db, encoder, readonly=False) as index:
        try:
            watch_folders(
                index,
                encoder,
                paths,
                rules=_rules(args),
                exclude_files=[db],
                on_skip=_on_skip,
                on_batch=on_batch,
                debounce_ms=args.debounce,
            )
        except KeyboardInterrupt:
            _warn("stopped watching; what was indexed is kept")
    return 0


def run_ls(args: argparse.Namespace) -> int:
    """``edge-colbert ls DB``."""
    from edge_colbert.cli import _existing_index, _open_index, _out, _say, display_path
    from edge_colbert.sync import stored_files

    path = _existing_index(args.db)
    with _open_index(path, None, readonly=True) as index:
        stored = stored_files(index)
    rows: list[dict[str, Any]] = [
        {
            "path": key,
            "chunks": len(stored[key].chunks),
            "mtime": stored[key].mtime,
            "indexed": stored[key].indexed,
            "origin": stored[key].origin,
        }
        for key in sorted(stored)
    ]
    if args.json:
        _out(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for row in rows:
        _out(
            f"{row['chunks']:>6}  {_when(row['mtime'])}  {_when(row['indexed'])}  "
            f"{display_path(row['path'])}"
        )
    total = sum(int(row["chunks"]) for row in rows)
    _say(args, f"{len(rows)} files, {total} chunks (columns: chunks, modified, indexed, path)")
    return 0


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds)) if seconds else "-" * 16


def hit_location(metadata: Mapping[str, Any]) -> str:
    """Where in its file a hit is, to print after the path: ``:42`` (the first line, for
    text and code), ``:3`` (the page of a PDF, the slide of a presentation), ``:ch3`` (an
    e-book chapter), then the heading path in parentheses when there is one; ``""`` for a
    document added through the API."""
    place = ""
    for key in ("page", "slide", "line"):
        value = metadata.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            place = f":{value}"
            break
    else:
        chapter = metadata.get("chapter")
        if isinstance(chapter, int) and not isinstance(chapter, bool):
            place = f":ch{chapter}"
    heading = metadata.get("heading")
    if isinstance(heading, str) and heading:
        place += f"  ({heading})"
    return place
