"""``edge-colbert push``: copy an index into a Qdrant collection (see :mod:`edge_colbert.qdrant`).

Registered through ``COMMAND_MODULES`` in :mod:`edge_colbert.cli`; qdrant-client is imported
only when the command runs, so a missing extra is one line naming the ``pip install``.
"""

from __future__ import annotations

import argparse
import sys
import time

from edge_colbert.cli import _existing_index, _out, _positive_int

__all__ = ["register"]


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], shared: argparse.ArgumentParser
) -> None:
    """Add the ``push`` subcommand to ``commands``."""
    push = commands.add_parser(
        "push",
        parents=[shared],
        help="copy an index into a Qdrant collection (needs the qdrant extra)",
        description="Copy the documents and token vectors of DB into the Qdrant collection "
        "NAME (created if needed, MaxSim multi-vectors). Run it again to send only what "
        "changed: new and replaced documents are sent, deleted ones removed. The index file "
        "is only read. Needs pip install 'edge-colbert[qdrant]'.",
    )
    push.add_argument("db", metavar="DB", help="the index file")
    push.add_argument(
        "--qdrant",
        metavar="URL_OR_PATH",
        required=True,
        help="a server URL (http://host:6333; API key from $QDRANT_API_KEY) or a folder for "
        "Qdrant's local mode",
    )
    push.add_argument("--collection", metavar="NAME", required=True, help="the collection")
    push.add_argument(
        "--vectors",
        choices=["float32", "int8"],
        default="float32",
        help="how Qdrant stores the vectors of a new collection: float32 (exact) or int8 "
        "(scalar quantization, float32 originals on disk); default float32",
    )
    push.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        metavar="N",
        help="points per upsert request (default 64)",
    )
    push.add_argument(
        "--timeout", type=_positive_int, default=None, metavar="S", help="seconds per request"
    )
    push.add_argument(
        "--replace",
        action="store_true",
        help="let DB take the place of the file the collection was pushed from (a copy or "
        "restored backup: only differences are sent; another file: its points are deleted)",
    )
    push.set_defaults(func=_run_push)


def _run_push(args: argparse.Namespace) -> int:
    from edge_colbert.qdrant import open_client, push

    path = _existing_index(args.db)
    client = open_client(args.qdrant, timeout=args.timeout)
    began = time.perf_counter()
    try:

        def progress(done: int, total: int) -> None:
            if not args.quiet and sys.stderr.isatty():
                sys.stderr.write(f"\r{done} of {total} documents pushed or unchanged")
                sys.stderr.flush()

        report = push(
            path,
            client,
            args.collection,
            batch_size=args.batch_size,
            vectors=args.vectors,
            replace=args.replace,
            progress=progress,
        )
    finally:
        client.close()
    if not args.quiet and sys.stderr.isatty():
        sys.stderr.write("\n")
    if not args.quiet:
        _out(
            f"{report.upserted} sent, {report.unchanged} unchanged, {report.deleted} deleted "
            f"in {args.collection!r} in {time.perf_counter() - began:.1f} s"
        )
    return 0
