"""The ``check``, ``repair``, ``backup`` and ``compact`` commands (see
:mod:`edge_colbert.maintenance` and :mod:`edge_colbert.compact`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from edge_colbert.cli import PROG, _existing_index, _out
from edge_colbert.codec import CODECS

__all__ = ["register"]


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], shared: argparse.ArgumentParser
) -> None:
    """Add the ``check``, ``repair``, ``backup`` and ``compact`` subcommands to ``commands``."""
    _add_db_command(
        commands,
        shared,
        "check",
        func=_check,
        help="check an index file from end to end (changes nothing)",
        description="Check DB: its schema (no triggers, views or foreign tables), SQLite's "
        "integrity check, the full-text index, every document row, every vector blob's "
        "length and checksum, orphan rows and the centroids. Prints one line per check; "
        "exit status 0 when all pass, 1 when something is damaged.",
    )

    _add_db_command(
        commands,
        shared,
        "repair",
        func=_repair,
        help="salvage a damaged index into a repaired file, swapped in atomically",
        description="Copy every intact document of DB into a new file (documents whose row "
        "or vectors are damaged are dropped and listed: add them again), rebuild the "
        "full-text index and the counts, retrain the centroids, compact, check, then swap "
        "it in with one rename. The old file is kept as DB.before-repair. Killed at any "
        "point, DB is the old file or the repaired one. Close other programs using DB first.",
    )

    backup = _add_db_command(
        commands,
        shared,
        "backup",
        func=_backup,
        help="copy an index into one self-contained file, safe to copy or sync",
        description="Write a consistent snapshot of DB to OUT with SQLite's online backup "
        "(writers may go on meanwhile). OUT is one file with no -wal beside it. Copying only "
        "DB itself is not safe: recent commits may still sit in DB-wal.",
    )
    backup.add_argument("out", metavar="OUT", help="the backup file to write (must not exist)")

    compact = _add_db_command(
        commands,
        shared,
        "compact",
        func=_compact,
        help="rewrite an index with another codec or pool factor, swapped in atomically",
        description="Copy DB into a new file with --codec and --pool-factor (default: the "
        "file's own), retrain the centroids (which codes every document), pack it, check it, "
        "then swap it in with one rename; prints the size before and after. Killed at any "
        "point, DB is the old file or the new one. Writers wait while it copies; close other "
        "programs using DB first. Needs free space for a second copy.",
    )
    compact.add_argument(
        "--codec",
        choices=CODECS,
        help="how token vectors are stored: int8 (64 bytes a token at 64-d), residual4 "
        "(34), residual2 (18)",
    )
    compact.add_argument(
        "--pool-factor",
        type=int,
        metavar="N",
        help="pool each document's tokens by N (a multiple of the file's pool factor)",
    )


def _add_db_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    shared: argparse.ArgumentParser,
    name: str,
    *,
    func: Callable[[argparse.Namespace], int],
    help: str,
    description: str,
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` whose first argument is the index file DB; return its parser.

    Every maintenance command takes DB first and runs ``func`` on the parsed arguments; the
    caller adds any further arguments to the returned parser.
    """
    parser = commands.add_parser(name, parents=[shared], help=help, description=description)
    parser.add_argument("db", metavar="DB", help="the index file")
    parser.set_defaults(func=func)
    return parser


def _check(args: argparse.Namespace) -> int:
    from edge_colbert.maintenance import check_index

    report = check_index(_existing_index(args.db))
    for passed in report.passed:
        _out(f"ok    {passed}")
    for problem in report.problems:
        _out(f"FAIL  {problem}")
    if report.ok:
        _out(f"{args.db}: all {len(report.passed)} checks passed")
        return 0
    _out(
        f"{args.db}: {len(report.problems)} problem(s); keep a copy "
        f"(`{PROG} backup {args.db} COPY`), then run `{PROG} repair {args.db}`"
    )
    return 1


def _repair(args: argparse.Namespace) -> int:
    from edge_colbert.maintenance import repair_index

    report = repair_index(_existing_index(args.db))
    for name, why in report.dropped:
        _out(f"dropped {name}: {why}")
    for note in report.notes:
        _out(f"note: {note}")
    trained = "centroids retrained" if report.retrained else "no centroids trained"
    kept = f"the damaged original is {report.previous}" if report.previous else ""
    _out(
        f"{args.db}: repaired; kept {report.kept} documents, dropped {len(report.dropped)}; "
        f"{trained}. {kept}".rstrip()
    )
    return 0


def _backup(args: argparse.Namespace) -> int:
    from edge_colbert.maintenance import backup_index

    out = backup_index(_existing_index(args.db), args.out)
    _out(f"{args.db}: backed up to {out} ({out.stat().st_size:,} bytes, one file)")
    return 0


def _compact(args: argparse.Namespace) -> int:
    from edge_colbert.compact import compact_index

    report = compact_index(_existing_index(args.db), codec=args.codec, pool_factor=args.pool_factor)
    mb = 1 << 20
    share = report.bytes_after / max(report.bytes_before, 1)
    _out(
        f"{args.db}: compacted {report.documents} documents: {report.codec_before} pooled by "
        f"{report.pool_factor_before} -> {report.codec_after} pooled by "
        f"{report.pool_factor_after}; {report.bytes_before / mb:.1f} MiB -> "
        f"{report.bytes_after / mb:.1f} MiB ({share:.0%}); "
        f"{report.tokens_before:,} -> {report.tokens_after:,} stored tokens"
    )
    return 0
