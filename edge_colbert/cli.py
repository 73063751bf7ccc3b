"""The ``edge-colbert`` command: index text files, search them, inspect and edit an index.

Every error a person can cause prints one line, ``edge-colbert: error: ...``, and exits 1
(2 for a usage error, 130 on Ctrl-C); ``-v`` adds the traceback. See ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sqlite3
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_colbert import __version__
from edge_colbert.codec import CODECS
from edge_colbert.errors import EdgeColbertError, InvalidInputError
from edge_colbert.files_cli import add_folder_options, hit_location
from edge_colbert.sync import absolute

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from edge_colbert.encoder import Encoder
    from edge_colbert.index import Hit, Index

PROG = "edge-colbert"
# The export step's package; imported only when the `export` command runs. Its dependency
# list is the `export` extra in pyproject.toml, read back from the package metadata.
EXPORT_PACKAGE = "edge_colbert_export"

Command = Callable[[argparse.Namespace], int]

# Subcommands that live beside the feature they drive, one module each. Every module has
# ``register(commands, shared)``, which adds its subparser and sets ``func``; it must import
# nothing heavy at module level, so that ``--help`` stays fast and a missing extra is reported
# only when its command runs.
COMMAND_MODULES: tuple[str, ...] = (
    "edge_colbert.server.command",
    "edge_colbert.push_cli",
    "edge_colbert.files_cli",
    "edge_colbert.maintenance_cli",
    "edge_colbert.mcp_server",
)


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``edge-colbert`` with all its subcommands."""
    # The shared options are accepted before and after the subcommand; SUPPRESS keeps a
    # subcommand from resetting a value given before it.
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--model", metavar="DIR", default=argparse.SUPPRESS)
    shared.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS)
    shared.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS)

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="ColBERT search over your text files: one SQLite file, no PyTorch.",
        epilog="Run `edge-colbert COMMAND --help` for a command's options. Docs: docs/cli.md",
    )
    parser.add_argument(
        "--model",
        metavar="DIR",
        default=None,
        help="model folder made by `edge-colbert export` (default: the bundled model, "
        "or $EDGE_COLBERT_MODEL)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="say more; show tracebacks"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=False, help="print only results and errors"
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    index = commands.add_parser(
        "index",
        parents=[shared],
        help="add or update files in an index",
        description="Chunk documents, web pages, e-books, notes and code and add them to DB "
        "(created if needed). Run it again to update: unchanged files are skipped, changed "
        "chunks re-encoded, and files gone from PATH removed. PDF, DOCX and PPTX need "
        'pip install "edge-colbert[files]".',
    )
    index.add_argument("db", metavar="DB", help="the index file (SQLite)")
    index.add_argument("paths", metavar="PATH", nargs="+", help="files or folders to index")
    index.add_argument(
        "--no-prune",
        action="store_true",
        help="keep the chunks of files that are gone from PATH instead of removing them",
    )
    index.add_argument(
        "--pool-factor",
        type=_positive_int,
        default=None,
        metavar="N",
        help="store about 1/N of each chunk's token vectors (Ward token pooling); recorded "
        "when DB is created (default 1: none)",
    )
    index.add_argument(
        "--codec",
        choices=CODECS,
        default=None,
        help="how token vectors are stored: int8 (64 bytes a token at 64-d, the default), "
        "residual4 (34) or residual2 (18); recorded when DB is created",
    )
    add_folder_options(index)
    index.set_defaults(func=_run_index)

    search = commands.add_parser(
        "search",
        parents=[shared],
        help="search an index",
        description="Rank the chunks of DB against QUERY and show the best-matching passages.",
    )
    search.add_argument(
        "dbs",
        metavar="DB",
        nargs="+",
        help="the index file; several (written by the same model) have their hits merged",
    )
    search.add_argument("query", metavar="QUERY", help="what to look for")
    search.add_argument("-k", type=_positive_int, default=5, help="number of results (default 5)")
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    search.add_argument(
        "--where",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="keep only chunks whose metadata KEY equals VALUE (repeatable; a path is "
        "made absolute, as `index` stores it)",
    )
    search.add_argument(
        "--exhaustive",
        action="store_true",
        help="score every chunk exactly instead of using the centroid prefilter",
    )
    search.add_argument(
        "--mode",
        choices=["hybrid", "semantic", "keyword"],
        default="hybrid",
        help="hybrid (default): keyword (BM25) and MaxSim scores fused; semantic: MaxSim "
        'alone; keyword: BM25 alone, no model loaded ("exact phrase" in double quotes)',
    )
    search.set_defaults(func=_run_search)

    info = commands.add_parser(
        "info", parents=[shared], help="describe an index", description="Counts, model and size."
    )
    info.add_argument("db", metavar="DB", help="the index file")
    info.add_argument("--json", action="store_true", help="print the figures as JSON")
    info.set_defaults(func=_run_info)

    delete = commands.add_parser(
        "delete",
        parents=[shared],
        help="delete chunks by id",
        description="Delete the chunks with these ids (ids are printed by `search --json`).",
    )
    delete.add_argument("db", metavar="DB", help="the index file")
    delete.add_argument("ids", metavar="ID", nargs="+", help="chunk ids")
    delete.set_defaults(func=_run_delete)

    export = commands.add_parser(
        "export",
        parents=[shared],
        help="turn a ColBERT checkpoint into a model folder (needs PyTorch)",
        description="Export CHECKPOINT (a Hugging Face id or a local folder) to the model "
        "folder OUTDIR. Needs the export extra: pip install 'edge-colbert[export]'.",
        epilog="Options not listed here are passed on to the export step unchanged.",
    )
    export.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint id or folder")
    export.add_argument("outdir", metavar="OUTDIR", help="the model folder to write")
    export.add_argument(
        "--dim", metavar="64|native", help="vector dimension (default 64; native keeps the model's)"
    )
    export.add_argument(
        "--quantize", choices=["int8", "fp16", "none"], help="weights of model.onnx (default int8)"
    )
    export.set_defaults(func=_run_export)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands, shared)
    return parser


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _out(text: str) -> None:
    """A line of the command's output on stdout."""
    sys.stdout.write(text + "\n")


