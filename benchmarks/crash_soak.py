"""Kill the indexer hundreds of times and count what survived: the figures in docs/reliability.md.

The same loop as tests/test_crash.py, longer: a worker adds batches of documents with known
ids (logging each id only after ``add()`` returned), is killed with SIGKILL after a seeded
random delay, and the file is checked with plain sqlite3 (integrity, every acknowledged id
present with its text and vectors, no document without vectors, batches all-or-nothing).
Every third round uses batches that double in size, so kills also land during centroid
retraining. Prints one summary line::

    kills survived / kills tried: 300 / 300, documents lost: 0 (...)

Usage: ``python benchmarks/crash_soak.py [--kills 300] [--seed 0] [--model DIR]``.
Without ``--model`` it builds the tiny test model (tests/tiny_model.py) in a temporary folder.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from crash_worker import (  # noqa: E402
    check_index,
    read_log,
    start_worker,
    worker_context,
)

logger = logging.getLogger("crash_soak")


def soak(model: Path, workdir: Path, kills: int, seed: int, max_delay: float) -> int:
    """Run the kill loop; print the summary and return the number of failed kills."""
    context = worker_context()
    rng = random.Random(seed)
    failed = lost_total = in_add = acknowledged = 0
    versions: set[str] = set()
    started = time.perf_counter()
    # A fresh file every 25 kills, so that runs start small and cross retraining again.
    for kill in range(kills):
        run = kill // 25
        grow = run % 3 == 2
        batch_size = 2 if grow else 4
        db, log = workdir / f"soak{run}.db", workdir / f"soak{run}.log"
        worker = start_worker(context, db, model, log, batch_size=batch_size, grow=grow)
        time.sleep(rng.uniform(0.0, max_delay))
        if worker.exitcode is not None:
            logger.error("kill %d: the worker exited by itself with %s", kill, worker.exitcode)
            failed += 1
            continue
        worker.kill()
        worker.join(10)
        state = read_log(log)
        in_add += state.in_add
        if not db.exists():
            continue
        verdict = check_index(db, state.acknowledged, batch_size=batch_size, grow=grow)
        if verdict.centroid_version is not None:
            versions.add(f"{run}:{verdict.centroid_version}")
        if not verdict.ok:
            failed += 1
            lost_total += len(verdict.lost)
            logger.error("kill %d (%s): %s", kill, db.name, verdict)
    seconds = time.perf_counter() - started
    for log in workdir.glob("soak*.log"):
        acknowledged += len(read_log(log).acknowledged)
    print(
        f"kills survived / kills tried: {kills - failed} / {kills}, documents lost: {lost_total} "
        f"({in_add} kills inside add(), {acknowledged} acknowledged documents checked, "
        f"{len(versions)} centroid versions seen, {seconds:.0f} s)"
    )
    return failed


def main() -> int:
    """Parse arguments, build the tiny model if needed, run the soak."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kills", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=0.4, help="seconds before a kill")
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="crash-soak-") as tmp:
        workdir = Path(tmp)
        model = args.model
        if model is None:
            from tiny_model import build_tiny_model

            model = build_tiny_model(workdir / "tiny-colbert")
        return 1 if soak(model, workdir, args.kills, args.seed, args.max_delay) else 0


if __name__ == "__main__":
    sys.exit(main())
