"""``edge-colbert export CHECKPOINT OUTDIR [options]`` (also ``python -m edge_colbert_export``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from edge_colbert.errors import EdgeColbertError


def _dim(value: str) -> int | str:
    """``--dim``: a positive integer or ``native``."""
    if value == "native":
        return value
    try:
        number = int(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"--dim takes a number or 'native', not {value!r}"
        ) from error
    if number < 1:
        raise argparse.ArgumentTypeError(f"--dim must be positive, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The export command's arguments."""
    p = argparse.ArgumentParser(
        prog="edge-colbert export",
        description="Turn a ColBERT checkpoint (folder or hub id) into a verified model folder.",
    )
    p.add_argument("checkpoint")
    p.add_argument("outdir")
    p.add_argument("--dim", type=_dim, default=64, help="output width, or 'native' (default 64)")
    p.add_argument("--quantize", choices=["int8", "fp16", "none"], default="int8")
    p.add_argument("--target", choices=["cpu", "npu"], default=None)
    p.add_argument("--fp16-variant", action="store_true", help="also write model.fp16.onnx")
    p.add_argument("--calibration", help="text file of passages for fitting the projection")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--name", help="model name in the manifest (default: OUTDIR's name)")
    p.add_argument("--query-marker", help="marker token or text for queries, or 'none'")
    p.add_argument("--document-marker", help="marker token or text for documents, or 'none'")
    p.add_argument("--query-maxlen", type=int)
    p.add_argument("--doc-maxlen", type=int)
    p.add_argument("--no-query-expansion", action="store_true")
    p.add_argument("--query-expansion", action="store_true")
    p.add_argument("--attend-to-expansion-tokens", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--source-id", help="checkpoint id to record in the manifest (default: CHECKPOINT)"
    )
    p.add_argument("--source-revision", default="", help="revision to record in the manifest")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the export; one-line error and exit status 1 on any failure a user can cause."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    # onnxruntime.quantization logs every tensor at INFO on the root logger.
    logging.getLogger().setLevel(logging.WARNING)
    level = logging.WARNING if args.quiet else logging.INFO
    logging.getLogger("edge_colbert_export").setLevel(level)
    expansion = True if args.query_expansion else False if args.no_query_expansion else None
    overrides = {
        "query_prefix": "" if args.query_marker == "none" else args.query_marker,
        "document_prefix": "" if args.document_marker == "none" else args.document_marker,
        "query_length": args.query_maxlen,
        "document_length": args.doc_maxlen,
        "do_query_expansion": expansion,
        "attend_to_expansion_tokens": True if args.attend_to_expansion_tokens else None,
    }
    from .requirements import ExportDependencyError, require_export_dependencies

    try:
        require_export_dependencies()
    except ExportDependencyError as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201 - the CLI speaks on stderr
        return 2
    from .pipeline import export_model

    try:
        out = export_model(
            args.checkpoint, args.outdir, dim=args.dim, quantize=args.quantize,
            target=args.target, calibration=args.calibration,
            trust_remote_code=args.trust_remote_code, name=args.name,
            fp16_variant=args.fp16_variant, overrides=overrides, overwrite=args.overwrite,
            seed=args.seed, source_id=args.source_id, source_revision=args.source_revision,
        )  # fmt: skip
    except EdgeColbertError as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201 - the CLI speaks on stderr
        return 1
    print(out)  # noqa: T201 - the CLI prints the folder it wrote
    return 0