def _say(args: argparse.Namespace, message: str) -> None:
    """A line of results for a person; nothing with -q."""
    if not args.quiet:
        _out(message)


def _warn(message: str) -> None:
    sys.stderr.write(message + "\n")


def _existing_index(db: str) -> Path:
    """The index file of search/info/delete, which must exist: opening a missing one would
    create an empty index and hide a mistyped path."""
    path = Path(db)
    if path.is_dir():
        raise InvalidInputError(f"{db} is a folder, not an index file")
    if not path.exists():
        raise InvalidInputError(
            f"index file {db} does not exist; create it with `{PROG} index {db} PATH...`"
        )
    return path


def _encoder(args: argparse.Namespace) -> Encoder:
    from edge_colbert.encoder import Encoder

    return Encoder(args.model)


def _open_index(
    path: Path,
    encoder: Encoder | None,
    *,
    readonly: bool,
    pool_factor: int | None = None,
    codec: str | None = None,
) -> Index:
    from edge_colbert.index import Index

    return Index(path, encoder=encoder, readonly=readonly, pool_factor=pool_factor, codec=codec)


def display_path(path: str) -> str:
    """A stored absolute path, shown relative to the working folder when under it."""
    try:
        return Path(path).relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path


# ---------------------------------------------------------------------------------------------
# Commands


def _run_index(args: argparse.Namespace) -> int:
    from edge_colbert.files_cli import run_index

    return run_index(args)


