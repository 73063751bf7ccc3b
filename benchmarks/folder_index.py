"""Indexing a real folder: `edge-colbert index`'s path (sync_files) against `Index.add` on
the very same chunk texts, side by side in one run, plus re-runs, watch latency, memory.

The folder is Python's own documentation as Debian ships it (``apt-get install
python3-doc``: HTML under /usr/share/doc/python3*/html, written by the CPython authors, not
by anyone here), a subset of ``--html`` pages taken evenly through the sorted list, plus
``--pdfs`` PDFs and ``--docx`` Word files generated from the reST sources of other pages of
that documentation (PSF licence; generated in the work folder, never copied into the repo).

Phases, each in a fresh subprocess (own peak memory):
  add      Index.add on the chunk texts the folder phase stored (read back from its index),
           in one call (the API batches 1,024 texts per encoder call): the reference.
  folder   sync_files over the folder into a fresh index (what `edge-colbert index` runs).
  rerun    the same folder again unchanged, then with 5 files edited (a paragraph added).
  watch    watch_folders on the folder; seconds from a file's save to its new chunk stored.
  many     5,000 small text files indexed with the tiny test model (the unchanged re-run
           reads no file and encodes nothing, so the model does not matter), then re-run.

    nice -n 10 python benchmarks/folder_index.py [--html 40 --pdfs 8 --docx 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `edge_colbert` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common

logger = logging.getLogger("folder_index")

DOCS_GLOB = "/usr/share/doc/python3*/html"  # where Debian puts it
EDITED = 5


def _docs_root() -> Path:
    for root in sorted(Path("/usr/share/doc").glob("python3*/html")):
        if (root / "glossary.html").exists() and (root / "_sources").is_dir():
            return root.resolve()
    raise SystemExit(
        f"no Python documentation under {DOCS_GLOB}; install it: apt-get install -y python3-doc"
    )


def prepare(work: Path, html: int, pdfs: int, docx_files: int) -> Path:
    """The benchmark folder: a spread of HTML pages and generated PDF and DOCX files."""
    sys.path.insert(0, str(common.REPO_ROOT / "tests"))
    from file_fixtures import write_pdf  # type: ignore[import-not-found, unused-ignore]

    root = _docs_root()
    folder = work / "folder"
    if folder.exists():
        shutil.rmtree(folder)
    pages = sorted(p for p in root.rglob("*.html") if "_sources" not in p.parts)
    step = max(1, len(pages) // html)
    for page in pages[::step][:html]:
        target = folder / "html" / page.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(page, target)
    sources = sorted((root / "_sources").rglob("*.rst.txt"))
    step = max(1, len(sources) // (pdfs + docx_files + 1))
    chosen = sources[step // 2 :: step][: pdfs + docx_files]
    (folder / "generated").mkdir(parents=True, exist_ok=True)
    for n, source in enumerate(chosen):
        text = source.read_text(encoding="utf-8", errors="replace")[:12_000]
        paragraphs = [p.strip().replace("\n", " ") for p in text.split("\n\n") if p.strip()]
        name = source.name.removesuffix(".rst.txt")
        if n < pdfs:
            lines = [p[i : i + 90] for p in paragraphs for i in range(0, len(p), 90)]
            pages_text = [lines[i : i + 45] for i in range(0, len(lines), 45)]
            latin = [
                [line.encode("latin-1", "replace").decode("latin-1") for line in page]
                for page in pages_text
            ]
            write_pdf(folder / "generated" / f"{name}.pdf", latin)
        else:
            import docx

            document = docx.Document()
            for paragraph in paragraphs:
                document.add_paragraph(paragraph)
            document.save(str(folder / "generated" / f"{name}.docx"))
    return folder


def _encoder(threads: int, batch: int | None) -> Any:
    """The bundled model, ``batch`` texts per forward pass (None: the Encoder's default)."""
    from edge_colbert.encoder import Encoder

    return Encoder(threads=threads) if batch is None else Encoder(threads=threads, batch_size=batch)


def phase_folder(args: argparse.Namespace) -> dict[str, Any]:
    from edge_colbert.index import Index
    from edge_colbert.sync import stored_files, sync_files

    encoder = _encoder(args.threads, args.folder_batch)
    db = Path(args.work) / "folder.db"
    db.unlink(missing_ok=True)
    meter = common.PeakMeter()
    meter.start()
    watch = common.Stopwatch()
    with Index(db, encoder=encoder) as index:
        report = sync_files(index, encoder, [Path(args.work) / "folder"])
        wall, cpu = watch.stop()
        texts = []
        for stored in stored_files(index).values():
            for doc_id in stored.chunks:
                hit = index.get(doc_id)
                if hit is not None:
                    texts.append(hit.text)
    (Path(args.work) / "texts.json").write_text(json.dumps(texts))
    return {
        "files": report.indexed,
        "skipped": report.skipped,
        "chunks": report.chunks,
        "tokens": report.tokens,
        "wall_s": wall,
        "cpu_s": cpu,
        "memory": meter.report(),
        "index_bytes": common.file_bytes(db),
    }


def phase_add(args: argparse.Namespace) -> dict[str, Any]:
    from edge_colbert.index import Index

    texts = json.loads((Path(args.work) / "texts.json").read_text())
    encoder = _encoder(args.threads, None)
    tokens = sum(encoder.count_document_tokens(texts))
    db = Path(args.work) / "add.db"
    db.unlink(missing_ok=True)
    meter = common.PeakMeter()
    meter.start()
    watch = common.Stopwatch()
    with Index(db, encoder=encoder) as index:
        index.add(texts, ids=[str(n) for n in range(len(texts))])
    wall, cpu = watch.stop()
    return {
        "docs": len(texts),
        "tokens": tokens,
        "wall_s": wall,
        "cpu_s": cpu,
        "memory": meter.report(),
        "index_bytes": common.file_bytes(db),
    }


def phase_rerun(args: argparse.Namespace) -> dict[str, Any]:
    from edge_colbert.index import Index
    from edge_colbert.sync import sync_files

    encoder = _encoder(args.threads, None)
    folder = Path(args.work) / "folder"
    with Index(Path(args.work) / "folder.db", encoder=encoder) as index:
        watch = common.Stopwatch()
        unchanged = sync_files(index, encoder, [folder])
        unchanged_wall, _ = watch.stop()
        pages = sorted((folder / "html").rglob("*.html"))[:: max(1, args.html // EDITED)][:EDITED]
        for page in pages:
            markup = page.read_text(encoding="utf-8")
            added = "<p>An added paragraph about benchmark edits and their cost.</p>"
            page.write_text(markup.replace("</h1>", "</h1>" + added, 1), encoding="utf-8")
        watch = common.Stopwatch()
        edited = sync_files(index, encoder, [folder])
        edited_wall, edited_cpu = watch.stop()
    return {
        "unchanged_files": unchanged.unchanged,
        "unchanged_s": unchanged_wall,
        "edited_files": edited.indexed,
        "edited_chunks": edited.chunks,
        "edited_reused": edited.reused,
        "edited_s": edited_wall,
        "edited_cpu_s": edited_cpu,
    }


def phase_watch(args: argparse.Namespace) -> dict[str, Any]:
    from edge_colbert.index import Index
    from edge_colbert.sync import stored_files
    from edge_colbert.watch import watch_folders

    encoder = _encoder(args.threads, None)
    folder = Path(args.work) / "folder"
    db = Path(args.work) / "folder.db"
    stop = threading.Event()
    ready = threading.Event()

    def loop() -> None:
        with Index(db, encoder=encoder) as index:
            watch_folders(
                index,
                encoder,
                [folder],
                stop_event=stop,
                debounce_ms=200,
                on_batch=lambda report, first: ready.set() if first else None,
            )

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    ready.wait(120)
    time.sleep(1.0)
    latencies = []
    for n in range(3):
        note = folder / f"watch-note-{n}.md"
        began = time.perf_counter()
        note.write_text(f"A note saved while watching, number {n}, about lighthouses.\n")
        key = str(note)
        while time.perf_counter() - began < 60:
            with Index(db, readonly=True) as reader:
                if key in stored_files(reader):
                    break
            time.sleep(0.05)
        latencies.append(time.perf_counter() - began)
    stop.set()
    thread.join(30)
    return {"latency_s": latencies}


def phase_many(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(common.REPO_ROOT / "tests"))
    from tiny_model import build_tiny_model  # type: ignore[import-not-found, unused-ignore]

    from edge_colbert.encoder import Encoder
    from edge_colbert.index import Index
    from edge_colbert.sync import sync_files

    work = Path(args.work)
    model = build_tiny_model(work / "tiny-model")
    encoder = Encoder(model)
    folder = work / "many"
    if folder.exists():
        shutil.rmtree(folder)
    for n in range(args.many):
        sub = folder / f"d{n // 100:03}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"note{n:05}.md").write_text(f"Note {n}: the river and the mill.\n")
    db = work / "many.db"
    db.unlink(missing_ok=True)
    with Index(db, encoder=encoder) as index:
        first = sync_files(index, encoder, [folder])
    with Index(db, encoder=encoder) as index:
        watch = common.Stopwatch()
        again = sync_files(index, encoder, [folder])
        wall, cpu = watch.stop()
    return {
        "files": first.indexed,
        "unchanged": again.unchanged,
        "rerun_s": wall,
        "rerun_cpu_s": cpu,
    }


PHASES = {
    "folder": phase_folder,
    "add": phase_add,
    "rerun": phase_rerun,
    "watch": phase_watch,
    "many": phase_many,
}


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    folder, add = results["folder"], results["add"]
    fold_rate = folder["chunks"] / folder["cpu_s"]
    add_rate = add["docs"] / add["cpu_s"]
    mib = 1024 * 1024
    fold_mem, add_mem = folder["memory"], add["memory"]
    lines = [
        f"Folder: {args.html} Python-docs HTML pages + {args.pdfs} PDFs + {args.docx} DOCX "
        f"({folder['files']} files indexed, {folder['skipped']} skipped), bundled model, "
        f"{args.threads} encoder threads, folder encoder batch "
        f"{args.folder_batch or 'default'}, one run, phases side by side.",
        "",
        "| | folder path (`sync_files`) | `Index.add`, same texts |",
        "|---|---|---|",
        f"| chunks (docs) | {folder['chunks']} | {add['docs']} |",
        f"| tokens per chunk | {folder['tokens'] / max(folder['chunks'], 1):.0f} | "
        f"{add['tokens'] / max(add['docs'], 1):.0f} |",
        f"| CPU s | {folder['cpu_s']:.1f} | {add['cpu_s']:.1f} |",
        f"| chunks per CPU-second | **{fold_rate:.1f}** | **{add_rate:.1f}** |",
        f"| files per CPU-second | {folder['files'] / folder['cpu_s']:.2f} | - |",
        f"| wall s | {folder['wall_s']:.1f} | {add['wall_s']:.1f} |",
        f"| peak RSS above start | {folder['memory']['above_base'] / mib:.0f} MiB | "
        f"{add['memory']['above_base'] / mib:.0f} MiB |",
        f"| peak RSS | {fold_mem['peak'] / mib:.0f} MiB | {add_mem['peak'] / mib:.0f} MiB |",
        f"| index size | {folder['index_bytes'] / 1e6:.1f} MB | "
        f"{add['index_bytes'] / 1e6:.1f} MB |",
        "",
        f"Folder path / API, chunks per CPU-second: **{fold_rate / add_rate:.2f}**.",
    ]
    if "rerun" in results:
        rerun = results["rerun"]
        lines += [
            f"Unchanged re-run of {rerun['unchanged_files']} files: "
            f"{rerun['unchanged_s']:.2f} s. {EDITED} files edited: {rerun['edited_files']} "
            f"re-indexed in {rerun['edited_s']:.1f} s, {rerun['edited_chunks']} chunks "
            f"encoded, {rerun['edited_reused']} kept.",
        ]
    if "many" in results:
        many = results["many"]
        lines.append(
            f"Unchanged re-run of {many['unchanged']} small files (tiny model): "
            f"{many['rerun_s']:.2f} s wall, {many['rerun_cpu_s']:.2f} CPU s."
        )
    if "watch" in results:
        lat = results["watch"]["latency_s"]
        lines.append("Watch, save to stored: " + ", ".join(f"{x:.2f} s" for x in lat) + ".")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--html", type=int, default=40, help="HTML pages of the docs (default 40)")
    p.add_argument("--pdfs", type=int, default=6, help="generated PDFs (default 6)")
    p.add_argument("--docx", type=int, default=6, help="generated DOCX files (default 6)")
    p.add_argument("--many", type=int, default=5000, help="small files for the re-run test")
    p.add_argument("--threads", type=int, default=common.available_cores())
    p.add_argument(
        "--folder-batch",
        type=int,
        default=None,
        help="encoder batch of the folder phase only (default: the Encoder's, as the CLI)",
    )
    p.add_argument("--work", type=Path, default=None, help="work folder (default: a temp dir)")
    p.add_argument("--skip", nargs="*", default=[], choices=sorted(PHASES), help="phases to skip")
    p.add_argument("--out", type=Path, default=None, help="also write the report here")
    p.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every phase in its own subprocess and print the report."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    common.pin_threads(args.threads)
    if args.phase:
        result = PHASES[args.phase](args)
        args.result.write_text(json.dumps(result))
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="folder-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    prepare(work, args.html, args.pdfs, args.docx)
    forwarded = [
        *("--work", str(work), "--threads", str(args.threads), "--html", str(args.html)),
        *("--many", str(args.many)),
        *(("--folder-batch", str(args.folder_batch)) if args.folder_batch else ()),
    ]
    script = Path(__file__).resolve()
    results: dict[str, dict[str, Any]] = {}
    for phase in ("folder", "add", "rerun", "watch", "many"):
        if phase in args.skip:
            continue
        results[phase] = common.run_phase(script, phase, forwarded, work / "logs")
        logger.info("%s: %s", phase, json.dumps(results[phase]))
    text = report(results, args)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