def _parse_where(items: Sequence[str]) -> dict[str, Any] | None:
    from edge_colbert.validation import check_unicode

    where: dict[str, Any] = {}
    for item in items:
        check_unicode(item, f"--where {item!r}")  # bytes that are not UTF-8 in argv
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"--where takes KEY=VALUE, got {item!r}")
        value: Any
        if key == "path":
            value = absolute(raw)
        else:
            try:
                value = json.loads(raw)  # numbers, true/false, null; anything else is text
            except json.JSONDecodeError:
                value = raw
        if key in where and where[key] != value:
            # Every --where is required, and one key holds one value: both cannot hold.
            raise InvalidInputError(
                f"--where gives {key!r} twice ({where[key]!r} and {value!r}); every --where "
                "must hold and a key has one value, so nothing could match. Give each key once."
            )
        where[key] = value
    return where or None


# Reciprocal rank fusion's constant for merging several databases' hybrid/keyword lists.
RRF_K = 60


def _check_same_model(paths: Sequence[Path]) -> None:
    """Refuse databases written by different models: their vectors and scores do not mix."""
    first: tuple[Path, str] | None = None
    for path in paths:
        with _open_index(path, None, readonly=True) as index:
            model = str(index.info()["model"])
        if first is None:
            first = (path, model)
        elif model != first[1]:
            raise InvalidInputError(
                f"{first[0]} was written by model {first[1]!r} but {path} by {model!r}; "
                "search together only databases indexed with the same model"
            )


def _merge_hits(lists: Sequence[list[Hit]], k: int, *, mode: str) -> list[tuple[int, Hit]]:
    """The ``k`` best of several databases' hit lists, as (list number, hit).

    Semantic scores are MaxSim sums from one model, comparable across files, so they are
    merged by score. Hybrid scores are normalised per file and BM25 depends on each file's
    statistics, so those are not comparable: they are merged by reciprocal rank fusion
    (1 / (60 + rank in its own list)), ties broken by score.
    """
    tagged = [
        (number, rank, hit)
        for number, hits in enumerate(lists)
        for rank, hit in enumerate(hits, start=1)
    ]
    if mode == "semantic":
        tagged.sort(key=lambda item: -item[2].score)
    else:
        tagged.sort(key=lambda item: (-1.0 / (RRF_K + item[1]), -item[2].score))
    return [(number, hit) for number, _, hit in tagged[:k]]


def _run_search(args: argparse.Namespace) -> int:
    from edge_colbert.highlight import Style, best_passage, mark, match_spans, stored_rows
    from edge_colbert.relevance import hit_is_weak

    paths = [_existing_index(db) for db in args.dbs]
    if not args.query.strip():
        raise InvalidInputError("the query is empty; give some words to search for")
    from edge_colbert.validation import check_unicode

    check_unicode(args.query, "the query (bytes that are not UTF-8 in the command line)")
    where = _parse_where(args.where)
    if len(paths) > 1:
        _check_same_model(paths)
    # Keyword mode reads the full-text index alone: no model is loaded.
    encoder = None if args.mode == "keyword" else _encoder(args)
    query_tokens: int | None = None
    lists: list[list[Hit]] = []
    # Each hit's stored token vectors, read while its index is open: the highlights then
    # encode only the query, not every hit's text again.
    rows: dict[tuple[int, str], npt.NDArray[np.float32] | None] = {}
    if encoder is not None:
        (vectors,) = encoder.encode_queries([args.query])  # once, for every database
        query_tokens = len(vectors)
    for number, path in enumerate(paths):
        with _open_index(path, encoder, readonly=True) as index:
            if encoder is None:
                lists.append(index.search(args.query, args.k, where=where, mode="keyword"))
            else:
                ranked = index.search_vectors(
                    vectors,
                    args.k,
                    where=where,
                    exhaustive=args.exhaustive,
                    query=args.query,
                    mode=args.mode,
                )
                lists.append(ranked)
                for hit, stored in zip(ranked, stored_rows(index, ranked), strict=True):
                    rows[(number, hit.id)] = stored
    merged = (
        _merge_hits(lists, args.k, mode=args.mode)
        if len(lists) > 1
        else [(0, hit) for hit in lists[0]]
    )
    hits = [hit for _, hit in merged]
    sources = [str(paths[number]) if len(paths) > 1 else None for number, _ in merged]
    weak = [hit_is_weak(hit.semantic, query_tokens) for hit in hits]
    spans = match_spans(
        encoder,
        args.query,
        [hit.text for hit in hits],
        doc_vectors=[rows.get((number, hit.id)) for number, hit in merged],
    )
    if args.json:
        results = [
            {
                "rank": rank,
                "id": hit.id,
                **({"db": source} if source is not None else {}),
                "score": round(float(hit.score), 4),
                # BM25 (null: not among the keyword hits) and MaxSim (null: not computed).
                "lexical": None if hit.lexical is None else round(hit.lexical, 4),
                "semantic": None if hit.semantic is None else round(hit.semantic, 4),
                # MaxSim per query vector under the calibrated bar (null: no MaxSim).
                "weak": is_weak,
                "text": hit.text,
                "metadata": hit.metadata,
                "matches": [{"start": a, "end": b, "text": hit.text[a:b]} for a, b in found],
            }
            for rank, (hit, found, source, is_weak) in enumerate(
                zip(hits, spans, sources, weak, strict=True), start=1
            )
        ]
        _out(json.dumps(results, ensure_ascii=False, indent=2))
        return 0
    if not hits:
        _say(args, "no results")
        return 0
    style: Style = "bold" if sys.stdout.isatty() and not os.environ.get("NO_COLOR") else "brackets"
    for rank, (hit, found, source, is_weak) in enumerate(
        zip(hits, spans, sources, weak, strict=True), start=1
    ):
        where_from = hit.metadata.get("path")
        label = display_path(where_from) if isinstance(where_from, str) else hit.id
        suffix = hit_location(hit.metadata)  # path:line, path:page (heading)
        origin = f"{Path(source).name}: " if source is not None else ""
        cue = "  (weak match)" if is_weak else ""
        _out(f"{rank:>2}. {hit.score:7.3f}  {origin}{label}{suffix}{cue}")
        start, end = best_passage(hit.text, found)
        _out(f"    {mark(hit.text, found, start, end, style=style)}")
    if all(flag is True for flag in weak):
        _say(args, "no hit is a good match: every result scored under the weak-match bar")
    return 0


def _human_bytes(size: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _run_info(args: argparse.Namespace) -> int:
    from edge_colbert.sync import stored_files

    path = _existing_index(args.db)
    with _open_index(path, None, readonly=True) as index:
        figures: dict[str, Any] = {"path": str(path), **index.info()}
        figures["files"] = len(stored_files(index))
    if args.json:
        _out(json.dumps(figures, ensure_ascii=False, indent=2, default=str))
        return 0
    width = max(len(key) for key in figures)
    for key, value in figures.items():
        shown = value
        if isinstance(value, int) and not isinstance(value, bool) and "bytes" in key:
            shown = _human_bytes(value) if key.endswith("bytes") and value >= 1000 else value
        elif isinstance(value, float):
            shown = f"{value:.2f}"
        _out(f"{key:<{width}}  {shown}")
    return 0


def _run_delete(args: argparse.Namespace) -> int:
    path = _existing_index(args.db)
    with _open_index(path, None, readonly=False) as index:
        unknown = [doc_id for doc_id in dict.fromkeys(args.ids) if doc_id not in index]
        deleted = index.delete([doc_id for doc_id in dict.fromkeys(args.ids) if doc_id in index])
    for doc_id in unknown:
        _warn(f"not found: {doc_id}")
    _say(args, f"deleted {deleted} of {len(dict.fromkeys(args.ids))} ids")
    return 1 if unknown else 0


def _export_entry() -> Callable[[list[str]], int]:
    """The export step's ``main(argv) -> int`` (``EXPORT_PACKAGE.cli.main``).

    Imported only here, so that the runtime never loads torch. Raises the export package's
    ``ExportDependencyError`` (an ImportError naming what is missing and the install
    command) before anything heavy is imported when the export extra is not installed.
    """
    import importlib

    requirements = importlib.import_module(f"{EXPORT_PACKAGE}.requirements")
    requirements.require_export_dependencies()
    entry = getattr(importlib.import_module(f"{EXPORT_PACKAGE}.cli"), "main", None)
    if not callable(entry):
        raise EdgeColbertError(
            f"the installed {EXPORT_PACKAGE} package has no main(argv) entry point; reinstall "
            "edge-colbert with pip install 'edge-colbert[export]'"
        )

    def run(argv: list[str]) -> int:
        return int(entry(argv) or 0)

    return run


def _export_dependency_hint(error: BaseException) -> str | None:
    """The one-line hint when an import failed for want of the export extra, here or anywhere
    up its cause chain; None for any other import error."""
    import importlib

    requirements = importlib.import_module(f"{EXPORT_PACKAGE}.requirements")
    modules = {requirements.module_name(name) for name in requirements.export_requirements()}
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, requirements.ExportDependencyError):
            return str(seen)
        name = seen.name if isinstance(seen, ModuleNotFoundError) else None
        if name and name.split(".")[0] in modules:
            return str(requirements.export_dependency_message([name.split(".")[0]]))
        seen = seen.__cause__ or seen.__context__
    return None


def _run_export(args: argparse.Namespace) -> int:
    forwarded = [args.checkpoint, args.outdir]
    if args.dim is not None:
        forwarded += ["--dim", args.dim]
    if args.quantize is not None:
        forwarded += ["--quantize", args.quantize]
    if args.quiet:
        forwarded.append("-q")
    forwarded += list(args.extra)
    try:
        return _export_entry()(forwarded)
    except ImportError as error:
        package_missing = isinstance(error, ModuleNotFoundError) and (
            (error.name or "").split(".")[0] == EXPORT_PACKAGE
        )
        hint = None if package_missing else _export_dependency_hint(error)
        if hint is not None:
            _warn(f"{PROG}: {hint}")
            return 2
        if package_missing:
            raise EdgeColbertError(
                f"the export step is not installed ({error}); reinstall edge-colbert: "
                'pip install --force-reinstall "edge-colbert[export]"'
            ) from error
        raise


# ---------------------------------------------------------------------------------------------
# Entry point


def _configure_logging(verbose: int, quiet: bool) -> tuple[logging.Logger, logging.Handler]:
    """Send the package's log records to stderr as one plain line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    package = logging.getLogger("edge_colbert")
    package.addHandler(handler)
    if quiet:
        package.setLevel(logging.ERROR)
    else:
        package.setLevel(
            logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
        )
    return package, handler


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror and error.filename:
        text = f"{error.filename}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Run ``edge-colbert`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and args.command != "export":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as stop:  # --help, --version and usage errors
        return stop.code if isinstance(stop.code, int) else 2
    args.extra = extra
    package, handler = _configure_logging(args.verbose, args.quiet)
    try:
        func: Command = args.func
        return func(args)
    except KeyboardInterrupt:
        _warn(f"{PROG}: interrupted")
        return 130
    except SystemExit as stop:  # the export step's own argument parser
        return stop.code if isinstance(stop.code, int) else 2
    except BrokenPipeError:
        # The reader (`| head`) went away: stop quietly, and keep Python from complaining
        # about the broken stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (EdgeColbertError, OSError, sqlite3.Error) as error:
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        _warn(f"{PROG}: error: {_one_line(error)}")
        return 1
    finally:
        package.removeHandler(handler)
